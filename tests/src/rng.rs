//! A tiny seeded generator (xorshift64) for the tests' shuffles and duplications, so that a
//! seed replays the same case.

pub struct Rng(pub u64);

impl Rng {
    /// Uniform enough in `0..bound` (`bound > 0`).
    pub fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

//! The unread count of a chat after a run of `chats.update` deltas, folded into one function.

/// The unread count after a run of `chats.update` deltas, as a function of the stored count
/// `x` (NULL read as 0): `reset ? add : max(x + add, floor)`. A positive delta adds, 0 resets
/// to 0 and a negative one ("mark unread") raises the count to at least 1; functions of this
/// shape compose, so any run of deltas is one such function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadDelta {
    pub add: i32,
    pub reset: bool,
    pub floor: Option<i32>,
}

impl UnreadDelta {
    pub const IDENTITY: UnreadDelta = UnreadDelta {
        add: 0,
        reset: false,
        floor: None,
    };

    /// An absolute count (an upsert's), kept in `add`.
    pub(super) fn absolute(n: i32) -> Self {
        UnreadDelta {
            add: n,
            ..Self::IDENTITY
        }
    }

    /// This function followed by the delta `d`.
    pub fn then(self, d: i32) -> Self {
        match d {
            0 => UnreadDelta {
                add: 0,
                reset: true,
                floor: None,
            },
            d if d > 0 => UnreadDelta {
                add: self.add.saturating_add(d),
                reset: self.reset,
                floor: self.floor.map(|f| f.saturating_add(d)),
            },
            _ if self.reset => UnreadDelta {
                add: self.add.max(1),
                ..self
            },
            _ => UnreadDelta {
                floor: Some(self.floor.map_or(1, |f| f.max(1))),
                ..self
            },
        }
    }

    /// The count this function gives for a stored count `x`.
    pub fn apply(self, x: Option<i32>) -> i32 {
        if self.reset {
            self.add
        } else {
            let y = x.unwrap_or(0).saturating_add(self.add);
            self.floor.map_or(y, |f| y.max(f))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UnreadDelta;

    /// One `chats.update` delta applied to a stored count, as the statement applies it alone
    /// (saturating at `i32::MAX`).
    fn step(x: Option<i32>, d: i32) -> i32 {
        let x = x.unwrap_or(0);
        match d {
            d if d > 0 => x.saturating_add(d),
            0 => 0,
            _ => x.max(1),
        }
    }

    #[test]
    fn any_run_of_deltas_composes_into_one() {
        let deltas = [-1, 0, 1, 2, 5, i32::MAX];
        // Every run of up to 4 deltas, from every stored count.
        let mut runs: Vec<Vec<i32>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<i32>> = runs
                .iter()
                .filter(|r| r.len() == runs.last().map_or(0, Vec::len))
                .flat_map(|r| {
                    deltas.iter().map(move |d| {
                        let mut r = r.clone();
                        r.push(*d);
                        r
                    })
                })
                .collect();
            runs.extend(longer);
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let folded = run.iter().fold(UnreadDelta::IDENTITY, |f, &d| f.then(d));
            for stored in [None, Some(0), Some(1), Some(3), Some(i32::MAX - 1)] {
                let sequential = run.iter().fold(stored, |x, &d| Some(step(x, d)));
                assert_eq!(
                    Some(folded.apply(stored)),
                    sequential,
                    "{run:?} on {stored:?}"
                );
            }
        }
    }
}

//! The one polling loop: every "wait until" of the tests and the benchmarks goes through it.

use std::future::Future;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(50);

/// Calls `look` every 50 ms until it finds something (`Ok(Some(value))`), fails (its error,
/// at once), or `within` has passed since the first call (`Ok(None)`).
pub async fn poll<T, E, F, Fut>(within: Duration, mut look: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = look().await? {
            return Ok(Some(found));
        }
        if start.elapsed() >= within {
            return Ok(None);
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_gives_up_and_fails() {
        let mut n = 0;
        let found = poll(Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { Ok::<_, ()>((n == 3).then_some(n)) }
        })
        .await;
        assert_eq!(found, Ok(Some(3)));
        let never = poll(Duration::from_millis(120), || async {
            Ok::<Option<()>, ()>(None)
        });
        assert_eq!(never.await, Ok(None));
        let failed = poll(Duration::from_secs(5), || async {
            Err::<Option<()>, _>("gone")
        });
        assert_eq!(failed.await, Err("gone"));
    }
}

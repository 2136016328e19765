//! Exponential backoff with jitter, the one the whole workspace uses: consumers reconnecting to
//! Redis, the status feed resubscribing, payment retrying a charge.

use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Delays that double from `base` up to `max`, each drawn between half and all of its step
/// ("equal jitter"), so many clients failing together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Default for Backoff {
    /// For reconnect loops: 100 ms doubling to 5 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The next delay: step `base × 2^failures` (at most `max`), jittered in `[step/2, step]`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .base
            .saturating_mul(1 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Sleeps for the next delay, or less if `shutdown` fires.
    pub async fn wait(&mut self, shutdown: &CancellationToken) {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_are_capped() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(
            (50..=100).contains(&(first.as_millis() as u64)),
            "{first:?}"
        );
        for _ in 0..20 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(late <= Duration::from_secs(5) && late >= Duration::from_millis(2_500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));

        let mut charge = Backoff::new(Duration::from_millis(200), Duration::from_secs(60));
        for (step, range) in [(0, 100..=200), (1, 200..=400), (2, 400..=800)] {
            let d = charge.next_delay().as_millis() as u64;
            assert!(range.contains(&d), "step {step}: {d}");
        }
    }
}

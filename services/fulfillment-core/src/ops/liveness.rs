//! Liveness as progress: what `/healthz` asks before it answers 200.
//!
//! A process that answers HTTP is not alive if its readers are stuck: a stream reader waiting on a
//! connection whose peer vanished would keep a dead pod in service forever. So each loop that must
//! keep turning (a partition reader, the retry loop, the live feed's subscription) holds a
//! [`Progress`] and marks it every time round; `/healthz` fails while any of them has not been
//! marked within its own bound. Every wait in those loops has a deadline, so a healthy loop always
//! comes round well within its bound, in a Redis outage too (then it comes round to reconnect, and
//! `/readyz` is the probe that says Redis is gone). Only a loop that cannot heal itself goes
//! unmarked, and a restart is the cure for that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The loops of one process that must keep turning.
#[derive(Debug, Default)]
pub struct Liveness {
    loops: Mutex<Vec<Weak<Progress>>>,
}

/// One loop's last turn. Dropped with its loop, which then no longer counts.
#[derive(Debug)]
pub struct Progress {
    name: String,
    bound: Duration,
    started: Instant,
    /// Milliseconds from `started` to the last mark.
    last: AtomicU64,
}

/// A loop that has not come round within its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub name: String,
    pub for_ms: u64,
    pub bound_ms: u64,
}

impl Progress {
    /// The loop came round.
    pub fn mark(&self) {
        self.last
            .store(millis(self.started.elapsed()), Ordering::Relaxed);
    }

    fn stuck(&self) -> Option<Stuck> {
        let now = millis(self.started.elapsed());
        let since = now.saturating_sub(self.last.load(Ordering::Relaxed));
        let bound_ms = millis(self.bound);
        (since > bound_ms).then(|| Stuck {
            name: self.name.clone(),
            for_ms: since,
            bound_ms,
        })
    }
}

impl Liveness {
    /// A loop named `name` (for the probe's answer) that must come round at least every `bound`;
    /// marked now.
    pub fn register(&self, name: impl Into<String>, bound: Duration) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            name: name.into(),
            bound,
            started: Instant::now(),
            last: AtomicU64::new(0),
        });
        let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
        loops.retain(|p| p.strong_count() > 0);
        loops.push(Arc::downgrade(&progress));
        progress
    }

    /// Every registered loop that has not come round within its bound.
    pub fn stuck(&self) -> Vec<Stuck> {
        let loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
        loops
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|p| p.stuck())
            .collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_stuck_only_past_its_bound_and_not_once_dropped() {
        let liveness = Liveness::default();
        let quick = liveness.register("quick", Duration::from_millis(20));
        let patient = liveness.register("patient", Duration::from_secs(60));
        assert!(liveness.stuck().is_empty());
        std::thread::sleep(Duration::from_millis(40));
        let stuck = liveness.stuck();
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert_eq!(stuck[0].name, "quick");
        assert!(stuck[0].for_ms >= 40);
        quick.mark();
        assert!(liveness.stuck().is_empty());
        std::thread::sleep(Duration::from_millis(40));
        drop(quick);
        assert!(
            liveness.stuck().is_empty(),
            "a dropped loop no longer counts"
        );
        drop(patient);
    }
}

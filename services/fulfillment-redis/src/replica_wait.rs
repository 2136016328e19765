//! `REDIS_WAIT_REPLICAS`: a write that a client or another step relies on is on that many
//! replicas before it is relied on, so a master's failover cannot lose it.
//!
//! `WAIT` counts the replicas that have everything the *calling connection* wrote. Issued on the
//! shared connection it would hold up every command queued behind it, so each slot (named by the
//! caller's marker key, one per hash slot it writes to) has a waiter with a connection of its own that
//! commits in groups: it takes every request waiting, writes a marker in the slot (so its own
//! offset is past every write that finished before), sends `WAIT` and answers them all. One round
//! trip to the replicas serves every write of that moment. A request is answered with an error
//! when fewer replicas acknowledged within `REDIS_WAIT_TIMEOUT_MS`; the waiter's connection is
//! opened afresh after an error, so a wait never outlives the master it started on for long.
//!
//! A wait follows a write that happened, so every error it returns says "not confirmed", never
//! "nothing written": whatever went wrong (too few replicas, an error reply such as `NOPERM` or
//! `READONLY` to the marker or `WAIT`, a refused reconnect) comes back as one kind
//! ([`not_replicated`]: `ErrorKind::Io`, no server code, no I/O error), so a caller that treats a
//! refusal or an error reply as "never reached Redis" cannot mistake it for one.

use crate::connection::{Conn, Redis};
use redis::{ErrorKind, RedisError, RedisResult};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What one request waits for: its answer.
type Waiting = oneshot::Sender<RedisResult<()>>;

/// The waiters of one process, by marker key.
pub struct ReplicaWait {
    replicas: u32,
    timeout: Duration,
    waiters: Mutex<HashMap<String, mpsc::UnboundedSender<Waiting>>>,
}

impl ReplicaWait {
    pub fn new(replicas: u32, timeout: Duration) -> Self {
        Self {
            replicas,
            timeout,
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until this process's writes so far to the slot of `marker` (a key of its own there,
    /// which the waiter overwrites) are on enough replicas.
    pub async fn wait(&self, redis: &Redis, marker: &str) -> RedisResult<()> {
        let (answer, answered) = oneshot::channel();
        self.waiter(redis, marker)
            .send(answer)
            .map_err(|_| not_replicated("the replica waiter stopped".into()))?;
        answered
            .await
            .map_err(|_| not_replicated("the replica waiter stopped".into()))?
    }

    /// The waiter of `marker`'s slot, started on first use.
    fn waiter(&self, redis: &Redis, marker: &str) -> mpsc::UnboundedSender<Waiting> {
        let mut waiters = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = waiters.get(marker)
            && !sender.is_closed()
        {
            return sender.clone();
        }
        let (sender, requests) = mpsc::unbounded_channel();
        tokio::spawn(run_waiter(
            redis.clone(),
            marker.to_owned(),
            self.replicas,
            self.timeout,
            requests,
        ));
        waiters.insert(marker.to_owned(), sender.clone());
        sender
    }
}

/// Answers the requests of one key space, a group per round, until the process ends.
async fn run_waiter(
    redis: Redis,
    marker: String,
    replicas: u32,
    timeout: Duration,
    mut requests: mpsc::UnboundedReceiver<Waiting>,
) {
    let mut conn: Option<Conn> = None;
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while let Ok(more) = requests.try_recv() {
            group.push(more);
        }
        let outcome = match round(&redis, &mut conn, &marker, replicas, timeout).await {
            Ok(acked) if acked >= i64::from(replicas) => Ok(()),
            Ok(acked) => Err(not_replicated(format!(
                "written, but on {acked} of {replicas} replicas after {} ms (REDIS_WAIT_REPLICAS)",
                timeout.as_millis()
            ))),
            Err(e) => Err(unconfirmed(&e)),
        };
        if outcome.is_err() {
            conn = None;
        }
        for waiting in group {
            let _ = waiting.send(outcome.clone());
        }
    }
}

/// One group commit: a marker write in the slot, then `WAIT` on the same connection; how many
/// replicas acknowledged.
async fn round(
    redis: &Redis,
    conn: &mut Option<Conn>,
    marker: &str,
    replicas: u32,
    timeout: Duration,
) -> RedisResult<i64> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(redis.dedicated(timeout + Duration::from_secs(1)).await?),
    };
    // One pipeline, routed by the marker's slot on a cluster (WAIT names no key).
    let (acked,): (i64,) = redis::pipe()
        .cmd("INCR")
        .arg(marker)
        .ignore()
        .cmd("WAIT")
        .arg(replicas)
        .arg(timeout.as_millis() as u64)
        .query_async(conn)
        .await?;
    Ok(acked)
}

/// The one error a wait returns: the write before it happened, its replication is unconfirmed.
fn not_replicated(detail: String) -> RedisError {
    RedisError::from((ErrorKind::Io, "not acknowledged by replicas", detail))
}

/// `error` of the wait itself (connecting, the marker, `WAIT`) as [`not_replicated`]: whatever it
/// was, the write before the wait is on the master.
fn unconfirmed(error: &RedisError) -> RedisError {
    not_replicated(format!("the replica wait failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_of_a_wait_says_not_confirmed() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let noperm = RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "NOPERM",
        ));
        for error in [refused, noperm] {
            let e = unconfirmed(&error);
            assert!(!e.is_connection_refusal(), "{e}");
            assert_eq!(e.code(), None, "{e}");
            assert!(
                e.to_string().contains("not acknowledged by replicas"),
                "{e}"
            );
        }
    }
}

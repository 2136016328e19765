//! Per-order state machines kept in Redis hashes, each step recorded and announced atomically.
//!
//! Payment, shipping and notification each keep one small hash per order (`state`, the id of the
//! entry they published, a few facts such as the label id). [`transition`] moves it from an
//! expected state to a new one and publishes the matching event in the same script, which is what
//! makes "one charge", "one label" and "one notification" hold when deliveries repeat or replicas
//! race.

use crate::saga::projection;
use crate::store::Redis;
use fulfillment_events::events::{Event, field};
use fulfillment_events::keys::Partition;
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_redis::script_reply::Tagged;
use redis::{FromRedisValue, ParsingError, RedisResult, Value};
use std::sync::LazyLock;

static TRANSITION: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::with_library(
        "transition",
        projection::LIBRARY,
        include_str!("scripts/transition.lua"),
    )
});

/// "No state yet", for [`Step::from`].
pub const ABSENT: &str = "-";

/// One step of a per-order state machine.
#[derive(Debug)]
pub struct Step<'a> {
    /// The order the state belongs to: no state is created for an order that does not exist
    /// (removed by retention).
    pub order_id: &'a str,
    /// The state hash, in the order's partition.
    pub key: String,
    /// States the step may start from; [`ABSENT`] for a hash that does not exist yet.
    pub from: &'a [&'a str],
    pub to: &'a str,
    /// The event announcing the step; the id of its entry is kept under `<event_field>_entry`,
    /// so a repeat publishes that entry again (a hash an earlier version wrote keeps the event
    /// itself under `event_field`).
    pub event: Option<&'a Event>,
    pub event_field: &'a str,
    /// A counter in the partition's counters hash incremented when the step is applied.
    pub counter: Option<&'a str>,
    /// Facts recorded with the step, each set only once.
    pub facts: &'a [(&'a str, &'a str)],
    /// Other state hashes of the same order that must be in one of their allowed states for the
    /// step to apply; otherwise it is [`StepOutcome::Blocked`].
    pub guards: &'a [Guard<'a>],
    /// The consumer making the step, when it records its event in the order's projection as it
    /// publishes it (only events [`projection::recorded_at_source`] takes).
    pub recorder: Option<Recorder<'a>>,
}

/// Who records a step's event in the order's history: a consumer, at one of its deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Recorder<'a> {
    pub consumer: &'a str,
    pub attempt: u64,
}

/// A condition on another state hash of the same order (its `state` field).
#[derive(Debug)]
pub struct Guard<'a> {
    pub key: String,
    /// States it may be in; [`ABSENT`] for "no state".
    pub allowed: &'a [&'a str],
}

/// What became of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The state moved; the value is the state it moved from.
    Applied { previous: String },
    /// The state already was the target: the event it published was published again (while the
    /// stream still holds it; a trimmed entry was acknowledged by every group).
    Repeated,
    /// The state was neither expected nor the target; nothing changed.
    Skipped { state: String },
    /// The order is gone (removed by retention) and had no such state; nothing changed.
    OrderGone,
    /// A guard hash was in none of its allowed states (the value is its state); nothing changed.
    Blocked { guard_state: String },
}

impl FromRedisValue for StepOutcome {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Self::from_tagged(&Tagged::from_redis_value(v)?)
    }
}

impl StepOutcome {
    fn from_tagged(reply: &Tagged) -> Result<Self, ParsingError> {
        let state = reply.text(0)?;
        Ok(match reply.tag.as_str() {
            "applied" => StepOutcome::Applied { previous: state },
            "repeated" => StepOutcome::Repeated,
            "skipped" => StepOutcome::Skipped { state },
            "gone" => StepOutcome::OrderGone,
            "blocked" => StepOutcome::Blocked { guard_state: state },
            _ => return Err(reply.unknown("transition.lua")),
        })
    }
}

/// What `transition.lua` answers: the step's outcome, and what the projection did when it ran.
struct Reply {
    outcome: StepOutcome,
    /// A final status the order moved to, with the order's placement (ms).
    finished: Option<(String, String)>,
}

impl FromRedisValue for Reply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        let finished = match reply.text(1).ok().as_deref() {
            Some("changed") => {
                let status = reply.text(2)?;
                (status == "COMPLETED" || status == "CANCELLED")
                    .then(|| reply.text(3).map(|created| (status, created)))
                    .transpose()?
            }
            _ => None,
        };
        Ok(Self {
            outcome: StepOutcome::from_tagged(&reply)?,
            finished,
        })
    }
}

/// Applies `step` to the order's state in `partition`, publishing on the partition's stream.
pub async fn transition(
    redis: &Redis,
    partition: &Partition,
    step: &Step<'_>,
) -> RedisResult<StepOutcome> {
    let mut invocation = ScriptCall::new();
    invocation
        .key(&partition.stream)
        .key(&step.key)
        .key(partition.keys.counters())
        .key(partition.keys.order(step.order_id));
    for guard in step.guards {
        invocation.key(&guard.key);
    }
    let recorder = step
        .recorder
        .zip(step.event)
        .filter(|(_, event)| projection::recorded_at_source(event.event_type));
    let mut fields = step.event.map(Event::to_fields).unwrap_or_default();
    let mut history = None;
    if let Some((recorder, event)) = recorder {
        projection::push_keys(
            &mut invocation,
            &partition.keys,
            &partition.stream,
            step.order_id,
        );
        if !event.projected {
            fields.push((field::PROJECTED, "1".to_owned()));
        }
        history = Some(projection::history_json_around_id(
            event,
            recorder.consumer,
            recorder.attempt,
        ));
    }
    invocation
        .arg(state_list(step.from))
        .arg(step.to)
        .arg(step.event_field)
        .arg(if fields.is_empty() { "" } else { "1" })
        .arg(step.counter.unwrap_or_default())
        .arg(step.guards.len())
        .arg(step.facts.len() * 2)
        .arg(if history.is_some() {
            projection::ARG_COUNT + 1
        } else {
            0
        });
    for guard in step.guards {
        invocation.arg(state_list(guard.allowed));
    }
    for (name, value) in step.facts {
        invocation.arg(*name).arg(*value);
    }
    if let (Some((_, event)), Some((before, after))) = (recorder, &history) {
        projection::push_args(&mut invocation, event, before, "", "");
        invocation.arg(after);
    }
    for (name, value) in &fields {
        invocation.arg(*name).arg(value);
    }
    let reply: Reply = redis
        .run_script(&TRANSITION, &partition.keys, invocation)
        .await?;
    if let Some((status, created_ms)) = &reply.finished {
        projection::observe_completion(status, created_ms);
    }
    Ok(reply.outcome)
}

/// States as `transition.lua` matches them: `,` before and after each.
fn state_list(states: &[&str]) -> String {
    let mut list = String::from(",");
    for state in states {
        list.push_str(state);
        list.push(',');
    }
    list
}

/// Reads one field of a state hash.
pub async fn read_fact(redis: &Redis, key: &str, field: &str) -> RedisResult<Option<String>> {
    let mut conn = redis.conn();
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut conn)
        .await
}

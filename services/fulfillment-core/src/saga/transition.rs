//! Per-order state machines kept in Redis hashes, each step recorded and announced atomically.
//!
//! Payment, shipping and notification each keep one small hash per order (`state`, the id of the
//! entry they published, a few facts such as the label id). [`transition`] moves it from an
//! expected state to a new one and publishes the matching event in the same script, which is what
//! makes "one charge", "one label" and "one notification" hold when deliveries repeat or replicas
//! race.

use crate::saga::projection::{self, Projected};
use crate::store::Redis;
use fulfillment_events::events::{Event, field};
use fulfillment_events::keys::Partition;
use fulfillment_events::states::{OrderStatus, StepState};
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_redis::script_reply::Tagged;
use redis::{FromRedisValue, ParsingError, RedisResult, Value};
use std::sync::LazyLock;

static TRANSITION: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::with_library(
        "transition",
        projection::LIBRARY.as_str(),
        include_str!("scripts/transition.lua"),
    )
});

/// "No state yet", as `transition.lua` reads it.
const ABSENT: &str = "-";

/// One step of a per-order state machine whose states are `S`.
#[derive(Debug)]
pub struct Step<'a, S: StepState> {
    /// The order the state belongs to: no state is created for an order that does not exist
    /// (removed by retention).
    pub order_id: &'a str,
    /// The state hash, in the order's partition.
    pub key: String,
    /// States the step may start from; `None` for a hash that does not exist yet.
    pub from: &'a [Option<S>],
    pub to: S,
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
    pub guards: &'a [Guard],
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

/// A condition on another state hash of the same order (its `state` field), of any machine.
#[derive(Debug)]
pub struct Guard {
    key: String,
    /// The allowed states as `transition.lua` matches them.
    allowed: String,
}

impl Guard {
    /// `key` must be in one of `allowed` (`None`: no state yet).
    pub fn new<S: StepState>(key: String, allowed: &[Option<S>]) -> Self {
        Self {
            key,
            allowed: state_list(allowed),
        }
    }
}

/// What became of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome<S> {
    /// The state moved; the value is the state it moved from (`None`: there was none).
    Applied { previous: Option<S> },
    /// The state already was the target: the event it published was published again (while the
    /// stream still holds it; a trimmed entry was acknowledged by every group).
    Repeated,
    /// The state was neither expected nor the target; nothing changed.
    Skipped { state: Option<S> },
    /// The order is gone (removed by retention) and had no such state; nothing changed.
    OrderGone,
    /// A guard hash was in none of its allowed states (the value is its state, of its own
    /// machine); nothing changed.
    Blocked { guard_state: String },
}

fulfillment_redis::script_tags! {
    /// What `transition.lua` answers, by its tag.
    enum StepTag ("transition.lua") {
        Applied = "applied",
        Repeated = "repeated",
        Skipped = "skipped",
        Gone = "gone",
        Blocked = "blocked",
    }
}

/// A state as the script answered it: `-` is none, and a text that names no state of `S` is an
/// error.
fn parse_state<S: StepState>(text: &str) -> Result<Option<S>, ParsingError> {
    if text == ABSENT {
        return Ok(None);
    }
    S::parse(text)
        .map(Some)
        .ok_or_else(|| format!("unknown {} state {text:?}", S::MACHINE).into())
}

impl<S: StepState> StepOutcome<S> {
    fn from_tagged(reply: &Tagged) -> Result<Self, ParsingError> {
        let state = reply.text(0)?;
        Ok(match StepTag::of(reply)? {
            StepTag::Applied => StepOutcome::Applied {
                previous: parse_state(&state)?,
            },
            StepTag::Repeated => StepOutcome::Repeated,
            StepTag::Skipped => StepOutcome::Skipped {
                state: parse_state(&state)?,
            },
            StepTag::Gone => StepOutcome::OrderGone,
            StepTag::Blocked => StepOutcome::Blocked { guard_state: state },
        })
    }
}

/// What `transition.lua` answers: the step's outcome, and what the projection did when it ran.
struct Reply<S> {
    outcome: StepOutcome<S>,
    /// A final status the order moved to, with the order's placement (ms).
    finished: Option<(OrderStatus, String)>,
}

impl<S: StepState> FromRedisValue for Reply<S> {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        // The projection's answer follows the step's state when the step recorded its event.
        let projected = match reply.rest.get(1..) {
            Some(values) if !values.is_empty() => {
                Some(Projected::from_values("transition.lua", values)?)
            }
            _ => None,
        };
        let finished = match projected {
            Some(Projected::Changed { status, created_ms }) if status.is_final() => {
                Some((status, created_ms))
            }
            Some(
                Projected::Changed { .. }
                | Projected::Unchanged
                | Projected::Final
                | Projected::Unknown,
            )
            | None => None,
        };
        Ok(Self {
            outcome: StepOutcome::from_tagged(&reply)?,
            finished,
        })
    }
}

/// Applies `step` to the order's state in `partition`, publishing on the partition's stream.
pub async fn transition<S: StepState>(
    redis: &Redis,
    partition: &Partition,
    step: &Step<'_, S>,
) -> RedisResult<StepOutcome<S>> {
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
        .arg(step.to.as_str())
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
        invocation.arg(&guard.allowed);
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
    let reply: Reply<S> = redis
        .run_script(&TRANSITION, &partition.keys, invocation)
        .await?;
    if let Some((status, created_ms)) = &reply.finished {
        projection::observe_completion(*status, created_ms);
    }
    Ok(reply.outcome)
}

/// States as `transition.lua` matches them: `,` before and after each, `-` for none.
fn state_list<S: StepState>(states: &[Option<S>]) -> String {
    let mut list = String::from(",");
    for state in states {
        list.push_str(state.map_or(ABSENT, S::as_str));
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

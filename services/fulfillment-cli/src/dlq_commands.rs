//! `fulfillment dlq list|replay|delete`: the DLQ admin of the API, straight against Redis.

use anyhow::bail;
use fulfillment_core::Redis;
use fulfillment_core::runtime::dead_letter::{self, DlqId, ReplayOutcome};
use std::fmt::Write as _;

/// Lists up to `limit` dead letters oldest first, as a table or as JSON.
pub async fn list(redis: &Redis, limit: usize, json: bool) -> anyhow::Result<String> {
    let page = dead_letter::list(redis, limit, None).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&page)?);
    }
    if page.entries.is_empty() {
        return Ok(format!("{} is empty", redis.layout().dlq()));
    }
    let mut out = format!(
        "{:<21} {:<20} {:<18} {:<38} {:>4}  ERROR\n",
        "ID", "GROUP", "TYPE", "ORDER", "DLV"
    );
    for e in &page.entries {
        let _ = writeln!(
            out,
            "{:<21} {:<20} {:<18} {:<38} {:>4}  {}",
            e.id,
            e.group,
            e.event_type.as_deref().unwrap_or("?"),
            e.order_id.as_deref().unwrap_or("?"),
            e.deliveries,
            e.error
        );
    }
    if page.next_cursor.is_some() {
        let _ = write!(out, "(more; raise --limit)");
    }
    Ok(out.trim_end().to_owned())
}

pub async fn replay(redis: &Redis, id: &str) -> anyhow::Result<String> {
    let outcome = match DlqId::parse(redis.layout(), id) {
        Some(dlq_id) => dead_letter::replay(redis, &dlq_id).await?,
        None => ReplayOutcome::NotFound,
    };
    match outcome {
        ReplayOutcome::Replayed { stream_id, group } => {
            Ok(format!("replayed {id} to {group} as {stream_id}"))
        }
        ReplayOutcome::NotFound => bail!("no dead letter {id} in {}", redis.layout().dlq()),
    }
}

pub async fn delete(redis: &Redis, id: &str) -> anyhow::Result<String> {
    let deleted = match DlqId::parse(redis.layout(), id) {
        Some(dlq_id) => dead_letter::delete(redis, &dlq_id).await?,
        None => false,
    };
    if deleted {
        Ok(format!("deleted {id}"))
    } else {
        bail!("no dead letter {id} in {}", redis.layout().dlq())
    }
}

//! `fulfillment dlq list|replay|delete`: the DLQ admin of the API, straight against Redis.

use anyhow::bail;
use fulfillment_core::Redis;
use fulfillment_core::dead_letter::{self, ReplayOutcome};
use std::fmt::Write as _;

/// Lists up to `limit` dead letters oldest first, as a table or as JSON.
pub async fn list(
    redis: &Redis,
    dlq_stream: &str,
    limit: usize,
    json: bool,
) -> anyhow::Result<String> {
    let page = dead_letter::list(redis, dlq_stream, limit, None).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&page)?);
    }
    if page.entries.is_empty() {
        return Ok(format!("{dlq_stream} is empty"));
    }
    let mut out = format!(
        "{:<17} {:<20} {:<18} {:<38} {:>4}  ERROR\n",
        "ID", "GROUP", "TYPE", "ORDER", "DLV"
    );
    for e in &page.entries {
        let _ = writeln!(
            out,
            "{:<17} {:<20} {:<18} {:<38} {:>4}  {}",
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

pub async fn replay(
    redis: &Redis,
    stream: &str,
    dlq_stream: &str,
    id: &str,
) -> anyhow::Result<String> {
    match dead_letter::replay(redis, stream, dlq_stream, id).await? {
        ReplayOutcome::Replayed { stream_id, group } => {
            Ok(format!("replayed {id} to {group} as {stream_id}"))
        }
        ReplayOutcome::NotFound => bail!("no dead letter {id} in {dlq_stream}"),
    }
}

pub async fn delete(redis: &Redis, dlq_stream: &str, id: &str) -> anyhow::Result<String> {
    if dead_letter::delete(redis, dlq_stream, id).await? {
        Ok(format!("deleted {id}"))
    } else {
        bail!("no dead letter {id} in {dlq_stream}")
    }
}

//! `fulfillment partitions`: which streams a deployment's settings name, and the chart's table of
//! partition hash tags (one source for the names: [`Layout`]).

use fulfillment_events::keys::{Layout, slot_of};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The chart renders a KEDA trigger per partition stream from a table of hash tags; it covers
/// this many partitions.
pub const CHART_MAX_PARTITIONS: usize = 64;

#[derive(Debug, Serialize)]
struct PartitionView<'a> {
    index: usize,
    stream: &'a str,
    dlq: &'a str,
    slot: u32,
}

/// The partitions of `layout`, as a table or JSON.
pub fn render(layout: &Layout, json: bool) -> anyhow::Result<String> {
    let views: Vec<PartitionView<'_>> = layout
        .partitions()
        .iter()
        .map(|p| PartitionView {
            index: p.index,
            stream: &p.stream,
            dlq: &p.dlq,
            slot: slot_of(p.stream.as_bytes()),
        })
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&views)?);
    }
    let mut out = format!(
        "{:<9} {:<32} {:<36} {:>5}\n",
        "PARTITION", "STREAM", "DLQ", "SLOT"
    );
    for v in &views {
        let _ = writeln!(
            out,
            "{:<9} {:<32} {:<36} {:>5}",
            v.index, v.stream, v.dlq, v.slot
        );
    }
    Ok(out.trim_end().to_owned())
}

/// `{"<n>": ["<tag of partition 0>", ...], ...}` for 1 to `max` partitions with hash tags (as on a
/// cluster), so a Helm template can name every partition stream, `<STREAM>:{<tag>}`.
pub fn chart_table(max: usize) -> anyhow::Result<String> {
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for count in 1..=max {
        let layout = Layout::new("s", "s:dlq", count, true);
        let tags = layout
            .partitions()
            .iter()
            .map(|p| {
                p.stream
                    .strip_prefix("s:{")
                    .and_then(|t| t.strip_suffix('}'))
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow::anyhow!("unexpected stream name {}", p.stream))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        table.insert(count.to_string(), tags);
    }
    Ok(serde_json::to_string(&table)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_table_names_the_layouts_streams() {
        let table: BTreeMap<String, Vec<String>> =
            serde_json::from_str(&chart_table(12).expect("table")).expect("json");
        let layout = Layout::new("order_events", "order_events:dlq", 12, true);
        for (p, tag) in layout.partitions().iter().zip(&table["12"]) {
            assert_eq!(p.stream, format!("order_events:{{{tag}}}"));
        }
        assert_eq!(table.len(), 12);
    }
}

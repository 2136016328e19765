//! `fulfillment stats`: one screen of groups, consumers, pending, lag, retries and the DLQ (and,
//! with several partitions, each partition's length, pending and lag, to find a hot one).

pub use fulfillment_core::ops::stream_stats::{Stats, collect};
use std::fmt::Write as _;

/// The one-screen table.
pub fn render(stats: &Stats) -> String {
    let mut out = format!(
        "{} length {}    {} length {}    orders with unresolved dead letters {}\n\n",
        stats.stream,
        stats.stream_length,
        stats.dlq_stream,
        stats.dlq_length,
        stats.orders_with_dead_letters
    );
    for n in &stats.notifications {
        let _ = writeln!(
            out,
            "notifications {:<16} sent {:>6}    resent {:>4}    failed (refused by the relay) {:>4}",
            n.kind, n.sent, n.resent, n.failed
        );
    }
    if !stats.notifications.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>7} {:>8} {:>6} {:>14} {:>8} {:>12}",
        "GROUP",
        "CONSUMERS",
        "ACTIVE",
        "PENDING",
        "LAG",
        "OLDEST PENDING",
        "RETRIES",
        "DEAD LETTERS"
    );
    for g in &stats.groups {
        let active = g.consumers.iter().filter(|c| c.active).count();
        let lag = g.lag.map_or("?".to_owned(), |l| l.to_string());
        let oldest = g
            .oldest_pending_ms
            .map_or("-".to_owned(), |ms| format!("{}s", ms / 1000));
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>7} {:>8} {:>6} {:>14} {:>8} {:>12}",
            g.group,
            g.consumers.len(),
            active,
            g.pending,
            lag,
            oldest,
            g.retries,
            g.dead_letters
        );
    }
    if stats.partitions.len() > 1 {
        let _ = writeln!(
            out,
            "\n{:<9} {:<28} {:>8} {:>8} {:>8} {:>6}",
            "PARTITION", "STREAM", "LENGTH", "DLQ", "PENDING", "LAG"
        );
        for p in &stats.partitions {
            let pending: i64 = p.groups.iter().map(|g| g.pending).sum();
            let lag = p
                .groups
                .iter()
                .map(|g| g.lag)
                .sum::<Option<i64>>()
                .map_or("?".to_owned(), |l| l.to_string());
            let _ = writeln!(
                out,
                "{:<9} {:<28} {:>8} {:>8} {:>8} {:>6}",
                p.index, p.stream, p.stream_length, p.dlq_length, pending, lag
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:<28} {:>8} {:>10}",
        "GROUP", "CONSUMER", "PENDING", "IDLE"
    );
    for g in &stats.groups {
        for c in &g.consumers {
            let _ = writeln!(
                out,
                "{:<20} {:<28} {:>8} {:>10}{}",
                g.group,
                c.name,
                c.pending,
                format_idle(c.unseen_ms),
                if c.active { "" } else { "  (inactive)" }
            );
        }
    }
    out.trim_end().to_owned()
}

fn format_idle(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms ago"),
        ms if ms < 120_000 => format!("{}s ago", ms / 1_000),
        ms if ms < i64::MAX / 2 => format!("{}m ago", ms / 60_000),
        _ => "never".to_owned(),
    }
}

//! Stream entries as Redis sends them: ids, binary-safe fields in order, and the replies of
//! `XREADGROUP`, `XRANGE` and `XCLAIM` parsed into them.
//!
//! Parsing never fails: a reply of an unexpected shape is no entries, and an entry deleted while
//! pending comes back with no fields (the retry worker acknowledges those).

use redis::{FromRedisValue, ParsingError, Value};

/// A stream entry as read, fields in order and binary-safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawEntry {
    /// A field's value, when it is there.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// A field's value as text, when it is there and UTF-8.
    pub fn text(&self, name: &str) -> Option<String> {
        self.field(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    }
}

/// The entries of an `XRANGE` or `XCLAIM` reply (`[[id, [field, value, ...]], ...]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(pub Vec<RawEntry>);

impl FromRedisValue for Entries {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(Entries(parse_entries(v)))
    }
}

/// The entries of an `XREADGROUP`/`XREAD` reply over any number of streams, in reply order
/// (RESP2 arrays or RESP3 maps); a nil reply (the block timed out) is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReply(pub Vec<RawEntry>);

impl FromRedisValue for ReadReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(ReadReply(parse_read_reply(v)))
    }
}

/// Parses an `XREADGROUP`/`XREAD` reply into entries.
pub fn parse_read_reply(reply: Value) -> Vec<RawEntry> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(parse_entries).collect()
}

/// Parses an array of `[id, [field, value, ...]]`, as `XRANGE` and `XCLAIM` return. Entries
/// whose fields are nil (deleted while pending) come back with no fields.
pub fn parse_entries(value: Value) -> Vec<RawEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.is_empty() {
                return None;
            }
            let fields_value = if parts.len() > 1 {
                parts.remove(1)
            } else {
                Value::Nil
            };
            let id = bytes_of(parts.remove(0)).map(|b| String::from_utf8_lossy(&b).into_owned())?;
            let flat: Vec<Vec<u8>> = match fields_value {
                Value::Array(values) => values.into_iter().filter_map(bytes_of).collect(),
                Value::Map(pairs) => pairs
                    .into_iter()
                    .flat_map(|(k, v)| [bytes_of(k), bytes_of(v)])
                    .flatten()
                    .collect(),
                _ => Vec::new(),
            };
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                fields.push((k, v));
            }
            Some(RawEntry { id, fields })
        })
        .collect()
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// An entry id (`ms-seq`) as a pair that sorts like the stream; a malformed one is (0, 0).
pub fn entry_id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Whether `id` looks like a stream entry id (`1700000000000-0`), so a typo is "not found", not a
/// Redis syntax error.
pub fn is_entry_id(id: &str) -> bool {
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    id.split_once('-')
        .is_some_and(|(ms, seq)| number(ms) && number(seq))
}

/// The smallest entry id after `id` (Redis refuses `(` before the largest id there is), `None`
/// when `id` is that largest id or not an id.
pub fn id_after(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    match seq.checked_add(1) {
        Some(seq) => Some(format!("{ms}-{seq}")),
        None => ms.checked_add(1).map(|ms| format!("{ms}-0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_a_read_reply_and_a_deleted_entry() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("order_events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("type"), bulk("OrderPlaced")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let ReadReply(entries) = ReadReply::from_redis_value(reply).expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].text("type").as_deref(), Some("OrderPlaced"));
        assert!(entries[1].fields.is_empty());
        assert!(parse_read_reply(Value::Nil).is_empty());
    }

    #[test]
    fn ids_parse_order_and_step() {
        assert_eq!(entry_id_order("1700-3"), (1700, 3));
        assert_eq!(entry_id_order("0-0"), (0, 0));
        assert!(entry_id_order("1700-10") > entry_id_order("1700-9"));
        assert!(is_entry_id("1700000000000-0"));
        assert!(is_entry_id("1-12"));
        assert!(!is_entry_id("1700000000000"));
        assert!(!is_entry_id("abc-1"));
        assert!(!is_entry_id("-"));
        assert!(!is_entry_id("1-"));
        assert!(
            !is_entry_id("21284504200965894773-3"),
            "beyond u64: Redis refuses it"
        );
        assert!(!is_entry_id("+1-2"));
        assert_eq!(id_after("5-1").as_deref(), Some("5-2"));
        assert_eq!(id_after("5-18446744073709551615").as_deref(), Some("6-0"));
        assert_eq!(id_after("18446744073709551615-18446744073709551615"), None);
    }
}

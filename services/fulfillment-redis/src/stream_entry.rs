//! Stream entries as Redis sends them: ids, binary-safe fields in order, and the replies of
//! `XREADGROUP`, `XRANGE` and `XCLAIM` parsed into them.
//!
//! A reply of an unexpected shape is an error, never "no entries": a reader that took a surprise
//! for an empty batch would go on as if nothing had arrived. A nil reply (a block that timed out)
//! is no entries, and an entry deleted while pending comes back with no fields (the retry worker
//! acknowledges those).

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
        Ok(Entries(parse_entries(v)?))
    }
}

/// The entries of an `XREADGROUP`/`XREAD` reply over any number of streams, in reply order
/// (RESP2 arrays or RESP3 maps); a nil reply (the block timed out) is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReply(pub Vec<RawEntry>);

impl FromRedisValue for ReadReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(ReadReply(parse_read_reply(v)?))
    }
}

/// Parses an `XREADGROUP`/`XREAD` reply into entries; nil (the block timed out) is none.
pub fn parse_read_reply(reply: Value) -> Result<Vec<RawEntry>, ParsingError> {
    let streams: Vec<Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(unexpected("a [stream, entries] pair", &other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        other => return Err(unexpected("a read reply", &other)),
    };
    let mut entries = Vec::new();
    for stream in streams {
        entries.extend(parse_entries(stream)?);
    }
    Ok(entries)
}

/// Parses an array of `[id, [field, value, ...]]`, as `XRANGE` and `XCLAIM` return. Entries
/// whose fields are nil (deleted while pending) come back with no fields; a nil in place of an
/// entry (what some versions' `XCLAIM` answers for a deleted one) is skipped.
pub fn parse_entries(value: Value) -> Result<Vec<RawEntry>, ParsingError> {
    let items = match value {
        Value::Array(items) => items,
        other => return Err(unexpected("an array of entries", &other)),
    };
    items
        .into_iter()
        .filter(|item| *item != Value::Nil)
        .map(parse_entry)
        .collect()
}

fn parse_entry(item: Value) -> Result<RawEntry, ParsingError> {
    let mut parts = match item {
        Value::Array(parts) if !parts.is_empty() && parts.len() <= 2 => parts.into_iter(),
        other => return Err(unexpected("an [id, fields] entry", &other)),
    };
    let id = parts.next().unwrap_or(Value::Nil);
    let id = bytes_of(id).map(|b| String::from_utf8_lossy(&b).into_owned())?;
    let flat: Vec<Vec<u8>> = match parts.next().unwrap_or(Value::Nil) {
        Value::Nil => Vec::new(),
        Value::Array(values) => values.into_iter().map(bytes_of).collect::<Result<_, _>>()?,
        Value::Map(pairs) => {
            let mut flat = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                flat.push(bytes_of(k)?);
                flat.push(bytes_of(v)?);
            }
            flat
        }
        other => return Err(unexpected("an entry's fields", &other)),
    };
    if !flat.len().is_multiple_of(2) {
        return Err(format!("entry {id}: a field without its value").into());
    }
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        fields.push((k, v));
    }
    Ok(RawEntry { id, fields })
}

fn bytes_of(value: Value) -> Result<Vec<u8>, ParsingError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(unexpected("a string", &other)),
    }
}

/// The error for a reply that is not what a stream command answers.
fn unexpected(wanted: &str, got: &Value) -> ParsingError {
    let mut shown = format!("{got:?}");
    shown.truncate(120);
    format!("a stream reply: expected {wanted}, got {shown}").into()
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
        assert!(parse_read_reply(Value::Nil).expect("nil").is_empty());
        // A reply of another shape is an error, not an empty batch.
        assert!(ReadReply::from_redis_value(Value::Int(3)).is_err());
        assert!(ReadReply::from_redis_value(Value::Array(vec![Value::Int(3)])).is_err());
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("type")]),
            ])]),
        ])]);
        assert!(ReadReply::from_redis_value(odd).is_err());
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

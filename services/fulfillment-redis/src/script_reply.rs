//! Replies of the project's Lua scripts as types.
//!
//! Every script answers an array whose first element is a tag naming the outcome
//! (`{'applied', state}`); [`Tagged`] reads that shape, and each outcome enum implements
//! `FromRedisValue` on top of it. A tag that no branch names is an error, never a guess, so a
//! typo in a script fails loudly instead of becoming a plausible outcome.

use redis::{FromRedisValue, ParsingError, Value};

/// A script reply split into its tag and the values after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged {
    pub tag: String,
    pub rest: Vec<Value>,
}

impl Tagged {
    /// The `i`th value after the tag as text (`""` when absent or nil).
    pub fn text(&self, i: usize) -> Result<String, ParsingError> {
        match self.rest.get(i) {
            None | Some(Value::Nil) => Ok(String::new()),
            Some(v) => String::from_redis_value_ref(v),
        }
    }

    /// The error for a tag the caller does not know.
    pub fn unknown(&self, script: &str) -> ParsingError {
        format!(
            "script {script} answered the unknown outcome {:?}",
            self.tag
        )
        .into()
    }
}

impl FromRedisValue for Tagged {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut items = match v {
            Value::Array(items) => items,
            other => return Err(format!("a script reply must be an array, not {other:?}").into()),
        };
        if items.is_empty() {
            return Err("a script reply must start with its outcome"
                .to_string()
                .into());
        }
        let tag = String::from_redis_value(items.remove(0))?;
        Ok(Self { tag, rest: items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_reply_splits_into_tag_and_details() {
        let t = Tagged::from_redis_value(Value::Array(vec![bulk("applied"), bulk("-")]))
            .expect("tagged");
        assert_eq!(t.tag, "applied");
        assert_eq!(t.text(0).expect("text"), "-");
        assert_eq!(t.text(5).expect("absent"), "");
        assert!(Tagged::from_redis_value(Value::Array(vec![])).is_err());
        assert!(Tagged::from_redis_value(Value::Int(1)).is_err());
        assert!(t.unknown("transition").to_string().contains("applied"));
    }
}

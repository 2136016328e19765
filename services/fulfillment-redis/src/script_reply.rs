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

/// Defines a script's tags as an enum, read with `Tags::of(&reply)`: a tag no variant names is
/// an error naming the script, so callers `match` every outcome and never need a `_ =>` arm.
///
/// ```
/// fulfillment_redis::script_tags! {
///     /// What `example.lua` answers.
///     enum ExampleTag ("example.lua") { Done = "done", Skipped = "skipped" }
/// }
/// ```
#[macro_export]
macro_rules! script_tags {
    ($(#[$doc:meta])* $vis:vis enum $name:ident ($script:literal) { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($variant),* }

        impl $name {
            /// The tag of `reply`; one that no variant names is an error.
            #[allow(dead_code)]
            $vis fn of(
                reply: &$crate::script_reply::Tagged,
            ) -> ::std::result::Result<Self, ::redis::ParsingError> {
                $(if reply.tag == $text { return Ok($name::$variant); })*
                Err(reply.unknown($script))
            }
        }
    };
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

    crate::script_tags! {
        enum Outcome ("test.lua") { Applied = "applied", Skipped = "skipped" }
    }

    #[test]
    fn tags_parse_into_their_enum_and_an_unknown_one_is_an_error() {
        let reply = |tag| Tagged::from_redis_value(Value::Array(vec![bulk(tag)])).expect("tagged");
        assert_eq!(
            Outcome::of(&reply("applied")).expect("known"),
            Outcome::Applied
        );
        assert_eq!(
            Outcome::of(&reply("skipped")).expect("known"),
            Outcome::Skipped
        );
        let unknown = Outcome::of(&reply("aplied")).expect_err("unknown");
        assert!(unknown.to_string().contains("test.lua"), "{unknown}");
    }
}

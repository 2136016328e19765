//! `Idempotency-Key`s: read from the header, and scoped to their caller.
//!
//! A key belongs to whoever sent it: the key stored is a hash ([`scoped`]) of what the write is
//! (`order`, `stock`), the caller (the customer id of an order; the identity its token proves:
//! admin, the callers' token, or none) and the client's key, so two callers choosing the same key
//! never meet, and nothing of another caller's write can come back in an answer.

use super::auth;
use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use fulfillment_core::Settings;

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The UUID v5 namespace of scoped keys: any fixed UUID would do, this one is this API's own.
/// Changing it forgets every stored key.
const KEY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5c1e_4b0e_8f2a_4d6b_9a37_2e0f_61c4_d8a5);

/// The request's `Idempotency-Key`, if any; 400 when it is empty, too long or not visible ASCII.
pub fn header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or("");
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// What tells callers apart in a key: the identity the bearer token proves (`admin`, `api`, or
/// empty for no token or one that opens nothing; [`auth::Identity`]), never the token itself, so
/// a caller cannot make itself a new scope by sending junk.
pub fn caller_identity(settings: &Settings, headers: &HeaderMap) -> &'static str {
    auth::Identity::of(settings, auth::bearer(headers)).as_str()
}

/// The stored form of `key` for this write and caller: `<purpose>` then each part, each prefixed
/// with its length (so no choice of parts can collide with another), hashed (UUID v5, SHA-1 based:
/// the token never appears in a key name), as 32 hex digits.
pub fn scoped(purpose: &str, caller: &[&str], key: &str) -> String {
    let mut material = String::new();
    for part in std::iter::once(purpose)
        .chain(caller.iter().copied())
        .chain(std::iter::once(key))
    {
        material.push_str(&part.len().to_string());
        material.push(':');
        material.push_str(part);
    }
    uuid::Uuid::new_v5(&KEY_NAMESPACE, material.as_bytes())
        .simple()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::scoped;

    #[test]
    fn a_key_is_its_callers_alone() {
        let first = scoped("order", &["c1", ""], "cart-1001");
        assert_eq!(first, scoped("order", &["c1", ""], "cart-1001"));
        assert_eq!(first.len(), 32);
        assert_ne!(first, scoped("order", &["c2", ""], "cart-1001"));
        assert_ne!(first, scoped("order", &["c1", "api"], "cart-1001"));
        assert_ne!(first, scoped("stock", &["c1", ""], "cart-1001"));
        // Lengths keep the parts apart: ("c1", "x") is not ("c", "1x").
        assert_ne!(
            scoped("order", &["c1", "x"], "k"),
            scoped("order", &["c", "1x"], "k")
        );
    }
}

//! Who may call what: the callers' token (`API_TOKEN`) and the admin token (`ADMIN_TOKEN`).
//!
//! Two tiers, each a route layer, so a route added to a tier cannot forget its check:
//! - **caller** (placing an order, reading one order and its events, following one order on
//!   `/ws`, reading the catalog): open unless `API_TOKEN` is set; then that token or the admin one.
//! - **admin** (catalog writes, the DLQ, listing every order, the all-orders feed, cancelling):
//!   the admin token when `ADMIN_TOKEN` is set; else the callers' token when that is set; else
//!   open.
//!
//! Health, readiness, metrics, `/stats`, OpenAPI and the console's files are never behind a token.
//! Tokens are compared in constant time. A browser's WebSocket cannot send headers, so `/ws` also
//! takes the token as `?access_token=` (RFC 6750's query form), for that route only.

use super::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fulfillment_core::Settings;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Caller,
    Admin,
}

impl Tier {
    /// Whether `presented` (the bearer token, if any) opens this tier under these settings.
    pub fn allows(self, settings: &Settings, presented: Option<&str>) -> bool {
        let is = |expected: &Option<SecretString>| match (expected, presented) {
            (Some(e), Some(p)) => bool::from(e.expose_secret().as_bytes().ct_eq(p.as_bytes())),
            _ => false,
        };
        match self {
            Tier::Caller => {
                settings.api.api_token.is_none()
                    || is(&settings.api.api_token)
                    || is(&settings.api.admin_token)
            }
            Tier::Admin => match (&settings.api.admin_token, &settings.api.api_token) {
                (Some(_), _) => is(&settings.api.admin_token),
                (None, Some(_)) => is(&settings.api.api_token),
                (None, None) => true,
            },
        }
    }

    /// The 401 for a request this tier refuses.
    pub fn refusal(self) -> Response {
        let message = match self {
            Tier::Caller => "this endpoint needs Authorization: Bearer <API_TOKEN or ADMIN_TOKEN>",
            Tier::Admin => "this endpoint needs Authorization: Bearer <ADMIN_TOKEN>",
        };
        let mut response =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// Who a presented token proves its bearer is: the admin, the callers' backend, or nobody in
/// particular. What tells callers apart (a live-feed client, an `Idempotency-Key`'s owner) is
/// this, never the token itself: a token that opens nothing names nobody, so sending a new junk
/// token every time does not make a new caller, and nothing keeps the token's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No token, or one that matches neither (also every caller when no token is set).
    Anonymous,
    /// `API_TOKEN`.
    Caller,
    /// `ADMIN_TOKEN`.
    Admin,
}

impl Identity {
    /// The identity `presented` proves under these settings, compared in constant time with
    /// both tokens (the admin token wins when both are the same).
    pub fn of(settings: &Settings, presented: Option<&str>) -> Self {
        let is = |expected: &Option<SecretString>| match (expected, presented) {
            (Some(e), Some(p)) => bool::from(e.expose_secret().as_bytes().ct_eq(p.as_bytes())),
            _ => false,
        };
        let admin = is(&settings.api.admin_token);
        let caller = is(&settings.api.api_token);
        if admin {
            Identity::Admin
        } else if caller {
            Identity::Caller
        } else {
            Identity::Anonymous
        }
    }

    /// Its name in a scoped key: `admin`, `api`, or empty.
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Anonymous => "",
            Identity::Caller => "api",
            Identity::Admin => "admin",
        }
    }
}

/// The bearer token of `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Route layer of the caller tier.
pub async fn caller(State(state): State<AppState>, request: Request, next: Next) -> Response {
    guarded(Tier::Caller, &state, request, next).await
}

/// Route layer of the admin tier.
pub async fn admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    guarded(Tier::Admin, &state, request, next).await
}

async fn guarded(tier: Tier, state: &AppState, request: Request, next: Next) -> Response {
    if tier.allows(&state.settings, bearer(request.headers())) {
        next.run(request).await
    } else {
        tier.refusal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(api: Option<&str>, admin: Option<&str>) -> Settings {
        let mut s = Settings::for_redis("redis://127.0.0.1:1");
        s.api.api_token = api.map(SecretString::from);
        s.api.admin_token = admin.map(SecretString::from);
        s
    }

    #[test]
    fn each_tier_opens_to_the_tokens_the_contract_names() {
        let open = settings(None, None);
        assert!(Tier::Caller.allows(&open, None));
        assert!(Tier::Admin.allows(&open, None));

        let admin_only = settings(None, Some("adm"));
        assert!(Tier::Caller.allows(&admin_only, None));
        assert!(!Tier::Admin.allows(&admin_only, None));
        assert!(!Tier::Admin.allows(&admin_only, Some("ad")));
        assert!(Tier::Admin.allows(&admin_only, Some("adm")));

        let api_only = settings(Some("api"), None);
        assert!(!Tier::Caller.allows(&api_only, None));
        assert!(Tier::Caller.allows(&api_only, Some("api")));
        assert!(!Tier::Admin.allows(&api_only, Some("nope")));
        assert!(Tier::Admin.allows(&api_only, Some("api")));

        let both = settings(Some("api"), Some("adm"));
        assert!(Tier::Caller.allows(&both, Some("api")));
        assert!(Tier::Caller.allows(&both, Some("adm")));
        assert!(!Tier::Caller.allows(&both, Some("apx")));
        assert!(!Tier::Admin.allows(&both, Some("api")));
        assert!(Tier::Admin.allows(&both, Some("adm")));
    }

    #[test]
    fn only_a_token_that_opens_something_names_its_bearer() {
        let both = settings(Some("api"), Some("adm"));
        assert_eq!(Identity::of(&both, Some("adm")), Identity::Admin);
        assert_eq!(Identity::of(&both, Some("api")), Identity::Caller);
        for junk in [
            None,
            Some(""),
            Some("ad"),
            Some("admx"),
            Some("junk1"),
            Some("junk2"),
        ] {
            assert_eq!(Identity::of(&both, junk), Identity::Anonymous, "{junk:?}");
        }
        let open = settings(None, None);
        assert_eq!(Identity::of(&open, Some("anything")), Identity::Anonymous);
        let same = settings(Some("t"), Some("t"));
        assert_eq!(Identity::of(&same, Some("t")), Identity::Admin);
        assert_eq!(Identity::Admin.as_str(), "admin");
        assert_eq!(Identity::Caller.as_str(), "api");
        assert_eq!(Identity::Anonymous.as_str(), "");
    }
}

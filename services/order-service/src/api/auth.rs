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
}

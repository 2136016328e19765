//! `/orders`: place (validated and priced server-side), read, list, history, cancel.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Arrival, PageQuery, idempotency};
use crate::catalog;
use crate::error::{ApiError, ApiResult, confirmed};
use crate::orders::{self, Cancelled, IdempotencyKey, NewOrder, OrderStatus, Placed};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fulfillment_core::ops::telemetry;
use fulfillment_events::events::{LineItem, PAYMENT_TOKENS};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

/// Most lines in one order.
pub const MAX_ITEMS: usize = 50;
/// Most units of one line.
pub const MAX_QUANTITY: i64 = 1000;
const MAX_TEXT: usize = 128;
const MAX_EMAIL: usize = 254;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    customer_id: String,
    customer_email: String,
    items: Vec<ItemRequest>,
    #[serde(default)]
    payment_token: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ItemRequest {
    product_id: String,
    quantity: i64,
}

pub async fn place(
    State(state): State<AppState>,
    arrival: Arrival,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrderRequest>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let idempotency_key = idempotency::header(&headers)?;
    validate(&request)?;
    let new = price(&state, &request).await?;
    // The key is the caller's own: its customer and the identity its token proves.
    let caller = [
        new.customer_id.as_str(),
        idempotency::caller_identity(&state.settings, &headers),
    ];
    let idempotency = idempotency_key.map(|key| IdempotencyKey {
        key: idempotency::scoped("order", &caller, &key),
        fingerprint: serde_json::to_string(&request).unwrap_or_default(),
        ttl_secs: state.settings.api.idempotency_ttl_secs,
    });
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(telemetry::canonical_traceparent);
    let span = tracing::info_span!(
        "place_order",
        otel.name = "POST /orders",
        otel.kind = "server",
        order_id = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, incoming.as_deref());
    let traceparent = telemetry::traceparent_of(&span).or(incoming);
    let order_id = orders::new_order_id(
        state.redis.layout(),
        idempotency.as_ref().map(|i| i.key.as_str()),
    );
    let placing = orders::place(
        &state.redis,
        &order_id,
        new,
        idempotency.as_ref(),
        traceparent,
        &state.settings.consumer_name,
    )
    .instrument(span.clone());
    // Answer before the request's own timeout: once the script may have reached Redis, only a
    // reply tells whether the order exists, and the caller must hear that it does not know.
    let what = format!("placing order {order_id}");
    let placed = confirmed(&what, deadline, placing, || {
        outcome_unknown(&order_id, idempotency.is_some())
    })
    .await?;
    if let Placed::Created { order, .. } = &placed {
        span.record("order_id", order.id.as_str());
    }
    match placed {
        Placed::Created { order, stream_id } => {
            tracing::debug!(
                parent: &span,
                order_id = order.id.as_str(),
                stream_id,
                total = order.total,
                "order placed"
            );
            Ok(created(&order, false))
        }
        Placed::Existing {
            order_id,
            same_request: true,
        } => {
            let order = orders::get(&state.redis, &order_id)
                .await?
                .ok_or_else(|| ApiError::not_found("order_not_found", "the first order is gone"))?;
            Ok(created(&order, true))
        }
        // The key is scoped to this caller (customer and token), so the order it names is this
        // caller's own.
        Placed::Existing { order_id, .. } => Err(ApiError::invalid(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )
        .with_details(json!({"order_id": order_id}))),
    }
}

/// 503 for a placement that may or may not have happened: it names the order id that was
/// attempted, so the caller can look it up, and says how to retry without placing it twice.
fn outcome_unknown(order_id: &str, had_idempotency_key: bool) -> ApiError {
    let advice = if had_idempotency_key {
        "retry with the same Idempotency-Key: it returns this order if it was placed"
    } else {
        "retry only with an Idempotency-Key (a new key now, since this attempt had none), after \
         checking that this order does not exist"
    };
    ApiError::outcome_unknown(format!(
        "the event store did not confirm the order in time: order {order_id} may or may not \
         have been placed; GET /orders/{order_id} tells; {advice}"
    ))
    .with_details(json!({"order_id": order_id, "location": format!("/orders/{order_id}")}))
}

fn created(order: &orders::Order, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, Json(order)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Field-level checks; every problem is listed in `details`.
fn validate(request: &PlaceOrderRequest) -> ApiResult<()> {
    let mut problems = Vec::new();
    let mut problem = |field: String, message: &str| {
        problems.push(json!({"field": field, "message": message}));
    };
    let id = request.customer_id.trim();
    if id.is_empty() || id.len() > MAX_TEXT || id.chars().any(char::is_control) {
        problem(
            "customer_id".into(),
            "must be 1 to 128 characters, no control characters",
        );
    }
    if !looks_like_email(&request.customer_email) {
        problem("customer_email".into(), "must be an email address");
    }
    if request.items.is_empty() || request.items.len() > MAX_ITEMS {
        problem("items".into(), "must hold 1 to 50 items");
    }
    for (i, item) in request.items.iter().enumerate() {
        if item.product_id.is_empty()
            || item.product_id.len() > MAX_TEXT
            || item.product_id.chars().any(char::is_control)
        {
            problem(
                format!("items[{i}].product_id"),
                "must be 1 to 128 characters",
            );
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            problem(format!("items[{i}].quantity"), "must be between 1 and 1000");
        }
    }
    if let Some(token) = &request.payment_token
        && !PAYMENT_TOKENS.contains(&token.as_str())
    {
        problem(
            "payment_token".into(),
            "must be one of tok_visa, tok_mastercard, tok_chargeDeclined",
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("invalid_order", "the order is not valid")
            .with_details(json!({"problems": problems})))
    }
}

fn looks_like_email(email: &str) -> bool {
    email.len() <= MAX_EMAIL
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

/// Prices every line from the catalog; unknown products are a 422 naming them.
async fn price(state: &AppState, request: &PlaceOrderRequest) -> ApiResult<NewOrder> {
    let ids: Vec<&str> = request
        .items
        .iter()
        .map(|i| i.product_id.as_str())
        .collect();
    let products = catalog::get_many(&state.redis, &ids).await?;
    let unknown: Vec<&str> = ids
        .iter()
        .zip(&products)
        .filter(|(_, p)| p.is_none())
        .map(|(id, _)| *id)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(
            "unknown_product",
            "the order names products not in the catalog",
        )
        .with_details(json!({"product_ids": unknown})));
    }
    let mut items = Vec::with_capacity(request.items.len());
    let mut total: u64 = 0;
    for (item, product) in request.items.iter().zip(products.into_iter().flatten()) {
        let quantity = item.quantity as u32;
        let line = product.price.checked_mul(u64::from(quantity));
        total = line
            .and_then(|l| total.checked_add(l))
            .ok_or_else(|| ApiError::invalid("total_too_large", "the order total overflows"))?;
        items.push(LineItem {
            product_id: product.id,
            quantity,
            unit_price: product.price,
        });
    }
    Ok(NewOrder {
        customer_id: request.customer_id.trim().to_owned(),
        customer_email: request.customer_email.clone(),
        items,
        total,
        payment_token: request
            .payment_token
            .clone()
            .unwrap_or_else(|| PAYMENT_TOKENS[0].to_owned()),
    })
}

/// The order, or 404 `order_not_found`.
async fn existing(state: &AppState, id: &str) -> ApiResult<orders::Order> {
    orders::get(&state.redis, id)
        .await?
        .ok_or_else(|| ApiError::not_found("order_not_found", format!("no order {id}")))
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(existing(&state, &id).await?).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => match OrderStatus::parse(s) {
            Some(status) => Some(status),
            None => {
                let all: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown status {s}; one of {}", all.join(", ")),
                ));
            }
        },
    };
    let (limit, cursor) = query.page.read(50, 200, orders::is_cursor)?;
    let page = orders::list(&state.redis, status, limit, cursor).await?;
    Ok(Json(page).into_response())
}

pub async fn events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    existing(&state, &id).await?;
    let events = orders::history(&state.redis, &id).await?;
    Ok(Json(json!({"order_id": id, "events": events})).into_response())
}

/// The order's messages to its customer (a confirmation or a cancellation, with its text).
pub async fn messages(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    existing(&state, &id).await?;
    let messages = orders::messages(&state.redis, &id).await?;
    Ok(Json(json!({"order_id": id, "messages": messages})).into_response())
}

/// Cancels an order. Safe to retry: a cancel that landed makes the retry a 409 `order_final`
/// naming status `CANCELLED` and its `status_reason` (`cancelled_by_request` for this route).
pub async fn cancel(
    State(state): State<AppState>,
    arrival: Arrival,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let order = existing(&state, &id).await?;
    let cancelling = orders::cancel(&state.redis, &order, CANCELLED_BY_REQUEST);
    let outcome = confirmed("cancel", deadline, cancelling, || {
        ApiError::outcome_unknown(format!(
            "the event store did not confirm the cancel in time: order {id} may or may not be \
             cancelled; GET /orders/{id} tells (CANCELLED with status_reason \
             {CANCELLED_BY_REQUEST}); a retry is safe: 202 if this one did not land, 409 \
             order_final naming CANCELLED if it did"
        ))
        .with_details(json!({"order_id": id, "location": format!("/orders/{id}")}))
    })
    .await?;
    match outcome {
        Cancelled::Cancelled {
            previous_status, ..
        } => {
            tracing::debug!(
                order_id = id.as_str(),
                previous_status = previous_status.as_str(),
                "order cancelled by request"
            );
            // The cancel is done: a failed read now must not answer as if it were not.
            let order = match orders::get(&state.redis, &id).await {
                Ok(Some(now)) => now,
                _ => orders::Order {
                    status: OrderStatus::Cancelled,
                    status_reason: Some(CANCELLED_BY_REQUEST.to_owned()),
                    ..order
                },
            };
            Ok((StatusCode::ACCEPTED, Json(order)).into_response())
        }
        Cancelled::AlreadyFinal { status, reason } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "order_final",
            match &reason {
                Some(reason) => {
                    format!("the order is {status} ({reason}) and can no longer be cancelled")
                }
                None => format!("the order is {status} and can no longer be cancelled"),
            },
        )
        .with_details(json!({"status": status, "status_reason": reason}))),
        Cancelled::AlreadyShipped { status } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "order_shipped",
            "the order's shipment label is made; it can no longer be cancelled",
        )
        .with_details(json!({"status": status}))),
        Cancelled::NotFound => Err(ApiError::not_found(
            "order_not_found",
            format!("no order {id}"),
        )),
    }
}

/// The `status_reason` of an order cancelled through the API.
const CANCELLED_BY_REQUEST: &str = "cancelled_by_request";

#[cfg(test)]
mod tests {
    use super::looks_like_email;

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(looks_like_email("a@example.com"));
        assert!(!looks_like_email("a@example"));
        assert!(!looks_like_email("@example.com"));
        assert!(!looks_like_email("a b@example.com"));
        assert!(!looks_like_email("a@.com."));
        assert!(!looks_like_email("a\u{0}\u{7}@b.com"));
    }
}

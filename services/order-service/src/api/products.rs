//! `/products`: the catalog. Reads are the caller tier's, writes the admin tier's.
//!
//! Stock is never overwritten blindly (reservations change it at any moment): `PUT` edits name and
//! price and sets stock only with an `If-Match` naming the product as it is now (its `ETag`, from
//! any read); `POST /products/{id}/stock` moves it by a delta.
//!
//! Every write that Redis did not confirm answers 503 `outcome_unknown` (503 `redis_unavailable`
//! only when nothing was written), and each is safe to retry: a create that finds the product as
//! it would make it answers 200 with it; `PUT` and `DELETE` set what they set (a stock set with
//! `If-Match` then answers 412, the ETag having moved); a stock delta is applied once per
//! `Idempotency-Key`.

use super::{ApiJson, ApiPath, AppState, Arrival, idempotency};
use crate::catalog::{self, AdjustmentKey, MAX_STOCK, Product, Written, if_match_version};
use crate::error::{ApiError, ApiResult, confirmed};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

const MAX_ID: usize = 64;
const MAX_NAME: usize = 200;
const MAX_PRICE: u64 = 10_000_000_000;

/// `POST /products`: the id is optional (null or absent: one is made up).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    #[serde(default)]
    id: Option<String>,
    name: String,
    price: u64,
    stock: i64,
}

/// `PUT /products/{id}`: the id is the path's; `stock` only with `If-Match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdate {
    name: String,
    price: u64,
    /// Absent means "leave it"; `null` is not a stock.
    #[serde(default, deserialize_with = "present")]
    stock: Option<i64>,
}

/// A field that, when given, must hold a value (`null` is refused like any wrong type).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize(d).map(Some)
}

/// `POST /products/{id}/stock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    delta: i64,
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Response> {
    let products = catalog::list(&state.redis).await?;
    Ok(Json(json!({"products": products})).into_response())
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let product = catalog::get(&state.redis, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(with_etag(StatusCode::OK, &product))
}

/// `POST /products`: 201 with the product; 200 (header `idempotent-replayed: true`) when it
/// exists already exactly as this would make it (same name, price and initial stock: a retried
/// create), with its stock as it is now; 409 `product_exists` when the id is taken otherwise.
pub async fn create(
    State(state): State<AppState>,
    arrival: Arrival,
    ApiJson(request): ApiJson<ProductRequest>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let chosen = request.id.is_some();
    let id = request
        .id
        .clone()
        .unwrap_or_else(|| format!("product-{}", uuid::Uuid::new_v4().simple()));
    let mut product = validated(&id, &request.name, request.price, Some(request.stock))?;
    let creating = catalog::create(&state.redis, &product);
    let written = confirmed("creating a product", deadline, creating, || {
        let advice = if chosen {
            "a retry with the same body is safe: 201 if this one did not land, 200 with the \
             product if it did"
        } else {
            "this request had no id, so a retry would make another product: GET the product \
             named here first, or retry with it as the id"
        };
        ApiError::outcome_unknown(format!(
            "the event store did not confirm the create in time: product {id} may or may not \
             exist; GET /products/{id} tells; {advice}"
        ))
        .with_details(json!({"product_id": id, "location": format!("/products/{id}")}))
    })
    .await?;
    match written {
        Written::Created { rev, stock } => {
            (product.rev, product.stock) = (rev, stock);
            Ok(with_etag(StatusCode::CREATED, &product))
        }
        Written::Same { rev, stock } => {
            (product.rev, product.stock) = (rev, stock);
            Ok(replayed(with_etag(StatusCode::OK, &product)))
        }
        Written::Exists => Err(ApiError::new(
            StatusCode::CONFLICT,
            "product_exists",
            format!(
                "product {} exists with another name, price or initial stock; PUT edits it",
                product.id
            ),
        )
        .with_details(json!({"product_id": product.id}))),
        other => Err(unexpected(other)),
    }
}

pub async fn put(
    State(state): State<AppState>,
    arrival: Arrival,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(update): ApiJson<ProductUpdate>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let mut product = validated(&id, &update.name, update.price, update.stock)?;
    let expected =
        match headers.get(header::IF_MATCH) {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(if_match_version).ok_or_else(
                || {
                    ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "precondition_failed",
                        "If-Match must be the product's ETag, as a read of it gave",
                    )
                },
            )?),
        };
    let editing = catalog::edit(
        &state.redis,
        &id,
        &product.name,
        product.price,
        update.stock,
        expected.as_deref(),
    );
    let written = confirmed("editing a product", deadline, editing, || {
        ApiError::outcome_unknown(format!(
            "the event store did not confirm the edit in time: product {id} may or may not \
             have it; GET /products/{id} tells; the same PUT again is safe (a stock set with \
             If-Match then answers 412 if this one landed: the product's ETag moved)"
        ))
        .with_details(json!({"product_id": id, "location": format!("/products/{id}")}))
    })
    .await?;
    match written {
        Written::Created { rev, stock } => {
            (product.rev, product.stock) = (rev, stock);
            Ok(with_etag(StatusCode::CREATED, &product))
        }
        Written::Updated { rev, stock } => {
            (product.rev, product.stock) = (rev, stock);
            Ok(with_etag(StatusCode::OK, &product))
        }
        Written::PreconditionRequired => Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "setting stock needs If-Match with the product's ETag (reservations change stock at \
             any moment); or move it by a delta with POST /products/{id}/stock",
        )),
        Written::PreconditionFailed { rev, stock } => Err(stale(rev, stock)),
        other => Err(unexpected(other)),
    }
}

/// `POST /products/{id}/stock`. With an `Idempotency-Key` (the caller's: scoped to the identity
/// its token proves), the delta is applied once: a retry with the key and the same
/// body gets the first answer (header `idempotent-replayed: true`), with another body 422
/// `idempotency_key_reused`.
pub async fn adjust_stock(
    State(state): State<AppState>,
    arrival: Arrival,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(adjustment): ApiJson<StockAdjustment>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let key = idempotency::header(&headers)?;
    if adjustment.delta.unsigned_abs() > MAX_STOCK as u64 {
        return Err(ApiError::invalid(
            "invalid_adjustment",
            format!("delta must be between -{MAX_STOCK} and {MAX_STOCK}"),
        ));
    }
    let had_key = key.is_some();
    let key = key.map(|key| AdjustmentKey {
        key: idempotency::scoped(
            "stock",
            &[idempotency::caller_identity(&state.settings, &headers)],
            &key,
        ),
        fingerprint: json!({"product_id": id, "delta": adjustment.delta}).to_string(),
        ttl_secs: state.settings.api.idempotency_ttl_secs,
    });
    let adjusting = catalog::adjust_stock(&state.redis, &id, adjustment.delta, key.as_ref());
    let written = confirmed("adjusting stock", deadline, adjusting, || {
        let advice = if had_key {
            "retry with the same Idempotency-Key: it applies the delta only if this one did not"
        } else {
            "this request had no Idempotency-Key, so a retry could apply it twice: read the \
             product's stock first, and send a key with every adjustment"
        };
        ApiError::outcome_unknown(format!(
            "the event store did not confirm the adjustment in time: it may or may not have \
             been applied to product {id}; {advice}"
        ))
        .with_details(json!({"product_id": id, "location": format!("/products/{id}")}))
    })
    .await?;
    match written {
        Written::Adjusted {
            product,
            replayed: again,
        } => {
            let response = with_etag(StatusCode::OK, &product);
            Ok(if again { replayed(response) } else { response })
        }
        Written::KeyReused => Err(ApiError::invalid(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different adjustment",
        )),
        Written::NotFound => Err(not_found(&id)),
        Written::OutOfRange { stock } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stock_out_of_range",
            format!("the stock is {stock}; it must stay between 0 and {MAX_STOCK}"),
        )
        .with_details(json!({"stock": stock}))),
        other => Err(unexpected(other)),
    }
}

/// `DELETE /products/{id}`: 204, or 404 when there is none. Safe to retry: after an
/// `outcome_unknown`, 404 means the first delete removed it (or it never existed).
pub async fn delete(
    State(state): State<AppState>,
    arrival: Arrival,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let deleting = catalog::delete(&state.redis, &id);
    let removed = confirmed("deleting a product", deadline, deleting, || {
        ApiError::outcome_unknown(format!(
            "the event store did not confirm the delete in time: product {id} may or may not \
             be gone; a retry is safe (404 product_not_found then means it is gone)"
        ))
        .with_details(json!({"product_id": id}))
    })
    .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&id))
    }
}

/// Marks an answer as the one an earlier request got (or would have got).
fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("product_not_found", format!("no product {id}"))
}

/// 412 naming the product's current version, so the caller can read it again and retry.
fn stale(rev: u64, stock: i64) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "the product changed since it was read (an edit or a reservation); read it again",
    )
    .with_details(json!({"stock": stock, "etag": format!("\"{rev}-{stock}\"")}))
}

/// A script outcome this route cannot produce: a bug, reported as a 500 rather than guessed at.
fn unexpected(outcome: Written) -> ApiError {
    tracing::error!(?outcome, "unexpected catalog outcome");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "unexpected catalog outcome",
    )
}

fn with_etag(status: StatusCode, product: &Product) -> Response {
    let mut response = (status, Json(product)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&product.etag()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn validated(id: &str, name: &str, price: u64, stock: Option<i64>) -> ApiResult<Product> {
    let mut problems = Vec::new();
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(json!({"field": "id", "message": "1 to 64 of A-Z a-z 0-9 - _"}));
    }
    if name.trim().is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        problems.push(json!({"field": "name", "message": "must be 1 to 200 characters, no control characters"}));
    }
    if price > MAX_PRICE {
        problems.push(json!({"field": "price", "message": "must be at most 10000000000 cents"}));
    }
    if stock.is_some_and(|s| !(0..=MAX_STOCK).contains(&s)) {
        problems.push(json!({"field": "stock", "message": "must be between 0 and 1000000000"}));
    }
    if !problems.is_empty() {
        return Err(
            ApiError::invalid("invalid_product", "the product is not valid")
                .with_details(json!({"problems": problems})),
        );
    }
    Ok(Product {
        id: id.to_owned(),
        name: name.trim().to_owned(),
        price,
        stock: stock.unwrap_or(0),
        rev: 0,
    })
}

//! `/products`: the catalog. Writes need the admin token when one is set.

use super::{AppState, json_body, require_admin};
use crate::catalog::{self, Product};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

const MAX_ID: usize = 64;
const MAX_NAME: usize = 200;
const MAX_STOCK: i64 = 1_000_000_000;
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

/// `PUT /products/{id}`: the id is the path's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdate {
    name: String,
    price: u64,
    stock: i64,
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Response> {
    let products = catalog::list(&state.redis).await?;
    Ok(Json(json!({"products": products})).into_response())
}

pub async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let product = catalog::get(&state.redis, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("product_not_found", format!("no product {id}")))?;
    Ok(Json(product).into_response())
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let request: ProductRequest = json_body(&headers, body).await?;
    let id = request
        .id
        .clone()
        .unwrap_or_else(|| format!("product-{}", uuid::Uuid::new_v4().simple()));
    let product = validated(id, request)?;
    if !catalog::create(&state.redis, &product).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "product_exists",
            format!("product {} exists; PUT replaces it", product.id),
        ));
    }
    Ok((StatusCode::CREATED, Json(product)).into_response())
}

pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let update: ProductUpdate = json_body(&headers, body).await?;
    let request = ProductRequest {
        id: None,
        name: update.name,
        price: update.price,
        stock: update.stock,
    };
    let product = validated(id, request)?;
    catalog::put(&state.redis, &product).await?;
    Ok(Json(product).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    if catalog::delete(&state.redis, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(
            "product_not_found",
            format!("no product {id}"),
        ))
    }
}

fn validated(id: String, request: ProductRequest) -> ApiResult<Product> {
    let mut problems = Vec::new();
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(json!({"field": "id", "message": "1 to 64 of A-Z a-z 0-9 - _"}));
    }
    if request.name.trim().is_empty() || request.name.len() > MAX_NAME {
        problems.push(json!({"field": "name", "message": "must be 1 to 200 characters"}));
    }
    if request.price > MAX_PRICE {
        problems.push(json!({"field": "price", "message": "must be at most 10000000000 cents"}));
    }
    if !(0..=MAX_STOCK).contains(&request.stock) {
        problems.push(json!({"field": "stock", "message": "must be between 0 and 1000000000"}));
    }
    if !problems.is_empty() {
        return Err(
            ApiError::invalid("invalid_product", "the product is not valid")
                .with_details(json!({"problems": problems})),
        );
    }
    Ok(Product {
        id,
        name: request.name.trim().to_owned(),
        price: request.price,
        stock: request.stock,
    })
}

//! The product catalog: ids, names, prices (integer cents) and stock, in Redis hashes.
//!
//! Stock is changed by inventory's scripts; the catalog API reads it and lets an operator set it.

use fulfillment_core::{Redis, keys};
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

static SEED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/seed_catalog.lua")));

/// The catalog a fresh installation starts with (the seeds' test products).
pub const SEED_PRODUCTS: &[(&str, &str, u64, i64)] = &[
    ("product-A", "Product A", 1999, 10),
    ("product-B", "Product B", 2999, 5),
    ("product-C", "Product C", 999, 0),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    /// Integer cents.
    pub price: u64,
    pub stock: i64,
}

impl Product {
    fn from_hash(hash: HashMap<String, String>) -> Option<Self> {
        Some(Self {
            id: hash.get("id")?.clone(),
            name: hash.get("name").cloned().unwrap_or_default(),
            price: hash.get("price")?.parse().ok()?,
            stock: hash.get("stock")?.parse().ok()?,
        })
    }
}

/// Seeds [`SEED_PRODUCTS`] when the catalog is empty; true when it did.
pub async fn seed_if_empty(redis: &Redis) -> RedisResult<bool> {
    let mut invocation = SEED.prepare_invoke();
    invocation.key(keys::products()).arg(keys::product(""));
    for (id, name, price, stock) in SEED_PRODUCTS {
        invocation.arg(*id).arg(*name).arg(*price).arg(*stock);
    }
    let mut conn = redis.conn();
    let seeded: i64 = invocation.invoke_async(&mut conn).await?;
    Ok(seeded == 1)
}

pub async fn get(redis: &Redis, id: &str) -> RedisResult<Option<Product>> {
    let mut conn = redis.conn();
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::product(id))
        .query_async(&mut conn)
        .await?;
    Ok(Product::from_hash(hash))
}

/// Several products in one round trip, in the order asked; `None` for unknown ids.
pub async fn get_many(redis: &Redis, ids: &[&str]) -> RedisResult<Vec<Option<Product>>> {
    if ids.is_empty() {
        // An empty pipeline is a Redis error, not an empty answer.
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGETALL").arg(keys::product(id));
    }
    let mut conn = redis.conn();
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
    Ok(hashes.into_iter().map(Product::from_hash).collect())
}

/// Every product, by id.
pub async fn list(redis: &Redis) -> RedisResult<Vec<Product>> {
    let mut conn = redis.conn();
    let mut ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::products())
        .query_async(&mut conn)
        .await?;
    ids.sort();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    Ok(get_many(redis, &refs)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// Creates a product; false when the id is taken.
pub async fn create(redis: &Redis, product: &Product) -> RedisResult<bool> {
    let mut conn = redis.conn();
    let added: i64 = redis::cmd("SADD")
        .arg(keys::products())
        .arg(&product.id)
        .query_async(&mut conn)
        .await?;
    if added == 0 {
        return Ok(false);
    }
    write(redis, product).await?;
    Ok(true)
}

/// Creates or replaces a product.
pub async fn put(redis: &Redis, product: &Product) -> RedisResult<()> {
    let mut conn = redis.conn();
    redis::cmd("SADD")
        .arg(keys::products())
        .arg(&product.id)
        .query_async::<i64>(&mut conn)
        .await?;
    write(redis, product).await
}

async fn write(redis: &Redis, product: &Product) -> RedisResult<()> {
    let mut conn = redis.conn();
    redis::cmd("HSET")
        .arg(keys::product(&product.id))
        .arg("id")
        .arg(&product.id)
        .arg("name")
        .arg(&product.name)
        .arg("price")
        .arg(product.price)
        .arg("stock")
        .arg(product.stock)
        .query_async::<i64>(&mut conn)
        .await?;
    Ok(())
}

/// Removes a product; false when there was none.
pub async fn delete(redis: &Redis, id: &str) -> RedisResult<bool> {
    let mut conn = redis.conn();
    let (removed, _): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("SREM")
        .arg(keys::products())
        .arg(id)
        .cmd("DEL")
        .arg(keys::product(id))
        .query_async(&mut conn)
        .await?;
    Ok(removed > 0)
}

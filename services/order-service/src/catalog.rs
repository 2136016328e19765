//! The product catalog: ids, names, prices (integer cents) and stock, in Redis hashes.
//!
//! Stock is changed by inventory's scripts at any time, so the catalog API never overwrites it
//! blindly: name and price edits leave it alone, stock moves by a delta, or is set only against
//! the product's current [`Product::etag`] (`catalog_write.lua`). The catalog has a hash slot of
//! its own; a write is answered once it is on enough replicas (`REDIS_WAIT_REPLICAS`).

use fulfillment_core::Redis;
use fulfillment_events::keys::KeySpace;
use fulfillment_redis::script_reply::Tagged;
use redis::{FromRedisValue, ParsingError, RedisResult, Script, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

static SEED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/seed_catalog.lua")));
static WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/catalog_write.lua")));

/// Most units of one product in stock.
pub const MAX_STOCK: i64 = 1_000_000_000;

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
    /// Bumped by every catalog write (not by reservations); with the stock it makes the ETag.
    #[serde(skip)]
    pub rev: u64,
}

impl Product {
    fn from_hash(hash: HashMap<String, String>) -> Option<Self> {
        Some(Self {
            id: hash.get("id")?.clone(),
            name: hash.get("name").cloned().unwrap_or_default(),
            price: hash.get("price")?.parse().ok()?,
            stock: hash.get("stock")?.parse().ok()?,
            rev: hash.get("rev").and_then(|r| r.parse().ok()).unwrap_or(0),
        })
    }

    /// The product as it is now, as a strong ETag: any catalog write or reservation changes it.
    pub fn etag(&self) -> String {
        format!("\"{}\"", version(self.rev, self.stock))
    }
}

/// `<rev>-<stock>`: what an ETag names, and what `If-Match` must still match.
fn version(rev: u64, stock: i64) -> String {
    format!("{rev}-{stock}")
}

/// What `If-Match` names, when it names one of our ETags (quotes and a weak prefix stripped).
pub fn if_match_version(header: &str) -> Option<String> {
    let tag = header.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    let (rev, stock) = inner.split_once('-')?;
    Some(version(rev.parse().ok()?, stock.parse().ok()?))
}

/// What a catalog write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Created {
        rev: u64,
        stock: i64,
    },
    Updated {
        rev: u64,
        stock: i64,
    },
    /// `create` of an id that exists, otherwise than this create would make it.
    Exists,
    /// `create` of a product that exists with this name, price and initial stock (a retried
    /// create, or the same one twice): the product as it is now.
    Same {
        rev: u64,
        stock: i64,
    },
    /// A stock adjustment applied now, or (`replayed`) by an earlier request with the same
    /// Idempotency-Key: the product as that adjustment left it.
    Adjusted {
        product: Product,
        replayed: bool,
    },
    /// The Idempotency-Key was used for another adjustment (another product or delta).
    KeyReused,
    NotFound,
    /// A stock set without `If-Match`.
    PreconditionRequired,
    /// `If-Match` no longer names the product (the product as it is now).
    PreconditionFailed {
        rev: u64,
        stock: i64,
    },
    /// The adjustment would take stock below 0 or above [`MAX_STOCK`] (the stock now).
    OutOfRange {
        stock: i64,
    },
}

fulfillment_redis::script_tags! {
    /// What `catalog_write.lua` answers.
    enum WriteTag ("catalog_write.lua") {
        Created = "created",
        Updated = "updated",
        Adjusted = "adjusted",
        Replayed = "replayed",
        Exists = "exists",
        Same = "same",
        KeyReused = "key_reused",
        NotFound = "not_found",
        PreconditionRequired = "precondition_required",
        PreconditionFailed = "precondition_failed",
        OutOfRange = "out_of_range",
    }
}

impl FromRedisValue for Written {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        let int = |i: usize| -> Result<i64, ParsingError> {
            reply
                .text(i)?
                .parse()
                .map_err(|_| ParsingError::from(format!("{} is not a number", reply.tag)))
        };
        let rev = |i: usize| int(i).map(|r| r.max(0) as u64);
        let tag = WriteTag::of(&reply)?;
        Ok(match tag {
            WriteTag::Created => Written::Created {
                rev: rev(0)?,
                stock: int(1)?,
            },
            WriteTag::Updated => Written::Updated {
                rev: rev(0)?,
                stock: int(1)?,
            },
            WriteTag::Adjusted | WriteTag::Replayed => Written::Adjusted {
                product: Product {
                    id: String::new(),
                    name: reply.text(2)?,
                    price: int(3)?.max(0) as u64,
                    stock: int(1)?,
                    rev: rev(0)?,
                },
                replayed: tag == WriteTag::Replayed,
            },
            WriteTag::Exists => Written::Exists,
            WriteTag::Same => Written::Same {
                rev: rev(0)?,
                stock: int(1)?,
            },
            WriteTag::KeyReused => Written::KeyReused,
            WriteTag::NotFound => Written::NotFound,
            WriteTag::PreconditionRequired => Written::PreconditionRequired,
            WriteTag::PreconditionFailed => Written::PreconditionFailed {
                rev: rev(0)?,
                stock: int(1)?,
            },
            WriteTag::OutOfRange => Written::OutOfRange { stock: int(0)? },
        })
    }
}

fn catalog(redis: &Redis) -> &KeySpace {
    &redis.layout().catalog
}

/// Seeds [`SEED_PRODUCTS`] when the catalog is empty; true when it did.
pub async fn seed_if_empty(redis: &Redis) -> RedisResult<bool> {
    let mut invocation = SEED.prepare_invoke();
    invocation.key(catalog(redis).products());
    for (id, name, price, stock) in SEED_PRODUCTS {
        invocation.key(catalog(redis).product(id));
        invocation.arg(*id).arg(*name).arg(*price).arg(*stock);
    }
    let mut conn = redis.conn();
    let seeded: i64 = invocation.invoke_async(&mut conn).await?;
    Ok(seeded == 1)
}

pub async fn get(redis: &Redis, id: &str) -> RedisResult<Option<Product>> {
    let mut conn = redis.conn();
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(catalog(redis).product(id))
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
        pipe.cmd("HGETALL").arg(catalog(redis).product(id));
    }
    let mut conn = redis.conn();
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
    Ok(hashes.into_iter().map(Product::from_hash).collect())
}

/// Every product, by id.
pub async fn list(redis: &Redis) -> RedisResult<Vec<Product>> {
    let mut conn = redis.conn();
    let mut ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(catalog(redis).products())
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

/// Creates a product with its stock; [`Written::Same`] when it exists exactly as this would
/// make it, [`Written::Exists`] when the id is taken otherwise.
pub async fn create(redis: &Redis, product: &Product) -> RedisResult<Written> {
    let mut conn = redis.conn();
    let written = WRITE
        .key(catalog(redis).products())
        .key(catalog(redis).product(&product.id))
        .arg("create")
        .arg(&product.id)
        .arg(&product.name)
        .arg(product.price)
        .arg(product.stock)
        .invoke_async(&mut conn)
        .await?;
    replicated(redis, written).await
}

/// A write's outcome, once it is on enough replicas.
async fn replicated(redis: &Redis, written: Written) -> RedisResult<Written> {
    // A replayed answer or an unchanged product waits too: the first write may be another
    // process's, not yet on the replicas.
    if matches!(
        written,
        Written::Created { .. }
            | Written::Updated { .. }
            | Written::Same { .. }
            | Written::Adjusted { .. }
    ) {
        redis.replicated(catalog(redis)).await?;
    }
    Ok(written)
}

/// Sets a product's name and price, creating it (with `stock`, or 0) when it does not exist.
/// Stock is set only with `expected`, the version an `If-Match` named, and only while it still
/// names the product as it is.
pub async fn edit(
    redis: &Redis,
    id: &str,
    name: &str,
    price: u64,
    stock: Option<i64>,
    expected: Option<&str>,
) -> RedisResult<Written> {
    let mut conn = redis.conn();
    let written = WRITE
        .key(catalog(redis).products())
        .key(catalog(redis).product(id))
        .arg("edit")
        .arg(id)
        .arg(name)
        .arg(price)
        .arg(stock.map(|s| s.to_string()).unwrap_or_default())
        .arg(expected.unwrap_or_default())
        .invoke_async(&mut conn)
        .await?;
    replicated(redis, written).await
}

/// An adjustment's `Idempotency-Key` (already scoped to its caller), the request's fingerprint,
/// and how long the key is kept.
#[derive(Debug, Clone)]
pub struct AdjustmentKey {
    pub key: String,
    pub fingerprint: String,
    pub ttl_secs: u64,
}

/// Moves a product's stock by `delta` (a delivery received, a count corrected), atomically with
/// reservations; refused when it would leave 0..=[`MAX_STOCK`]. With a `key`, the key and the
/// answer are recorded in the same step: a second call with it moves nothing and gets the first
/// answer ([`Written::Adjusted`] `replayed`), or [`Written::KeyReused`] for another request.
pub async fn adjust_stock(
    redis: &Redis,
    id: &str,
    delta: i64,
    key: Option<&AdjustmentKey>,
) -> RedisResult<Written> {
    let mut conn = redis.conn();
    let mut invocation = WRITE.prepare_invoke();
    invocation
        .key(catalog(redis).products())
        .key(catalog(redis).product(id))
        .arg("adjust")
        .arg(delta)
        .arg(MAX_STOCK);
    if let Some(key) = key {
        invocation
            .key(catalog(redis).idempotency(&format!("stock:{}", key.key)))
            .arg(&key.fingerprint)
            .arg(key.ttl_secs);
    }
    let mut written = invocation.invoke_async(&mut conn).await?;
    if let Written::Adjusted { product, .. } = &mut written {
        product.id = id.to_owned();
    }
    replicated(redis, written).await
}

/// Removes a product; false when there was none.
pub async fn delete(redis: &Redis, id: &str) -> RedisResult<bool> {
    let mut conn = redis.conn();
    let (removed, _): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("SREM")
        .arg(catalog(redis).products())
        .arg(id)
        .cmd("DEL")
        .arg(catalog(redis).product(id))
        .query_async(&mut conn)
        .await?;
    if removed > 0 {
        redis.replicated(catalog(redis)).await?;
    }
    Ok(removed > 0)
}

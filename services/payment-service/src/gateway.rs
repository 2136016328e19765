//! The test payment gateway: what a card processor does, for test cards only.
//!
//! Tokens follow the common test-card convention: `tok_visa` and `tok_mastercard` succeed,
//! `tok_chargeDeclined` is declined. Charges, refunds and voids are recorded in Redis keyed by an
//! idempotency key (the order id), as a real processor's idempotency keys do, so calling again
//! with the same key never moves money twice. A void gives the payment up: a charge under that key
//! is refused afterwards, and a void after a charge is refused (like cancelling a payment intent),
//! so "failed" and "charged" can never both be true of one payment. `PAYMENT_FAILURE_RATE` makes
//! charges fail transiently. The ledger has a hash slot of its own; an answer is given only once
//! what it records is on enough replicas (`REDIS_WAIT_REPLICAS`), as a real processor answers only
//! what it has durably recorded.

use fulfillment_core::Redis;
use fulfillment_events::events::{PAYMENT_TOKENS, now_rfc3339};
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_redis::script_reply::Tagged;
use std::sync::LazyLock;

const DECLINED_TOKEN: &str = "tok_chargeDeclined";

static CHARGE: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::new("gateway_charge", include_str!("scripts/gateway_charge.lua"))
});
static VOID: LazyLock<BatchedScript> =
    LazyLock::new(|| BatchedScript::new("gateway_void", include_str!("scripts/gateway_void.lua")));

fulfillment_redis::script_tags! {
    /// What `gateway_charge.lua` answers.
    enum ChargeTag ("gateway_charge.lua") { Charged = "charged", Voided = "voided" }
}

fulfillment_redis::script_tags! {
    /// What `gateway_void.lua` answers.
    enum VoidTag ("gateway_void.lua") { Voided = "voided", Charged = "charged" }
}

/// Why a charge did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeError {
    /// The card was declined: final.
    Declined,
    /// The payment was voided (given up by another attempt): final, nothing charged.
    Voided,
    /// The gateway could not be reached or failed: may pass on another attempt.
    Unavailable(String),
}

impl ChargeError {
    /// The `reason` of `PaymentFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            ChargeError::Declined => "card_declined",
            ChargeError::Voided | ChargeError::Unavailable(_) => "payment_unavailable",
        }
    }
}

/// What a void found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Void {
    /// The payment is given up; nothing was or will be charged under its key.
    Voided,
    /// A charge under the key went through first: the payment is charged.
    AlreadyCharged,
}

#[derive(Debug, Clone)]
pub struct TestGateway {
    redis: Redis,
    failure_rate: f64,
}

impl TestGateway {
    pub fn new(redis: Redis, failure_rate: f64) -> Self {
        Self {
            redis,
            failure_rate,
        }
    }

    /// Charges `amount` on `token`, once per `idempotency_key`, unless the payment was voided.
    pub async fn charge(
        &self,
        idempotency_key: &str,
        payment_id: &str,
        amount: u64,
        token: &str,
    ) -> Result<(), ChargeError> {
        if self.failure_rate > 0.0 && rand::random::<f64>() < self.failure_rate {
            return Err(ChargeError::Unavailable(
                "injected gateway failure (PAYMENT_FAILURE_RATE)".into(),
            ));
        }
        if token == DECLINED_TOKEN || !PAYMENT_TOKENS.contains(&token) {
            return Err(ChargeError::Declined);
        }
        let record = serde_json::json!({
            "payment_id": payment_id, "amount": amount, "token": token, "at": now_rfc3339(),
        });
        let reply = self
            .call(&CHARGE, idempotency_key, &record.to_string())
            .await
            .map_err(ChargeError::Unavailable)?;
        // An answer no tag names is a bug, said loudly; its outcome is unknown, so the charge is
        // tried again under the same idempotency key, which never moves money twice.
        let tag = ChargeTag::of(&reply).map_err(|e| {
            tracing::error!(error = %e, "the gateway's charge answered an unknown outcome");
            ChargeError::Unavailable(e.to_string())
        })?;
        match tag {
            ChargeTag::Charged => Ok(()),
            ChargeTag::Voided => Err(ChargeError::Voided),
        }
    }

    /// Gives the payment under `idempotency_key` up, unless a charge went through first.
    pub async fn void(&self, idempotency_key: &str, payment_id: &str) -> Result<Void, String> {
        let record = serde_json::json!({"payment_id": payment_id, "at": now_rfc3339()});
        let reply = self
            .call(&VOID, idempotency_key, &record.to_string())
            .await?;
        let tag = VoidTag::of(&reply).map_err(|e| {
            tracing::error!(error = %e, "the gateway's void answered an unknown outcome");
            e.to_string()
        })?;
        match tag {
            VoidTag::Voided => Ok(Void::Voided),
            VoidTag::Charged => Ok(Void::AlreadyCharged),
        }
    }

    /// Refunds the charge made under `idempotency_key`, once.
    pub async fn refund(
        &self,
        idempotency_key: &str,
        payment_id: &str,
        amount: u64,
    ) -> Result<(), String> {
        let record = serde_json::json!({
            "payment_id": payment_id, "amount": amount, "at": now_rfc3339(),
        });
        let gateway = &self.redis.layout().gateway;
        let mut conn = self.redis.conn();
        redis::cmd("HSETNX")
            .arg(gateway.gateway_refunds())
            .arg(idempotency_key)
            .arg(record.to_string())
            .query_async::<u8>(&mut conn)
            .await
            .map_err(|e| format!("gateway unreachable: {e}"))?;
        self.recorded().await
    }

    /// Once what the gateway recorded is on enough replicas.
    async fn recorded(&self) -> Result<(), String> {
        self.redis
            .replicated(&self.redis.layout().gateway)
            .await
            .map_err(|e| format!("gateway record not on replicas: {e}"))
    }

    async fn call(
        &self,
        script: &'static BatchedScript,
        key: &str,
        record: &str,
    ) -> Result<Tagged, String> {
        let gateway = &self.redis.layout().gateway;
        let mut call = ScriptCall::new();
        call.key(gateway.gateway_charges())
            .key(gateway.gateway_voids())
            .arg(key)
            .arg(record);
        let reply = self
            .redis
            .run_script(script, gateway, call)
            .await
            .map_err(|e| format!("gateway unreachable: {e}"))?;
        self.recorded().await?;
        Ok(reply)
    }
}

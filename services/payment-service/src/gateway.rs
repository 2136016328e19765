//! The test payment gateway: what a card processor does, for test cards only.
//!
//! Tokens follow the common test-card convention: `tok_visa` and `tok_mastercard` succeed,
//! `tok_chargeDeclined` is declined. Charges and refunds are recorded in Redis keyed by an
//! idempotency key (the order id), as a real processor's idempotency keys do, so calling again
//! with the same key never moves money twice. `PAYMENT_FAILURE_RATE` makes calls fail transiently.

use fulfillment_core::events::{PAYMENT_TOKENS, now_rfc3339};
use fulfillment_core::{Redis, keys};

const DECLINED_TOKEN: &str = "tok_chargeDeclined";

/// Why a charge did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeError {
    /// The card was declined: final.
    Declined,
    /// The gateway could not be reached or failed: may pass on another attempt.
    Unavailable(String),
}

impl ChargeError {
    /// The `reason` of `PaymentFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            ChargeError::Declined => "card_declined",
            ChargeError::Unavailable(_) => "payment_unavailable",
        }
    }
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

    /// Charges `amount` on `token`, once per `idempotency_key`.
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
        self.record(
            &keys::gateway_charges(),
            idempotency_key,
            &record.to_string(),
        )
        .await
        .map_err(ChargeError::Unavailable)
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
        self.record(
            &keys::gateway_refunds(),
            idempotency_key,
            &record.to_string(),
        )
        .await
    }

    async fn record(&self, ledger: &str, key: &str, record: &str) -> Result<(), String> {
        let mut conn = self.redis.conn();
        redis::cmd("HSETNX")
            .arg(ledger)
            .arg(key)
            .arg(record)
            .query_async::<u8>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("gateway unreachable: {e}"))
    }
}

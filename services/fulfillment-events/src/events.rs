//! The event schema of `order_events` and its encoding as stream entry fields.
//!
//! An entry is flat string fields (`event_id`, `type`, `order_id`, `occurred_at`, `payload`,
//! optional `traceparent`, `producer`, `replay_for`, `projected`); `payload` is a JSON object whose shape is
//! fixed by `type`. Decoding never panics: anything that does not fit is a [`DecodeError`], which
//! the runtime treats as permanent (the entry goes to the dead-letter stream at once).

use crate::states::NotificationKind;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

/// Field names of a stream entry.
pub mod field {
    pub const EVENT_ID: &str = "event_id";
    pub const TYPE: &str = "type";
    pub const ORDER_ID: &str = "order_id";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const PAYLOAD: &str = "payload";
    pub const TRACEPARENT: &str = "traceparent";
    /// Which service and consumer published the entry (`inventory/inventory-1`).
    pub const PRODUCER: &str = "producer";
    /// Set on an entry replayed from the DLQ: only this group handles it, the others skip it.
    pub const REPLAY_FOR: &str = "replay_for";
    /// `1` on an entry its producer already recorded in the order's status and history (see
    /// `projection`): the order group skips it.
    pub const PROJECTED: &str = "projected";
    /// Set by the script that published the entry, to the version of the routing table
    /// ([`crate::routing::VERSION`]) by which it put the entry in the pending list of every group
    /// that acts on it.
    pub const ROUTED: &str = "routed";
}

/// Each event type is named after its payload struct: one list makes the enum and ties each
/// payload to its type ([`Payload`]).
macro_rules! event_types {
    ($($name:ident),* $(,)?) => {
        /// Every event type on the stream.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventType { $($name),* }

        $(impl Payload for $name { const TYPE: EventType = EventType::$name; })*

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$name => stringify!($name)),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $(stringify!($name) => Some(EventType::$name),)* _ => None }
            }
        }
    };
}

event_types!(
    OrderPlaced,
    StockReserved,
    StockFailed,
    PaymentProcessed,
    PaymentFailed,
    ShipmentPrepared,
    OrderCancelled,
    StockReleased,
    PaymentRefunded,
    NotificationSent,
    NotificationFailed,
    EventDeadLettered,
);

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payment tokens an order may carry, after the common test-card convention: the first is the
/// default; `tok_visa` and `tok_mastercard` succeed, `tok_chargeDeclined` is declined.
pub const PAYMENT_TOKENS: &[&str] = &["tok_visa", "tok_mastercard", "tok_chargeDeclined"];

/// One line of an order. Amounts are integer minor units (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub product_id: String,
    pub quantity: u32,
    pub unit_price: u64,
}

/// A product and quantity, as reserved or released by inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<LineItem>,
    pub total: u64,
    pub payment_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReserved {
    pub items: Vec<StockLine>,
    /// Carried so payment needs no lookup of the order.
    pub amount: u64,
    pub payment_token: String,
    pub customer_email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockFailed {
    /// `insufficient_stock` or `unknown_product`.
    pub reason: String,
    pub product_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentProcessed {
    pub payment_id: String,
    pub amount: u64,
    pub customer_email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// `card_declined` or `payment_unavailable`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentPrepared {
    pub label_id: String,
    pub tracking_number: String,
    pub customer_email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
    pub customer_email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReleased {
    pub items: Vec<StockLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: String,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationSent {
    /// `order_confirmed` or `order_cancelled`.
    pub kind: NotificationKind,
    pub to: String,
}

/// The relay refused the recipient for good (an SMTP 5xx): not retried; the order keeps its
/// status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationFailed {
    pub kind: NotificationKind,
    pub to: String,
    /// The relay's answer.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDeadLettered {
    pub group: String,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub deliveries: u64,
}

/// A payload type and the event type it is the payload of (each payload struct is named after
/// its type, and `event_types!` implements this for each): [`Event::of`] and
/// `Delivery::follow_up` take the type from the payload, so an event can never carry another
/// type's payload.
pub trait Payload: Serialize + DeserializeOwned {
    const TYPE: EventType;
}

/// Why an entry could not be decoded. Always permanent: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field {0} is missing")]
    MissingField(&'static str),
    #[error("field {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("field event_id is not a UUID: {0}")]
    BadEventId(String),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("payload of {event_type} does not fit its schema: {reason}")]
    BadPayload {
        event_type: EventType,
        reason: String,
    },
}

/// A decoded stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub order_id: String,
    pub occurred_at: String,
    pub payload: serde_json::Value,
    pub traceparent: Option<String>,
    pub producer: Option<String>,
    pub replay_for: Option<String>,
    /// Recorded in the order's projection by its producer as it was published.
    pub projected: bool,
}

impl Event {
    /// A new event with a fresh id, stamped now.
    pub fn new(event_type: EventType, order_id: &str, payload: &impl Serialize) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type,
            order_id: order_id.to_owned(),
            occurred_at: now_rfc3339(),
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
            traceparent: None,
            producer: None,
            replay_for: None,
            projected: false,
        }
    }

    /// A new event of the payload's own type.
    pub fn of<P: Payload>(order_id: &str, payload: &P) -> Self {
        Self::new(P::TYPE, order_id, payload)
    }

    pub fn with_producer(mut self, producer: &str) -> Self {
        self.producer = Some(producer.to_owned());
        self
    }

    /// The payload in its typed form.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_value(self.payload.clone()).map_err(|e| DecodeError::BadPayload {
            event_type: self.event_type,
            reason: e.to_string(),
        })
    }

    /// The entry's fields, in the order they are written.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (field::EVENT_ID, self.event_id.to_string()),
            (field::TYPE, self.event_type.as_str().to_owned()),
            (field::ORDER_ID, self.order_id.clone()),
            (field::OCCURRED_AT, self.occurred_at.clone()),
            (field::PAYLOAD, self.payload.to_string()),
        ];
        for (name, value) in [
            (field::TRACEPARENT, &self.traceparent),
            (field::PRODUCER, &self.producer),
            (field::REPLAY_FOR, &self.replay_for),
        ] {
            if let Some(v) = value {
                fields.push((name, v.clone()));
            }
        }
        if self.projected {
            fields.push((field::PROJECTED, "1".to_owned()));
        }
        fields
    }

    /// The fields as a JSON array of alternating names and values, the form the Lua scripts
    /// store so they can publish the same entry again.
    pub fn to_fields_json(&self) -> String {
        fields_json(&self.to_fields())
    }

    /// Like [`Event::to_fields_json`] without `payload`, for scripts that write the payload
    /// themselves because only they know it (which product was short, what was reserved).
    pub fn header_fields_json(&self) -> String {
        let mut fields = self.to_fields();
        fields.retain(|(name, _)| *name != field::PAYLOAD);
        fields_json(&fields)
    }

    /// Decodes what [`Event::to_fields_json`] (or a script storing an event) wrote.
    pub fn from_fields_json(json: &str) -> Result<Self, DecodeError> {
        let flat: Vec<String> =
            serde_json::from_str(json).map_err(|_| DecodeError::MissingField(field::TYPE))?;
        let fields: Vec<(Vec<u8>, Vec<u8>)> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone().into_bytes(), pair[1].clone().into_bytes()))
            .collect();
        Self::from_field_list(&fields)
    }

    /// Decodes an entry's raw fields. Unknown extra fields are ignored.
    pub fn from_fields(fields: &HashMap<String, Vec<u8>>) -> Result<Self, DecodeError> {
        Self::decode_with(|name| fields.get(name).map(Vec::as_slice))
    }

    /// Like [`Event::from_fields`] on the field list as read from the stream; the first of a
    /// repeated name wins, as in a stream entry written by this project there is none.
    pub fn from_field_list(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Self, DecodeError> {
        Self::decode_with(|name| field_value(fields, name))
    }

    fn decode_with<'f>(
        get: impl Fn(&'static str) -> Option<&'f [u8]>,
    ) -> Result<Self, DecodeError> {
        let text = |name: &'static str| -> Result<Option<String>, DecodeError> {
            match get(name) {
                None => Ok(None),
                Some(bytes) => std::str::from_utf8(bytes)
                    .map(|t| Some(t.to_owned()))
                    .map_err(|_| DecodeError::NotUtf8(name)),
            }
        };
        let required = |name: &'static str| -> Result<String, DecodeError> {
            text(name)?.ok_or(DecodeError::MissingField(name))
        };
        let event_id_text = required(field::EVENT_ID)?;
        let event_id =
            Uuid::parse_str(&event_id_text).map_err(|_| DecodeError::BadEventId(event_id_text))?;
        let type_text = required(field::TYPE)?;
        let event_type = EventType::parse(&type_text).ok_or(DecodeError::UnknownType(type_text))?;
        let order_id = required(field::ORDER_ID)?;
        let payload_text = required(field::PAYLOAD)?;
        let payload: serde_json::Value =
            serde_json::from_str(&payload_text).map_err(|e| DecodeError::BadPayload {
                event_type,
                reason: e.to_string(),
            })?;
        if !payload.is_object() {
            return Err(DecodeError::BadPayload {
                event_type,
                reason: "payload is not a JSON object".into(),
            });
        }
        Ok(Self {
            event_id,
            event_type,
            order_id,
            occurred_at: text(field::OCCURRED_AT)?.unwrap_or_default(),
            payload,
            traceparent: text(field::TRACEPARENT)?,
            producer: text(field::PRODUCER)?,
            replay_for: text(field::REPLAY_FOR)?,
            projected: get(field::PROJECTED) == Some(b"1".as_slice()),
        })
    }
}

/// The value of field `name` in a field list as read from the stream.
pub fn field_value<'f>(fields: &'f [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'f [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// Fields as a JSON array of alternating names and values.
pub fn fields_json(fields: &[(&'static str, String)]) -> String {
    let flat: Vec<&str> = fields.iter().flat_map(|(k, v)| [*k, v.as_str()]).collect();
    serde_json::to_string(&flat).unwrap_or_default()
}

/// Now, as RFC 3339 with millisecond precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.replace_nanosecond((now.nanosecond() / 1_000_000) * 1_000_000);
    millis
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(event: &Event) -> HashMap<String, Vec<u8>> {
        event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect()
    }

    #[test]
    fn an_event_survives_encoding() {
        let placed = OrderPlaced {
            customer_id: "c1".into(),
            customer_email: "c1@example.com".into(),
            items: vec![LineItem {
                product_id: "product-A".into(),
                quantity: 2,
                unit_price: 1999,
            }],
            total: 3998,
            payment_token: "tok_visa".into(),
        };
        let mut event = Event::new(EventType::OrderPlaced, "o-1", &placed);
        event.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let decoded = Event::from_fields(&raw(&event)).expect("decodes");
        assert_eq!(decoded, event);
        assert_eq!(decoded.payload_as::<OrderPlaced>().expect("typed"), placed);
        let stored = Event::from_fields_json(&event.to_fields_json()).expect("from stored JSON");
        assert_eq!(stored, event);
    }

    #[test]
    fn every_type_name_round_trips() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::parse("orderplaced"), None);
    }

    #[test]
    fn broken_entries_are_decode_errors() {
        let good = raw(&Event::new(
            EventType::OrderPlaced,
            "o-1",
            &serde_json::json!({}),
        ));
        let mut missing = good.clone();
        missing.remove("type");
        assert_eq!(
            Event::from_fields(&missing),
            Err(DecodeError::MissingField("type"))
        );
        let mut bad_json = good.clone();
        bad_json.insert("payload".into(), b"{not json".to_vec());
        assert!(matches!(
            Event::from_fields(&bad_json),
            Err(DecodeError::BadPayload { .. })
        ));
        let mut bad_id = good.clone();
        bad_id.insert("event_id".into(), b"42".to_vec());
        assert!(matches!(
            Event::from_fields(&bad_id),
            Err(DecodeError::BadEventId(_))
        ));
        let mut not_utf8 = good;
        not_utf8.insert("order_id".into(), vec![0xff, 0xfe]);
        assert_eq!(
            Event::from_fields(&not_utf8),
            Err(DecodeError::NotUtf8("order_id"))
        );
    }

    #[test]
    fn fields_json_is_alternating_names_and_values() {
        let event = Event::new(EventType::StockFailed, "o-9", &serde_json::json!({"a": 1}));
        let flat: Vec<String> = serde_json::from_str(&event.to_fields_json()).expect("json");
        assert_eq!(flat[0], "event_id");
        assert_eq!(flat[3], "StockFailed");
        assert_eq!(flat.len() % 2, 0);
    }
}

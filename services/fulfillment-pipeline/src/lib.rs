//! The pipeline's composition, in one small place: which handler serves each service's group,
//! built as that service's binary builds it, and the settings services keep to themselves. The
//! retry worker, `fulfillment up` and the tests all take their handlers from here, so a service
//! added to [`Service`] cannot be missed by one of them (the `match` is exhaustive).

use fulfillment_core::settings::{Env, SettingsError};
use fulfillment_core::{EventHandler, Redis};
use fulfillment_events::Service;
use inventory_service::Instability;
use notification_service::MailSettings;
use payment_service::ChargeSettings;
use std::sync::Arc;

/// The settings that services keep to themselves: inventory's failure injection, payment's
/// charge retries, notification's mail relay. Whoever builds their handlers (their binaries, the
/// retry worker, `fulfillment up`) reads these beside [`Settings`].
#[derive(Debug, Clone, Default)]
pub struct ServiceSettings {
    pub inventory: Instability,
    pub payment: ChargeSettings,
    pub notification: MailSettings,
}

impl ServiceSettings {
    pub fn read(env: &Env) -> Result<Self, SettingsError> {
        Ok(Self {
            inventory: Instability::read(env)?,
            payment: ChargeSettings::read(env)?,
            notification: MailSettings::read(env)?,
        })
    }
}

/// The handler of a service's group, built as the service's binary builds it: the one registry
/// of services and handlers (the retry worker and `fulfillment up` both need every one).
pub fn handler(service: Service, redis: &Redis, own: &ServiceSettings) -> Arc<dyn EventHandler> {
    let redis = redis.clone();
    match service {
        Service::Order => Arc::new(order_projection::handler(redis)),
        Service::Inventory => Arc::new(inventory_service::handler(redis, own.inventory)),
        Service::Payment => Arc::new(payment_service::handler(redis, own.payment)),
        Service::Shipping => Arc::new(shipping_service::handler(redis)),
        Service::Notification => Arc::new(notification_service::handler(redis, &own.notification)),
    }
}

/// Every group's handler.
pub fn all_handlers(redis: &Redis, own: &ServiceSettings) -> Vec<Arc<dyn EventHandler>> {
    Service::ALL
        .iter()
        .map(|s| handler(*s, redis, own))
        .collect()
}

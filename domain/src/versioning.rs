//! Event schema versions and upcasting.
//!
//! Every stored event carries the version of its payload's shape. An event enum states the
//! current version of each of its types ([`Versioned::current_version`]) and knows how to bring
//! an older stored payload to the current shape ([`Versioned::upcast`]). The write side loads
//! through cqrs-es with [`upcasters`]; the read side decodes with [`decode`]. Both run the same
//! function, so an old event means the same thing to an aggregate and to a projection.

use std::marker::PhantomData;

use cqrs_es::{
    DomainEvent,
    persist::{EventUpcaster, SerializedEvent},
};
use serde_json::Value;

/// An event enum whose payload shapes are versioned.
pub trait Versioned: DomainEvent + 'static {
    /// The version written today for `event_type`, `None` for a type this enum does not know.
    fn current_version(event_type: &str) -> Option<&'static str>;

    /// Rewrites a stored payload (the whole externally tagged value, `{"Variant": {..}}`) of
    /// an older `event_version` into the current shape. Called only when the stored version
    /// differs from [`Versioned::current_version`]; an unknown version is returned unchanged
    /// and then fails to decode with a clear error.
    fn upcast(event_type: &str, event_version: &str, payload: Value) -> Value;
}

/// Decodes a stored payload of any known version.
///
/// # Errors
/// The payload does not match the current shape after upcasting.
pub fn decode<E: Versioned>(
    event_type: &str,
    event_version: &str,
    payload: Value,
) -> Result<E, serde_json::Error> {
    let payload = match E::current_version(event_type) {
        Some(current) if current != event_version => E::upcast(event_type, event_version, payload),
        _ => payload,
    };
    serde_json::from_value(payload)
}

/// The cqrs-es upcaster over [`Versioned::upcast`], for the write side's event store.
pub fn upcasters<E: Versioned>() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(Upcaster::<E>(PhantomData))]
}

struct Upcaster<E>(PhantomData<fn() -> E>);

impl<E: Versioned> EventUpcaster for Upcaster<E> {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        E::current_version(event_type).is_some_and(|current| current != event_version)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let payload = std::mem::take(&mut event.payload);
        event.payload = E::upcast(&event.event_type, &event.event_version, payload);
        if let Some(current) = E::current_version(&event.event_type) {
            event.event_version = current.to_string();
        }
        event
    }
}

/// A command's name, recorded in event metadata (`command`) so an auditor sees what was asked,
/// not only what happened. Never derived from `Debug`, which could print inputs.
pub trait CommandName {
    /// `Verify`, `Register`, …
    fn name(&self) -> &'static str;
}

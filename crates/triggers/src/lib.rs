//! Triggers: Toggl webhook deliveries received, verified, classified and stored durably.
//!
//! Invariant: a delivery is answered 2xx only after its event is durably stored (or found to be
//! a duplicate of a stored one); a delivery whose signature does not verify is never stored.

pub mod classify;
pub mod envelope;
pub mod leader;
pub mod metrics;
pub mod poll;
pub mod receiver;
pub mod signature;
pub mod subscriptions;

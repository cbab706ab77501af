//! Vocabulary shared by every Ordo role: ids, topics, stored messages and the
//! client protocol codecs (MQTT and WAMP).
//!
//! Nothing in this crate makes a protocol decision or touches I/O: codecs parse
//! from byte buffers and return typed errors, ids are newtypes.
#![warn(missing_docs)]

pub mod cluster;
pub mod ids;
pub mod message;
pub mod mqtt;
pub mod proto;
#[cfg(feature = "quic")]
pub mod quic;
pub mod record;
pub mod rng;
#[cfg(feature = "rocks")]
pub mod rocks;
pub mod topic;
pub mod wamp;

pub use ids::{AdvanceId, PermanentId};
pub use message::{MqttProperties, Payload, StoredMessage};

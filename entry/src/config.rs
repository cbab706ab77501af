//! Configuration: a TOML file, overridden by command-line flags.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything an entry needs to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the MQTT listener.
    pub mqtt: SocketAddr,
    /// Address of the WAMP WebSocket listener.
    pub wamp: SocketAddr,
    /// Address of the WAMP RawSocket (TCP) listener.
    pub wamp_rawsocket: SocketAddr,
    /// Folder for the node's data (RocksDB).
    pub data_dir: PathBuf,
    /// WAMP realm that MQTT clients publish into and subscribe from.
    pub mqtt_realm: String,
    /// Largest MQTT packet accepted, in bytes; larger packets close the connection.
    pub max_packet_size: usize,
    /// Largest WAMP message accepted, in bytes.
    pub max_wamp_message_size: usize,
    /// Most messages per advance segment (one fsync each).
    pub max_batch: usize,
    /// Deliveries a session may fall behind before it is disconnected.
    pub session_queue: usize,
    /// Unacknowledged QoS 1 messages in flight per MQTT connection.
    pub mqtt_inflight: usize,
    /// This entry's owner id in advance ids.
    pub owner: u64,
    /// Let WAMP sessions join without authentication (authrole `anonymous`).
    pub allow_anonymous: bool,
    /// WAMP users (ticket, WAMP-CRA) and their per-realm, per-URI-prefix permissions.
    pub users: Vec<crate::wamp::auth::User>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            wamp: SocketAddr::from(([127, 0, 0, 1], 9000)),
            wamp_rawsocket: SocketAddr::from(([127, 0, 0, 1], 9001)),
            data_dir: PathBuf::from("ordo-data"),
            mqtt_realm: "realm1".into(),
            max_packet_size: 1 << 20,
            max_wamp_message_size: 1 << 20,
            max_batch: 4096,
            session_queue: 65_536,
            mqtt_inflight: 1024,
            owner: 1,
            allow_anonymous: true,
            users: Vec::new(),
        }
    }
}

impl Config {
    /// Return the default configuration as a commented TOML document.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Config::default()).unwrap_or_default();
        format!(
            "# Ordo entry configuration. Every key is optional; flags override the file.\n\
             # mqtt/wamp/wamp_rawsocket: listen addresses. data_dir: RocksDB folder.\n\
             # mqtt_realm: the WAMP realm MQTT clients share.\n\
             # max_batch: messages per advance segment (one fsync each).\n\
             # session_queue: deliveries a slow session may lag before it is closed.\n\
             # allow_anonymous, [[users]]: WAMP ticket / WAMP-CRA users and permissions (docs/wamp.md).\n\n{body}"
        )
    }
}

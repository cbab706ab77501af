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
    /// Address of the WAMP WebSocket listener; it also serves MQTT over WebSocket to
    /// clients that offer subprotocol `mqtt` (and no WAMP one).
    pub wamp: SocketAddr,
    /// Address of a listener for MQTT over WebSocket only (subprotocol `mqtt`); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_ws: Option<SocketAddr>,
    /// Address of the WAMP RawSocket (TCP) listener.
    pub wamp_rawsocket: SocketAddr,
    /// Address of a listener for MQTT over TLS (conventionally port 8883); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_tls: Option<SocketAddr>,
    /// Address of a WAMP WebSocket listener over TLS (`wss://`); like `wamp`, it also
    /// serves MQTT over WebSocket (subprotocol `mqtt`). Off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wamp_tls: Option<SocketAddr>,
    /// Address of a listener for MQTT over WebSocket over TLS only; off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_ws_tls: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) of the TLS listeners; required when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
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
    /// This entry's owner id in advance ids (its `entry` id in a cluster file).
    pub owner: u64,
    /// Longest keep alive an MQTT 5 client may ask for, in seconds (0: any); a longer or
    /// zero request gets this value back as Server Keep Alive.
    pub mqtt_max_keep_alive: u16,
    /// MQTT topic filters no client may subscribe to (SUBACK 0x80), e.g. the
    /// `test/nosubscribe` of conformance suites.
    pub mqtt_deny_subscribe: Vec<String>,
    /// Add the permanent id as user property `ordo-id` to MQTT 5 deliveries.
    pub mqtt_ordo_id: bool,
    /// Session Expiry Interval (seconds) of an MQTT 5 CONNECT that carries none; the
    /// specification's default is 0 (the session ends with the connection).
    pub mqtt_default_session_expiry: u32,
    /// How often a connected persistent MQTT session writes its resume point to the
    /// log (milliseconds). After a crash its client gets at most this much again.
    pub mqtt_session_checkpoint_ms: u64,
    /// Write a snapshot of the router's log-derived state (retained values, parked
    /// publishes, wills, persistent MQTT sessions) every this many messages and on a
    /// clean stop, so a start replays only the log after it. 0: never write one.
    pub router_snapshot_every: u64,
    /// In a cluster: segments this entry keeps in flight (begun, not yet resolved). Fewer means
    /// larger segments and more throughput on 2 cores, more means a slow fsync stalls less
    /// (docs/performance.md).
    pub cluster_segments_in_flight: usize,
    /// In a cluster: while a segment is in flight, how long (microseconds) publishes may wait
    /// to fill the next one before it opens anyway; 0 opens it at once. It caps how many
    /// segments a lightly loaded entry sends the cluster. Usually the segment in flight
    /// resolves first and the next opens then, so this bounds what a slow segment holds up
    /// rather than adding to every ack (docs/performance.md, eleventh day).
    pub cluster_segment_linger_us: u64,
    /// Cluster file: when set, join that cluster as entry `owner` instead of running standalone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Let WAMP sessions join, and MQTT clients connect, without credentials (every permission).
    pub allow_anonymous: bool,
    /// Users (WAMP ticket and WAMP-CRA; MQTT username = authid, password = ticket) and
    /// their per-realm, per-URI-prefix permissions (MQTT topics in `mqtt_realm`, `/` as `.`).
    pub users: Vec<crate::wamp::auth::User>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            wamp: SocketAddr::from(([127, 0, 0, 1], 9000)),
            mqtt_ws: None,
            wamp_rawsocket: SocketAddr::from(([127, 0, 0, 1], 9001)),
            mqtt_tls: None,
            wamp_tls: None,
            mqtt_ws_tls: None,
            tls_cert: None,
            tls_key: None,
            data_dir: PathBuf::from("ordo-data"),
            mqtt_realm: "realm1".into(),
            max_packet_size: 1 << 20,
            max_wamp_message_size: 1 << 20,
            max_batch: 4096,
            session_queue: 65_536,
            mqtt_inflight: 1024,
            owner: 1,
            mqtt_max_keep_alive: 0,
            mqtt_deny_subscribe: Vec::new(),
            mqtt_ordo_id: true,
            mqtt_default_session_expiry: 0,
            mqtt_session_checkpoint_ms: 1000,
            router_snapshot_every: 1_000_000,
            cluster_segments_in_flight: 4,
            cluster_segment_linger_us: 15_000,
            cluster: None,
            metrics: None,
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
             # The wamp port also serves MQTT over WebSocket (subprotocol mqtt); for a port of its\n\
             # own set e.g. mqtt_ws = \"127.0.0.1:8083\" (off by default).\n\
             # TLS listeners, off by default, all with one certificate (PEM files):\n\
             #   tls_cert = \"cert.pem\"  tls_key = \"key.pem\"  (`ordo-entry dev-cert --out DIR` makes a pair)\n\
             #   mqtt_tls = \"127.0.0.1:8883\"     MQTT over TLS\n\
             #   wamp_tls = \"127.0.0.1:9443\"     wss://, WAMP and MQTT over WebSocket (as the wamp port)\n\
             #   mqtt_ws_tls = \"127.0.0.1:8084\"  MQTT over wss:// only\n\
             # mqtt_realm: the WAMP realm MQTT clients share.\n\
             # max_batch: messages per advance segment (one fsync each).\n\
             # session_queue: deliveries a slow session may lag before it is closed.\n\
             # mqtt_session_checkpoint_ms: how often a live persistent MQTT session is saved.\n\
             # router_snapshot_every: messages between router snapshots (start-up replays only the\n\
             # log after the newest); also written on a clean stop. 0: none.\n\
             # allow_anonymous, [[users]]: WAMP ticket / WAMP-CRA users and permissions (docs/wamp.md);\n\
             # a user's optional salt, iterations (1000), keylen (32) make its WAMP-CRA salted.\n\
             # MQTT username = authid, password = ticket, topics checked in mqtt_realm (docs/mqtt.md).\n\n{body}"
        )
    }
}

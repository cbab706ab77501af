//! Prometheus metrics of a node, served at `GET /metrics` on `--metrics ADDR`.
//!
//! Names are `ordo_<role>_<what>`; every node also exports its mesh counters
//! and its storage timings. Encoding is the `prometheus-client` crate (the
//! Prometheus project's own Rust client); the HTTP side is a minimal GET
//! responder, because a metrics scrape needs nothing more.

use super::mesh::Mesh;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A node's registry plus the metrics every role shares.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Seconds each durable commit (one fsync) took.
    pub persist_seconds: Histogram,
    /// Storage errors (the node stops after the first).
    pub storage_errors: Counter,
    mesh_dropped: Gauge,
    mesh_received: Gauge,
    mesh_connects: Gauge,
    /// (commits, total microseconds), for the heartbeat's mean response time.
    persist_totals: Arc<(AtomicU64, AtomicU64)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Latency buckets from 50 µs to about 3 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

impl Metrics {
    /// Create a registry for a node of `role` (`entry`, `ndb`, `sync`).
    pub fn new(role: &str) -> Metrics {
        let mut registry = Registry::with_prefix(format!("ordo_{role}"));
        let m = Metrics {
            registry: Arc::new(Mutex::new(Registry::default())),
            persist_seconds: latency_histogram(),
            storage_errors: Counter::default(),
            mesh_dropped: Gauge::default(),
            mesh_received: Gauge::default(),
            mesh_connects: Gauge::default(),
            persist_totals: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
        };
        registry.register(
            "persist_seconds",
            "Time of one durable commit (one fsync covering a step's writes)",
            m.persist_seconds.clone(),
        );
        registry.register(
            "storage_errors",
            "Failed writes; the node stops acknowledging after the first",
            m.storage_errors.clone(),
        );
        registry.register(
            "mesh_dropped_messages",
            "Messages to peers dropped (full queue or broken connection; the protocol retries)",
            m.mesh_dropped.clone(),
        );
        registry.register(
            "mesh_received_messages",
            "Messages received from peers",
            m.mesh_received.clone(),
        );
        registry.register(
            "mesh_connects",
            "Connections opened to peers, reconnects included",
            m.mesh_connects.clone(),
        );
        if let Ok(mut r) = m.registry.lock() {
            *r = registry;
        }
        m
    }

    /// Record one durable commit and how long it took.
    pub fn observe_persist(&self, took: std::time::Duration) {
        self.persist_seconds.observe(took.as_secs_f64());
        self.persist_totals.0.fetch_add(1, Ordering::Relaxed);
        self.persist_totals
            .1
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Return (commits, microseconds spent in them, storage errors, dropped mesh messages) so far.
    pub fn totals(&self) -> Totals {
        Totals {
            commits: self.persist_totals.0.load(Ordering::Relaxed),
            commit_micros: self.persist_totals.1.load(Ordering::Relaxed),
            errors: self.storage_errors.get() + self.mesh_dropped.get().max(0) as u64,
        }
    }

    /// Register a role-specific gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, g.clone());
        }
        g
    }

    /// Register a role-specific histogram of seconds.
    pub fn histogram(&self, name: &str, help: &str) -> Histogram {
        let h = latency_histogram();
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, h.clone());
        }
        h
    }

    /// Copy the mesh counters into the registry.
    pub fn observe_mesh(&self, mesh: &Mesh) {
        let s = mesh.stats();
        self.mesh_dropped
            .set(s.dropped.load(Ordering::Relaxed) as i64);
        self.mesh_received
            .set(s.received.load(Ordering::Relaxed) as i64);
        self.mesh_connects
            .set(s.connects.load(Ordering::Relaxed) as i64);
    }

    /// Return the OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// Serve `GET /metrics` on `addr` until the task is dropped; return the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let metrics = self.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut len = 0;
                    // Read the request head (bounded), then answer and close.
                    while len < buf.len() {
                        match tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            stream.read(&mut buf[len..]),
                        )
                        .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                            Ok(Ok(n)) => len += n,
                        }
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..len]);
                    let (status, body) = if head.starts_with("GET /metrics ") {
                        ("200 OK", metrics.encode())
                    } else {
                        ("404 Not Found", "try GET /metrics\n".to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
        Ok(bound)
    }
}

/// Paces a storing node's heartbeat line and says what it reports since the last one.
pub struct Heartbeat {
    every: super::node::Every,
    metrics: Metrics,
    last: Totals,
}

impl Heartbeat {
    /// A heartbeat every `every` over `metrics`' totals, the first after `every`.
    pub fn new(metrics: &Metrics, every: std::time::Duration) -> Heartbeat {
        Heartbeat {
            every: super::node::Every::new(every),
            last: metrics.totals(),
            metrics: metrics.clone(),
        }
    }

    /// When a heartbeat is due: the mean commit time since the last one (milliseconds, two
    /// decimals, as logged) and the errors since then.
    pub fn due(&mut self) -> Option<(String, u64)> {
        if !self.every.due() {
            return None;
        }
        let totals = self.metrics.totals();
        let (mean_commit_ms, errors) = totals.since(&self.last);
        self.last = totals;
        Some((format!("{mean_commit_ms:.2}"), errors))
    }
}

/// Running totals behind a heartbeat line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Durable commits.
    pub commits: u64,
    /// Microseconds spent in them.
    pub commit_micros: u64,
    /// Storage errors plus messages to peers dropped.
    pub errors: u64,
}

impl Totals {
    /// Return the mean commit time in milliseconds and the errors since `earlier`.
    pub fn since(&self, earlier: &Totals) -> (f64, u64) {
        let commits = self.commits.saturating_sub(earlier.commits);
        let micros = self.commit_micros.saturating_sub(earlier.commit_micros);
        let mean_ms = if commits == 0 {
            0.0
        } else {
            micros as f64 / commits as f64 / 1000.0
        };
        (mean_ms, self.errors.saturating_sub(earlier.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_heartbeat_reports_the_mean_commit_since_the_last_one() {
        let metrics = Metrics::new("test");
        metrics.observe_persist(Duration::from_millis(9));
        let mut beat = Heartbeat::new(&metrics, Duration::ZERO);
        metrics.observe_persist(Duration::from_millis(1));
        metrics.observe_persist(Duration::from_millis(3));
        assert_eq!(beat.due(), Some(("2.00".to_string(), 0)));
        metrics.storage_errors.inc();
        assert_eq!(beat.due(), Some(("0.00".to_string(), 1)));
        let mut slow = Heartbeat::new(&metrics, Duration::from_secs(3600));
        assert_eq!(slow.due(), None);
    }
}

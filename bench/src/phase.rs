//! One measured phase against one broker: connect, run, drain, count.
//!
//! A broker may listen on several addresses (the entries of an Ordo cluster): subscriber i and
//! publisher i connect to `addrs[i % addrs.len()]`. Every subscriber still subscribes to every
//! publisher's topic, so each is owed every message wherever it is connected.
//!
//! ```text
//!  connect+SUBSCRIBE M subscribers ─▶ connect N publishers ─▶ start ─ warm-up ─▶ [measure] ─▶ deadline
//!    ─▶ publishers wait for their PUBACKs ─▶ subscribers wait for every acked message (or quiet)
//!    ─▶ DISCONNECT all ─▶ loss = acked (QoS 1) / sent (QoS 0) minus delivered, per subscriber
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::{self, histogram, PublisherPlan, PublisherReport, Shared, SubscriberReport};
use crate::cpu;
use crate::wire;

/// How a phase loads the broker.
#[derive(Debug, Clone)]
pub struct PhaseConfig {
    /// "peak" or "paced"; part of the topic so phases never see each other's messages.
    pub name: &'static str,
    /// Unique tag of this phase (also in topics and client ids).
    pub tag: String,
    /// QoS of PUBLISH.
    pub pub_qos: u8,
    /// QoS of SUBSCRIBE.
    pub sub_qos: u8,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections, each subscribed to every publisher's topic.
    pub subscribers: usize,
    /// Payload bytes.
    pub payload: usize,
    /// In-flight limit per publisher (QoS 1).
    pub window: usize,
    /// Sending time.
    pub duration: Duration,
    /// Total offered rate in msg/s; `None` = flat out.
    pub rate: Option<f64>,
    /// The broker's processes (name, pid), whose CPU is read over the measured window.
    pub processes: Vec<(String, u32)>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Samples.
    pub count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            max_us: h.max() as f64 / 1e3,
            count: h.len(),
        })
    }

    fn to_json(self) -> Value {
        json!({"p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us, "samples": self.count})
    }
}

/// Everything measured in one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseResult {
    /// Offered rate (paced phase), msg/s.
    pub offered_rate: Option<f64>,
    /// PUBLISHes written per second in the measured window.
    pub sent_rate: f64,
    /// PUBACKs per second in the measured window (QoS 1).
    pub ack_rate: Option<f64>,
    /// Deliveries per second to all subscribers together (when there are subscribers).
    pub deliver_rate: Option<f64>,
    /// PUBLISHes per second received by the sink (sink only).
    pub sink_rate: Option<f64>,
    /// Publish -> PUBACK.
    pub ack_latency: Option<Latency>,
    /// Publish -> delivery.
    pub deliver_latency: Option<Latency>,
    /// 99th percentile publish -> PUBACK (us) of the messages sent in each second of the
    /// measured window, in order.
    pub ack_p99_by_second_us: Vec<f64>,
    /// Totals over the whole phase.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Still un-PUBACKed when publishers gave up.
    pub unacked: u64,
    /// Deliveries, duplicates included, all subscribers.
    pub delivered: u64,
    /// Sum over subscribers of messages they should have had and did not get.
    pub lost: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Deliveries that overtook an earlier message of the same publisher.
    pub reordered: u64,
    /// Deliveries not from this phase's publishers.
    pub foreign: u64,
    /// Connection errors.
    pub errors: Vec<String>,
    /// CPU the broker's processes used in the measured window (Linux).
    pub cpu: Option<cpu::CpuUse>,
}

impl PhaseResult {
    /// Publish rate the broker sustained end to end: PUBACKed (QoS 1) and, with subscribers,
    /// delivered to each. At QoS 0 only deliveries count: flat-out writes first fill the kernel's
    /// socket buffers, so the written rate says little about the broker.
    pub fn sustained_rate(&self, subscribers: usize) -> f64 {
        let delivered = self
            .deliver_rate
            .filter(|_| subscribers > 0)
            .map(|d| d / subscribers as f64);
        let accepted = self.ack_rate.or(self.sink_rate);
        match (accepted, delivered) {
            (Some(a), Some(d)) => a.min(d),
            (Some(r), None) | (None, Some(r)) => r,
            (None, None) => self.sent_rate,
        }
    }

    /// Machine-readable form.
    pub fn to_json(&self) -> Value {
        json!({
            "offered_rate": self.offered_rate,
            "sent_rate": self.sent_rate,
            "ack_rate": self.ack_rate,
            "deliver_rate": self.deliver_rate,
            "sink_rate": self.sink_rate,
            "ack_latency": self.ack_latency.map(Latency::to_json),
            "deliver_latency": self.deliver_latency.map(Latency::to_json),
            "ack_p99_by_second_us": self.ack_p99_by_second_us,
            "sent": self.sent,
            "acked": self.acked,
            "unacked": self.unacked,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "errors": self.errors,
            "cpu": self.cpu.as_ref().map(cpu::CpuUse::to_json),
        })
    }
}

/// Run one phase against the broker listening on `addrs`, connections spread round-robin
/// (`sink` = the sink's receive counter).
pub async fn run(
    addrs: &[SocketAddr],
    sink: Option<Arc<AtomicU64>>,
    cfg: &PhaseConfig,
) -> Result<PhaseResult> {
    anyhow::ensure!(!addrs.is_empty(), "broker has no MQTT address");
    let addr_of = |i: usize| addrs[i % addrs.len()];
    let topics: Vec<String> = (0..cfg.publishers)
        .map(|i| format!("ordo-bench/{}/{}/{i}", cfg.tag, cfg.name))
        .collect();
    let epoch = Instant::now();
    let shared = Arc::new(Shared::new(epoch));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut subs = JoinSet::new();
    let mut unique = Vec::new();
    for i in 0..cfg.subscribers {
        let mut conn =
            wire::connect(addr_of(i), &format!("ob-{}-{}-s{i}", cfg.tag, cfg.name)).await?;
        wire::subscribe(&mut conn, &topics, cfg.sub_qos)
            .await
            .with_context(|| format!("subscriber {i}"))?;
        let count = Arc::new(AtomicU64::new(0));
        unique.push(Arc::clone(&count));
        subs.spawn(client::subscribe(
            conn,
            i,
            cfg.publishers,
            count,
            Arc::clone(&shared),
            stop_rx.clone(),
        ));
    }
    let mut conns = Vec::new();
    for i in 0..cfg.publishers {
        let id = format!("ob-{}-{}-p{i}", cfg.tag, cfg.name);
        conns.push(wire::connect(addr_of(i), &id).await?);
    }

    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + cfg.duration;
    let warmup = (cfg.duration / 5).min(Duration::from_secs(1));
    let drain = cfg.duration.max(Duration::from_secs(5));
    let mut pubs = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let plan = PublisherPlan {
            index: u32::try_from(i)?,
            topic: topics[i].clone(),
            qos: cfg.pub_qos,
            window: cfg.window,
            payload: cfg.payload,
            start: start + paced_turn(cfg.rate, i),
            deadline,
            drain_deadline: deadline + drain,
            rate: cfg.rate.map(|r| r / cfg.publishers as f64),
        };
        pubs.spawn(client::publish(conn, plan, Arc::clone(&shared)));
    }

    let snapshot = |t: Instant| {
        (
            t,
            shared.sent.load(Ordering::Relaxed),
            shared.acked.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed),
            sink.as_ref().map_or(0, |s| s.load(Ordering::Relaxed)),
        )
    };
    let cpu_of = |procs: &[(String, u32)]| (!procs.is_empty()).then(|| cpu::snapshot(procs));
    tokio::time::sleep_until((start + warmup).into()).await;
    let a = snapshot(Instant::now());
    let cpu_a = cpu_of(&cfg.processes);
    shared.start_recording();
    tokio::time::sleep_until(deadline.into()).await;
    let b = snapshot(Instant::now());
    let cpu_b = cpu_of(&cfg.processes);
    shared.recording.store(false, Ordering::Relaxed);
    let secs = (b.0 - a.0).as_secs_f64();
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;

    let mut result = PhaseResult {
        offered_rate: cfg.rate,
        sent_rate: rate(a.1, b.1),
        ack_rate: (cfg.pub_qos == 1).then(|| rate(a.2, b.2)),
        deliver_rate: (cfg.subscribers > 0).then(|| rate(a.3, b.3)),
        sink_rate: sink.as_ref().map(|_| rate(a.4, b.4)),
        cpu: cpu_a.zip(cpu_b).and_then(|(a, b)| cpu::since(&a, &b)),
        ..PhaseResult::default()
    };

    let mut pub_reports: Vec<PublisherReport> = Vec::new();
    let mut ack_hist = histogram();
    while let Some(joined) = pubs.join_next().await {
        let report = joined.context("publisher task")?;
        ack_hist.add(&report.ack_latency).ok();
        result.errors.extend(report.error.clone());
        pub_reports.push(report);
    }

    // Every subscriber should end up with every message it is owed; stop waiting once it has,
    // or once deliveries stop for a while, or at the drain deadline.
    // (With messages left un-PUBACKed, a subscriber's distinct count may include some of them,
    // so only the quiet period can end the wait.)
    let unacked: u64 = pub_reports.iter().map(|r| r.unacked.len() as u64).sum();
    let owed: u64 = pub_reports.iter().map(|r| r.sent).sum::<u64>() + u64::from(unacked > 0);
    let quiet = Duration::from_millis(if cfg.sub_qos == 1 { 2000 } else { 1000 });
    let give_up = Instant::now() + drain;
    loop {
        let done = unique.iter().all(|u| u.load(Ordering::Relaxed) >= owed);
        let last = shared.last_delivery_ns.load(Ordering::Relaxed);
        let idle = shared
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_nanos(last));
        if done || idle > quiet || Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut sub_reports: Vec<SubscriberReport> = Vec::new();
    while let Some(joined) = subs.join_next().await {
        sub_reports.push(joined.context("subscriber task")?);
    }

    let mut deliver_hist = histogram();
    for p in &pub_reports {
        result.sent += p.sent;
        result.acked += p.acked;
        result.unacked += p.unacked.len() as u64;
    }
    for s in &sub_reports {
        deliver_hist.add(&s.deliver_latency).ok();
        result.errors.extend(s.error.clone());
        result.delivered += s.received;
        result.duplicates += s.duplicates;
        result.reordered += s.reordered;
        result.foreign += s.foreign;
        result.lost += lost(&pub_reports, s);
    }
    result.ack_latency = Latency::of(&ack_hist);
    result.ack_p99_by_second_us = p99_by_second(&pub_reports);
    result.deliver_latency = Latency::of(&deliver_hist);
    Ok(result)
}

/// The 99th percentile (us) of each second's acks over every publisher; a second without
/// acks (none sent in it was acked while recording) reads 0.
fn p99_by_second(pubs: &[PublisherReport]) -> Vec<f64> {
    let seconds = pubs
        .iter()
        .map(|p| p.ack_by_second.len())
        .max()
        .unwrap_or(0);
    (0..seconds)
        .map(|i| {
            let mut merged = client::second_histogram();
            for h in pubs.iter().filter_map(|p| p.ack_by_second.get(i)) {
                merged.add(h).ok();
            }
            if merged.is_empty() {
                0.0
            } else {
                merged.value_at_quantile(0.99) as f64 / 1e3
            }
        })
        .collect()
}

/// Messages subscriber `s` should have received (sent and not left un-PUBACKed) but did not.
fn lost(pubs: &[PublisherReport], s: &SubscriberReport) -> u64 {
    let mut lost = 0;
    for p in pubs {
        let Some(seen) = s.seen.get(p.index as usize) else {
            continue;
        };
        if seen.len() == p.sent {
            continue;
        }
        lost += (0..p.sent)
            .filter(|&seq| !seen.contains(seq) && p.unacked.binary_search(&seq).is_err())
            .count() as u64;
    }
    lost
}

/// When paced publisher `i` starts, after the phase's start. With a total `rate`, publisher `i`
/// sends message k at `start + (i + k * publishers) / rate`: the broker sees one publish every
/// `1 / rate` seconds, not every publisher's at the same instant (a burst of `publishers`
/// messages per period, which a batching broker answers with a lone first message and a queue).
fn paced_turn(rate: Option<f64>, i: usize) -> Duration {
    rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(i as f64 / r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SeqSet;
    use crate::sink::Sink;

    fn publisher(index: u32, sent: u64, unacked: Vec<u64>) -> PublisherReport {
        PublisherReport {
            index,
            sent,
            acked: sent - unacked.len() as u64,
            unacked,
            ack_latency: histogram(),
            ack_by_second: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn paced_publishers_take_turns() {
        // 8 publishers at 1,000 msg/s in all: one publish every millisecond, in turn.
        let starts: Vec<Duration> = (0..8).map(|i| paced_turn(Some(1000.0), i)).collect();
        for (i, at) in starts.iter().enumerate() {
            assert_eq!(at.as_micros(), 1000 * i as u128);
        }
        assert_eq!(
            paced_turn(None, 5),
            Duration::ZERO,
            "the peak phase starts all at once"
        );
    }

    #[test]
    fn lost_counts_acked_messages_missing_at_a_subscriber() {
        let mut seen = SeqSet::default();
        for seq in [0, 1, 3, 4] {
            seen.insert(seq);
        }
        let sub = SubscriberReport {
            received: 4,
            seen: vec![seen, SeqSet::default()],
            duplicates: 0,
            reordered: 0,
            foreign: 0,
            deliver_latency: histogram(),
            error: None,
        };
        // Publisher 0 sent 0..6: 2 and 5 missing, 5 never PUBACKed so only 2 is lost.
        // Publisher 1 sent 0..2 and none arrived.
        let pubs = [publisher(0, 6, vec![5]), publisher(1, 2, vec![])];
        assert_eq!(lost(&pubs, &sub), 3);
    }

    #[test]
    fn the_p99_of_each_second_merges_every_publisher() {
        let second = |ms: &[u64]| {
            let mut h = client::second_histogram();
            for &m in ms {
                h.record(m * 1_000_000).expect("in range");
            }
            h
        };
        let mut a = publisher(0, 0, vec![]);
        let mut b = publisher(1, 0, vec![]);
        // Second 0: 98 fast acks at a, 2 slower at b (the 99th of 100); second 1: b met an
        // episode; only b saw a third second.
        a.ack_by_second = vec![second(&[2; 98]), second(&[3; 50])];
        b.ack_by_second = vec![second(&[4; 2]), second(&[40; 50]), second(&[5])];
        let p99: Vec<u64> = p99_by_second(&[a, b])
            .into_iter()
            .map(|us| (us / 1e3).round() as u64)
            .collect();
        assert_eq!(p99, [4, 40, 5]);
        assert!(p99_by_second(&[]).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_publish_is_acked_by_the_sink() {
        let sink = Sink::start().expect("sink starts");
        let cfg = PhaseConfig {
            name: "peak",
            tag: "test".into(),
            pub_qos: 1,
            sub_qos: 1,
            publishers: 3,
            subscribers: 0,
            payload: 64,
            window: 16,
            duration: Duration::from_millis(300),
            rate: None,
            processes: Vec::new(),
        };
        let r = run(&[sink.addr()], Some(sink.received()), &cfg)
            .await
            .expect("phase runs");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.sent > 0);
        assert_eq!(r.acked, r.sent);
        assert_eq!(r.unacked, 0);
        assert_eq!(sink.received().load(Ordering::Relaxed), r.sent);
        // 240 ms measured: every ack recorded falls in second 0.
        assert_eq!(
            r.ack_p99_by_second_us.len(),
            1,
            "{:?}",
            r.ack_p99_by_second_us
        );
        assert!(r.ack_p99_by_second_us[0] > 0.0);
    }
}

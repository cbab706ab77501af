//! Publisher and subscriber connections of one phase.
//!
//! ```text
//!  publisher i ──PUBLISH bench/../i (stamp: i, seq, t_send)──▶ broker ──PUBLISH──▶ subscriber j
//!       ◀────────────────────── PUBACK (QoS 1) ─────────┘          (PUBACK at QoS 1)◀─┘
//!  ack latency = t(PUBACK) - t_send          deliver latency = t(receive) - t_send
//! ```
//!
//! Each connection is one task that reads and writes with cancel-safe `read_buf` / `write` inside
//! one `select!`, so it never blocks writing while the broker waits for it to read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use rumqttc::mqttbytes::v4::{Packet, PubAck};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::sleep_until;

use crate::wire::{self, encode_publish, next_packet, Conn, Stamp};

/// Most PUBLISHes encoded into the write buffer at once.
const BATCH: usize = 128;
/// Interval between a subscriber's PINGREQs (it sends nothing else at QoS 0).
const PING_EVERY: Duration = Duration::from_secs(30);

/// Counters shared by every connection of a phase and read by its controller.
pub struct Shared {
    /// Zero point of every send timestamp.
    pub epoch: Instant,
    /// Latencies are recorded only while this is set (after warm-up, before the deadline).
    pub recording: AtomicBool,
    /// When recording started, ns since `epoch`: second 0 of the per-second ack histograms.
    pub recording_from_ns: AtomicU64,
    /// PUBLISHes written by all publishers.
    pub sent: AtomicU64,
    /// PUBACKs received by all publishers.
    pub acked: AtomicU64,
    /// PUBLISHes received by all subscribers.
    pub delivered: AtomicU64,
    /// When the last delivery arrived, ns since `epoch`.
    pub last_delivery_ns: AtomicU64,
}

impl Shared {
    /// Fresh counters with `epoch` as time zero.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            recording: AtomicBool::new(false),
            recording_from_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
        }
    }

    /// Start recording latencies; the per-second histograms count from now.
    pub fn start_recording(&self) {
        self.recording_from_ns
            .store(self.now_ns(), Ordering::Relaxed);
        self.recording.store(true, Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// New latency histogram in nanoseconds (1 ns .. 1 h, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant bounds are valid")
}

/// New histogram for one second's acks in nanoseconds: 1 us .. 1 h, 2 significant digits,
/// small enough (about 26 KB) to keep one per second per publisher.
pub fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 3_600_000_000_000, 2).expect("constant bounds are valid")
}

/// What one publisher connection does.
pub struct PublisherPlan {
    /// Publisher index, carried in every payload.
    pub index: u32,
    /// Topic it publishes to.
    pub topic: String,
    /// 0 or 1.
    pub qos: u8,
    /// Most un-PUBACKed messages at once (QoS 1).
    pub window: usize,
    /// Payload size in bytes.
    pub payload: usize,
    /// Start sending at.
    pub start: Instant,
    /// Stop sending at.
    pub deadline: Instant,
    /// Give up waiting for PUBACKs at.
    pub drain_deadline: Instant,
    /// `Some(r)`: send r msg/s on a fixed schedule; `None`: flat out.
    pub rate: Option<f64>,
}

/// What one publisher connection saw.
pub struct PublisherReport {
    /// Publisher index.
    pub index: u32,
    /// PUBLISHes written; sequence numbers `0..sent`.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Sequence numbers still un-PUBACKed when the publisher gave up.
    pub unacked: Vec<u64>,
    /// Publish -> PUBACK latency (ns).
    pub ack_latency: Histogram<u64>,
    /// Publish -> PUBACK (ns) by the second of recording the message was sent in: where in
    /// time the tail sits (a steady queue, or episodes).
    pub ack_by_second: Vec<Histogram<u64>>,
    /// Why the connection ended early, if it did.
    pub error: Option<String>,
}

/// Packet-id bookkeeping of one QoS 1 publisher: which ids are in flight, with seq and send time.
struct InFlight {
    sent_ns: Vec<u64>,
    seq: Vec<u64>,
    next_pkid: u16,
    count: usize,
}

impl InFlight {
    fn new() -> Self {
        Self {
            sent_ns: vec![0; 65536],
            seq: vec![0; 65536],
            next_pkid: 0,
            count: 0,
        }
    }

    /// Take a free packet id (window < 65535 guarantees one exists).
    fn take(&mut self, seq: u64, now_ns: u64) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let i = usize::from(self.next_pkid);
            if self.sent_ns[i] == 0 {
                self.sent_ns[i] = now_ns.max(1);
                self.seq[i] = seq;
                self.count += 1;
                return self.next_pkid;
            }
        }
    }

    /// Release `pkid`; its send time, or `None` if it was not in flight.
    fn release(&mut self, pkid: u16) -> Option<u64> {
        let i = usize::from(pkid);
        let t = std::mem::take(&mut self.sent_ns[i]);
        (t != 0).then(|| {
            self.count -= 1;
            t
        })
    }

    fn unacked(&self) -> Vec<u64> {
        let mut v: Vec<u64> = (1..65536)
            .filter(|&i| self.sent_ns[i] != 0)
            .map(|i| self.seq[i])
            .collect();
        v.sort_unstable();
        v
    }
}

/// Run one publisher until its deadline, then wait (until `drain_deadline`) for its PUBACKs.
pub async fn publish(mut conn: Conn, plan: PublisherPlan, shared: Arc<Shared>) -> PublisherReport {
    let mut report = PublisherReport {
        index: plan.index,
        sent: 0,
        acked: 0,
        unacked: Vec::new(),
        ack_latency: histogram(),
        ack_by_second: Vec::new(),
        error: None,
    };
    let mut inflight = InFlight::new();
    if let Err(e) = publish_loop(&mut conn, &plan, &shared, &mut report, &mut inflight).await {
        report.error = Some(format!("publisher {}: {e:#}", plan.index));
    }
    report.unacked = inflight.unacked();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        wire::write_packet(&mut conn.wr, Packet::Disconnect),
    )
    .await;
    report
}

async fn publish_loop(
    conn: &mut Conn,
    plan: &PublisherPlan,
    shared: &Shared,
    report: &mut PublisherReport,
    inflight: &mut InFlight,
) -> Result<()> {
    let qos1 = plan.qos == 1;
    let mut out = BytesMut::with_capacity(BATCH * (plan.payload + plan.topic.len() + 8));
    let stop_at = sleep_until(plan.deadline.into());
    let give_up_at = sleep_until(plan.drain_deadline.into());
    let pace = sleep_until(plan.deadline.into());
    tokio::pin!(stop_at, give_up_at, pace);
    let mut sending = true;
    sleep_until(plan.start.into()).await;

    loop {
        // Refill the write buffer once it has been flushed.
        let mut wait_for_schedule = false;
        if sending && out.is_empty() {
            let mut room = if qos1 {
                plan.window.saturating_sub(inflight.count).min(BATCH)
            } else {
                BATCH
            };
            if let Some(r) = plan.rate {
                // Paced: message k is due at start + k / r; send whatever is due, else sleep.
                let elapsed = Instant::now().saturating_duration_since(plan.start);
                let due_by_now = (elapsed.as_secs_f64() * r) as u64 + 1;
                let due = usize::try_from(due_by_now.saturating_sub(report.sent)).unwrap_or(BATCH);
                if room > 0 && due == 0 {
                    let next = plan.start + Duration::from_secs_f64(report.sent as f64 / r);
                    pace.as_mut().reset(next.into());
                    wait_for_schedule = true;
                }
                room = room.min(due);
            }
            if room > 0 {
                let now_ns = shared.now_ns();
                for _ in 0..room {
                    let seq = report.sent;
                    let pkid = if qos1 { inflight.take(seq, now_ns) } else { 0 };
                    let stamp = Stamp {
                        publisher: plan.index,
                        seq,
                        sent_ns: now_ns,
                    };
                    encode_publish(&mut out, &plan.topic, plan.qos, pkid, plan.payload, stamp);
                    report.sent += 1;
                }
                shared.sent.fetch_add(room as u64, Ordering::Relaxed);
            }
        }
        tokio::select! {
            read = conn.rd.read_buf(&mut conn.buf) => {
                if read? == 0 {
                    bail!("broker closed the connection");
                }
                handle_acks(conn, shared, report, inflight)?;
            }
            written = conn.wr.write(&out), if !out.is_empty() => {
                let n = written?;
                if n == 0 {
                    bail!("broker stopped reading");
                }
                out.advance(n);
            }
            () = &mut pace, if wait_for_schedule => {}
            () = &mut stop_at, if sending => sending = false,
            () = &mut give_up_at => return Ok(()),
        }
        if !sending && out.is_empty() && (!qos1 || inflight.count == 0) {
            return Ok(());
        }
    }
}

fn handle_acks(
    conn: &mut Conn,
    shared: &Shared,
    report: &mut PublisherReport,
    inflight: &mut InFlight,
) -> Result<()> {
    let now_ns = shared.now_ns();
    let recording = shared.recording.load(Ordering::Relaxed);
    let from_ns = shared.recording_from_ns.load(Ordering::Relaxed);
    let mut acked = 0;
    while let Some(packet) = next_packet(&mut conn.buf)? {
        match packet {
            Packet::PubAck(PubAck { pkid }) => {
                if let Some(sent_ns) = inflight.release(pkid) {
                    acked += 1;
                    if recording {
                        let latency = now_ns.saturating_sub(sent_ns).max(1);
                        report.ack_latency.saturating_record(latency);
                        let second = (sent_ns.saturating_sub(from_ns) / 1_000_000_000) as usize;
                        if report.ack_by_second.len() <= second {
                            report
                                .ack_by_second
                                .resize_with(second + 1, second_histogram);
                        }
                        report.ack_by_second[second].saturating_record(latency);
                    }
                }
            }
            Packet::PingResp => {}
            other => bail!("unexpected packet to a publisher: {other:?}"),
        }
    }
    report.acked += acked;
    shared.acked.fetch_add(acked, Ordering::Relaxed);
    Ok(())
}

/// What one subscriber connection saw.
pub struct SubscriberReport {
    /// PUBLISHes received, duplicates included.
    pub received: u64,
    /// Per publisher: which sequence numbers arrived.
    pub seen: Vec<SeqSet>,
    /// Deliveries of a sequence number already seen.
    pub duplicates: u64,
    /// Deliveries older than one already seen from the same publisher.
    pub reordered: u64,
    /// Deliveries whose payload or publisher index was not ours.
    pub foreign: u64,
    /// Publish -> delivery latency (ns).
    pub deliver_latency: Histogram<u64>,
    /// Why the connection ended early, if it did.
    pub error: Option<String>,
}

/// Growable bitset of sequence numbers.
#[derive(Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Insert `seq`; false if it was already present.
    pub fn insert(&mut self, seq: u64) -> bool {
        let Ok(word) = usize::try_from(seq / 64) else {
            return false;
        };
        if word >= self.words.len() {
            self.words.resize((word + 1).max(self.words.len() * 2), 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u64::from(new);
        new
    }

    /// Whether `seq` is present.
    pub fn contains(&self, seq: u64) -> bool {
        usize::try_from(seq / 64)
            .ok()
            .and_then(|w| self.words.get(w))
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Number of distinct members.
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// Receive until `stop` turns true, acking QoS 1 deliveries and checking stamps.
pub async fn subscribe(
    mut conn: Conn,
    index: usize,
    publishers: usize,
    unique: Arc<AtomicU64>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberReport {
    let mut report = SubscriberReport {
        received: 0,
        seen: vec![SeqSet::default(); publishers],
        duplicates: 0,
        reordered: 0,
        foreign: 0,
        deliver_latency: histogram(),
        error: None,
    };
    let mut newest: Vec<Option<u64>> = vec![None; publishers];
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let result: Result<()> = async {
        loop {
            tokio::select! {
                read = conn.rd.read_buf(&mut conn.buf) => {
                    if read? == 0 {
                        bail!("broker closed the connection");
                    }
                    let now_ns = shared.now_ns();
                    let recording = shared.recording.load(Ordering::Relaxed);
                    let mut got = 0;
                    let mut fresh = 0;
                    while let Some(packet) = next_packet(&mut conn.buf)? {
                        let p = match packet {
                            Packet::Publish(p) => p,
                            Packet::PingResp => continue,
                            other => bail!("unexpected packet to a subscriber: {other:?}"),
                        };
                        got += 1;
                        if p.qos == QoS::AtLeastOnce {
                            out.extend_from_slice(&[0x40, 2]);
                            out.extend_from_slice(&p.pkid.to_be_bytes());
                        }
                        let Some(stamp) = wire::decode_stamp(&p.payload)
                            .filter(|s| (s.publisher as usize) < publishers)
                        else {
                            report.foreign += 1;
                            continue;
                        };
                        let i = stamp.publisher as usize;
                        if !report.seen[i].insert(stamp.seq) {
                            report.duplicates += 1;
                            continue;
                        }
                        fresh += 1;
                        match newest[i] {
                            Some(n) if n > stamp.seq => report.reordered += 1,
                            _ => newest[i] = Some(stamp.seq),
                        }
                        if recording {
                            report
                                .deliver_latency
                                .saturating_record(now_ns.saturating_sub(stamp.sent_ns).max(1));
                        }
                    }
                    report.received += got;
                    unique.fetch_add(fresh, Ordering::Relaxed);
                    shared.delivered.fetch_add(got, Ordering::Relaxed);
                    if got > 0 {
                        shared.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
                    }
                    if !out.is_empty() {
                        conn.wr.write_all(&out).await?;
                        out.clear();
                    }
                }
                _ = ping.tick() => {
                    conn.wr.write_all(&[0xc0, 0]).await?;
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        report.error = Some(format!("subscriber {index}: {e:#}"));
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        wire::write_packet(&mut conn.wr, Packet::Disconnect),
    )
    .await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_skips_busy_ids_and_wraps() {
        let mut f = InFlight::new();
        let first = f.take(0, 10);
        for seq in 1..70_000u64 {
            let id = f.take(seq, 10);
            assert_ne!(id, 0);
            assert_ne!(id, first, "busy id reused");
            assert!(f.release(id).is_some());
        }
        assert_eq!(f.unacked(), vec![0]);
        assert_eq!(f.release(first), Some(10));
        assert_eq!(f.release(first), None);
    }

    #[test]
    fn seqset_counts_distinct() {
        let mut s = SeqSet::default();
        assert!(s.insert(5));
        assert!(!s.insert(5));
        assert!(s.insert(1_000));
        assert!(s.contains(1_000) && !s.contains(6));
        assert_eq!(s.len(), 2);
    }
}

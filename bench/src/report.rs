//! Medians, Ordo/peer ratios (standalone Ordo and every cluster variant against each peer), the
//! cluster scaling table, the printed report and the JSON file.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::broker::Peer;
use crate::cli::Args;
use crate::cluster::{NDBS, SYNCS};
use crate::phase::PhaseResult;

/// One broker measured once: its peak phase and its paced phase.
#[derive(Debug, Clone)]
pub struct BrokerRun {
    /// Which broker.
    pub peer: Peer,
    /// Run number, from 0.
    pub run: usize,
    /// QoS its subscribers used.
    pub sub_qos: u8,
    /// Subscriber connections it served.
    pub subscribers: usize,
    /// Flat-out phase.
    pub peak: Option<PhaseResult>,
    /// Phase at 50% of the peak.
    pub paced: Option<PhaseResult>,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

impl BrokerRun {
    fn lost(&self) -> u64 {
        self.peak
            .iter()
            .chain(self.paced.iter())
            .map(|p| p.lost)
            .sum()
    }

    fn count(&self, f: impl Fn(&PhaseResult) -> u64) -> u64 {
        self.peak.iter().chain(self.paced.iter()).map(f).sum()
    }

    /// Machine-readable form.
    pub fn to_json(&self) -> Value {
        json!({
            "broker": self.peer.to_string(),
            "run": self.run,
            "subscriber_qos": self.sub_qos,
            "subscribers": self.subscribers,
            "peak": self.peak.as_ref().map(PhaseResult::to_json),
            "paced": self.paced.as_ref().map(PhaseResult::to_json),
            "error": self.error,
        })
    }
}

/// A column of the table that has a number per run.
#[derive(Debug, Clone, Copy)]
enum Figure {
    InRate,
    DeliverRate,
    AckP50,
    AckP99,
    DeliverP50,
    DeliverP99,
}

const FIGURES: [Figure; 6] = [
    Figure::InRate,
    Figure::DeliverRate,
    Figure::AckP50,
    Figure::AckP99,
    Figure::DeliverP50,
    Figure::DeliverP99,
];

impl Figure {
    fn label(self, qos: u8) -> &'static str {
        match self {
            Figure::InRate if qos == 1 => "ack/s",
            Figure::InRate => "sent/s",
            Figure::DeliverRate => "dlv/s",
            Figure::AckP50 => "ack p50",
            Figure::AckP99 => "ack p99",
            Figure::DeliverP50 => "dlv p50",
            Figure::DeliverP99 => "dlv p99",
        }
    }

    fn key(self, qos: u8) -> &'static str {
        match self {
            Figure::InRate if qos == 1 => "peak_ack_rate",
            Figure::InRate => "peak_sent_rate",
            Figure::DeliverRate => "peak_deliver_rate",
            Figure::AckP50 => "paced_ack_p50_us",
            Figure::AckP99 => "paced_ack_p99_us",
            Figure::DeliverP50 => "paced_deliver_p50_us",
            Figure::DeliverP99 => "paced_deliver_p99_us",
        }
    }

    fn is_rate(self) -> bool {
        matches!(self, Figure::InRate | Figure::DeliverRate)
    }

    fn value(self, r: &BrokerRun, qos: u8) -> Option<f64> {
        let peak = r.peak.as_ref();
        let paced = r.paced.as_ref();
        let v = match self {
            Figure::InRate if qos == 1 => peak?.ack_rate,
            Figure::InRate => peak.map(|p| p.sink_rate.unwrap_or(p.sent_rate)),
            Figure::DeliverRate => peak?.deliver_rate,
            Figure::AckP50 => paced?.ack_latency.map(|l| l.p50_us),
            Figure::AckP99 => paced?.ack_latency.map(|l| l.p99_us),
            Figure::DeliverP50 => paced?.deliver_latency.map(|l| l.p50_us),
            Figure::DeliverP99 => paced?.deliver_latency.map(|l| l.p99_us),
        };
        v.filter(|x| x.is_finite())
    }

    fn format(self, v: Option<f64>) -> String {
        match v {
            None => "-".into(),
            Some(v) if self.is_rate() => rate(v),
            Some(v) => micros(v),
        }
    }
}

/// Median of the values present; `None` if there are none.
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn micros(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.0}us")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn runs_of(runs: &[BrokerRun], peer: Peer) -> Vec<&BrokerRun> {
    runs.iter().filter(|r| r.peer == peer).collect()
}

fn median_of(runs: &[&BrokerRun], f: Figure, qos: u8) -> Option<f64> {
    median(runs.iter().filter_map(|r| f.value(r, qos)).collect())
}

/// Per-run ratio `num`/`den` for `f`, median over the runs where both have a value.
fn ratio(all: &[BrokerRun], num: Peer, den: Peer, f: Figure, qos: u8) -> Option<f64> {
    let per_run = all
        .iter()
        .filter(|o| o.peer == num)
        .filter_map(|o| {
            let p = all.iter().find(|p| p.peer == den && p.run == o.run)?;
            let (a, b) = (f.value(o, qos)?, f.value(p, qos)?);
            (b > 0.0).then(|| a / b)
        })
        .collect();
    median(per_run)
}

fn notes(peer: Peer, runs: &[&BrokerRun], args: &Args) -> Vec<String> {
    let mut notes = Vec::new();
    if peer == Peer::Sink {
        notes.push("in-process acker, forwards nothing: the generator's ceiling".into());
    }
    if let Some(n) = peer.cluster_entries() {
        notes.push(format!(
            "{} processes: {SYNCS} sync + {NDBS} ndb + {n} entr{}",
            SYNCS + NDBS + n,
            if n == 1 { "y" } else { "ies" }
        ));
    }
    if runs.iter().any(|r| r.sub_qos != args.qos) {
        notes.push(
            "subscribers at QoS 0 (fox-wamp's QoS 1 subscriber stops at 65,535 deliveries)".into(),
        );
    }
    let lost: u64 = runs.iter().map(|r| r.lost()).sum();
    if lost > 0 && runs.iter().all(|r| r.sub_qos == 1) {
        notes.push(format!("WARNING: {lost} acked messages never delivered"));
    } else if lost > 0 {
        notes.push("QoS 0 delivery: drops allowed".into());
    }
    let dups: u64 = runs.iter().map(|r| r.count(|p| p.duplicates)).sum();
    let reord: u64 = runs.iter().map(|r| r.count(|p| p.reordered)).sum();
    let unacked: u64 = runs.iter().map(|r| r.count(|p| p.unacked)).sum();
    let foreign: u64 = runs.iter().map(|r| r.count(|p| p.foreign)).sum();
    for (n, what) in [
        (dups, "duplicates"),
        (reord, "out of order"),
        (unacked, "never PUBACKed"),
        (foreign, "foreign deliveries"),
    ] {
        if n > 0 {
            notes.push(format!("{n} {what}"));
        }
    }
    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        notes.push(format!("{failed}/{} runs failed (see errors)", runs.len()));
    }
    notes
}

/// The human-readable report.
pub fn table(all: &[BrokerRun], peers: &[Peer], args: &Args) -> String {
    let qos = args.qos;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ordo-bench: MQTT 3.1.1 on 127.0.0.1, QoS {qos}, {} publishers (window {}), {} subscribers \
         (each on every topic), {} B payload, {} s per phase, {} run(s)",
        args.publishers, args.window, args.subscribers, args.payload, args.duration, args.runs
    );
    let paced = match args.paced_rate {
        Some(r) => format!("paced phase at {} msg/s for every broker", rate(r)),
        None => "paced phase at 50% of each broker's own peak".into(),
    };
    let tuning = if args.peer_defaults {
        "peers run with their shipped defaults"
    } else {
        "peers tuned: TCP_NODELAY in mosquitto and fox-wamp, mosquitto max_queued_messages 0"
    };
    let _ = writeln!(
        s,
        "rates: peak phase (all publishers flat out); latencies: {paced}; medians over runs\n{tuning}\n"
    );
    let mut header = format!("{:<10}", "broker");
    for f in FIGURES {
        let _ = write!(header, " {:>9}", f.label(qos));
        if matches!(f, Figure::DeliverRate) {
            let _ = write!(header, " {:>9}", "paced/s");
        }
    }
    let _ = writeln!(s, "{header} {:>6}  notes", "lost");
    for &peer in peers {
        let runs = runs_of(all, peer);
        let mut line = format!("{:<10}", peer.to_string());
        for f in FIGURES {
            let _ = write!(line, " {:>9}", f.format(median_of(&runs, f, qos)));
            if matches!(f, Figure::DeliverRate) {
                let paced = median(
                    runs.iter()
                        .filter_map(|r| r.paced.as_ref()?.offered_rate)
                        .collect(),
                );
                let _ = write!(line, " {:>9}", paced.map_or("-".into(), rate));
            }
        }
        let lost: u64 = runs.iter().map(|r| r.lost()).sum();
        let lost = if peer == Peer::Sink || runs.iter().all(|r| r.peak.is_none()) {
            "-".to_string()
        } else {
            lost.to_string()
        };
        let _ = writeln!(line, " {lost:>6}  {}", notes(peer, &runs, args).join("; "));
        s.push_str(&line);
    }

    ratio_table(&mut s, all, peers, qos);
    cluster_table(&mut s, all, peers, qos);
    cpu_table(&mut s, all, peers);

    let errors: Vec<String> = all
        .iter()
        .flat_map(|r| {
            let phases = r.peak.iter().chain(r.paced.iter());
            r.error
                .iter()
                .cloned()
                .chain(phases.flat_map(|p| p.errors.iter().cloned()))
                .map(move |e| format!("  run {} {}: {e}", r.run + 1, r.peer))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\nerrors:\n{}", errors.join("\n"));
    }
    s
}

/// (Ordo in any form, peer) pairs of the ratio table, in `peers` order.
fn ratio_pairs(peers: &[Peer]) -> Vec<(Peer, Peer)> {
    let others = peers
        .iter()
        .copied()
        .filter(|p| !p.is_ordo() && *p != Peer::Sink);
    let ordos: Vec<Peer> = peers.iter().copied().filter(|p| p.is_ordo()).collect();
    others
        .flat_map(|other| ordos.iter().map(move |&o| (o, other)))
        .collect()
}

fn ratio_table(s: &mut String, all: &[BrokerRun], peers: &[Peer], qos: u8) {
    let pairs = ratio_pairs(peers);
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nOrdo/peer, median of per-run ratios (rates: >1 = Ordo faster; latencies: <1 = Ordo faster)"
    );
    let mut header = format!("{:<20}", "ordo/peer");
    for f in FIGURES {
        let _ = write!(header, " {:>9}", f.label(qos));
    }
    let _ = writeln!(s, "{header}");
    for (ordo, peer) in pairs {
        let mut line = format!("{:<20}", format!("{ordo}/{peer}"));
        for f in FIGURES {
            let r = ratio(all, ordo, peer, f, qos);
            let _ = write!(line, " {:>9}", r.map_or("-".into(), |r| format!("{r:.2}")));
        }
        let _ = writeln!(s, "{line}");
    }
}

/// Throughput of the cluster variants side by side: 1, 2, 3 entries.
fn cluster_table(s: &mut String, all: &[BrokerRun], peers: &[Peer], qos: u8) {
    let clusters: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| p.cluster_entries().is_some())
        .collect();
    let Some(&first) = clusters.first() else {
        return;
    };
    let base = peers.iter().copied().find(|p| *p == Peer::Mosquitto);
    let _ = writeln!(
        s,
        "\ncluster: {SYNCS} ordo-sync + {NDBS} ordo-ndb + N ordo-entry processes, clients \
         round-robin over the entries; ratios are medians of per-run ratios"
    );
    let mut header = format!(
        "{:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "broker",
        "entries",
        Figure::InRate.label(qos),
        Figure::DeliverRate.label(qos),
        Figure::AckP50.label(qos),
        Figure::AckP99.label(qos),
        format!("x {first}")
    );
    if let Some(b) = base {
        let _ = write!(header, " {:>11}", format!("x {b}"));
    }
    let _ = writeln!(s, "{header}");
    let fmt_ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
    for &peer in &clusters {
        let runs = runs_of(all, peer);
        let m = |f: Figure| f.format(median_of(&runs, f, qos));
        let mut line = format!(
            "{:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11}",
            peer.to_string(),
            peer.cluster_entries().unwrap_or(0),
            m(Figure::InRate),
            m(Figure::DeliverRate),
            m(Figure::AckP50),
            m(Figure::AckP99),
            fmt_ratio(ratio(all, peer, first, Figure::InRate, qos))
        );
        if let Some(b) = base {
            let r = ratio(all, peer, b, Figure::InRate, qos);
            let _ = write!(line, " {:>11}", fmt_ratio(r));
        }
        let _ = writeln!(s, "{line}");
    }
}

/// CPU of each broker's processes in the measured windows, where /proc could tell.
fn cpu_table(s: &mut String, all: &[BrokerRun], peers: &[Peer]) {
    fn cpu(r: &BrokerRun, paced: bool) -> Option<&crate::cpu::CpuUse> {
        let phase = if paced { &r.paced } else { &r.peak };
        phase.as_ref()?.cpu.as_ref()
    }
    let shown: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|&p| all.iter().any(|r| r.peer == p && cpu(r, true).is_some()))
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\ncpu of the broker's processes in the measured windows (medians; from /proc, kernel \
         threads not counted):\n\
         waiting = its threads ready to run but without a core, on average; wake-up = mean wait \
         for a core each time one ran"
    );
    let _ = writeln!(
        s,
        "{:<10} {:>10} {:>9} {:>11} {:>10} {:>8} {:>8} {:>7}  paced cores by role",
        "broker",
        "peak cores",
        "paced/s",
        "paced cores",
        "per 10k/s",
        "bench",
        "waiting",
        "wake-up"
    );
    for &peer in &shown {
        let runs = runs_of(all, peer);
        let med = |f: &dyn Fn(&BrokerRun) -> Option<f64>| {
            median(runs.iter().filter_map(|r| f(r)).collect())
        };
        let fmt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        let paced_rate = med(&|r| r.paced.as_ref()?.offered_rate);
        let per_10k = med(&|r| {
            let rate = r.paced.as_ref()?.offered_rate?;
            (rate > 0.0).then(|| cpu(r, true).map(|c| c.cores / rate * 1e4))?
        });
        let roles: std::collections::BTreeSet<String> = runs
            .iter()
            .filter_map(|r| cpu(r, true))
            .flat_map(|c| c.by_role.iter().map(|(role, _)| role.clone()))
            .collect();
        let by_role: Vec<String> = roles
            .iter()
            .filter_map(|role| {
                let v = med(&|r| {
                    cpu(r, true)?
                        .by_role
                        .iter()
                        .find(|(x, _)| x == role)
                        .map(|(_, c)| *c)
                })?;
                Some(format!("{role} {v:.2}"))
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<10} {:>10} {:>9} {:>11} {:>10} {:>8} {:>8} {:>7}  {}",
            peer.to_string(),
            fmt(med(&|r| cpu(r, false).map(|c| c.cores)), 2),
            paced_rate.map_or("-".into(), rate),
            fmt(med(&|r| cpu(r, true).map(|c| c.cores)), 2),
            fmt(per_10k, 3),
            fmt(med(&|r| cpu(r, true).map(|c| c.bench_cores)), 2),
            fmt(med(&|r| cpu(r, true).map(|c| c.waiting)), 1),
            med(&|r| cpu(r, true).map(|c| c.wait_per_slice_us)).map_or("-".into(), micros),
            if by_role.len() > 1 {
                by_role.join(", ")
            } else {
                "-".into()
            }
        );
    }
}

/// Everything, for `--json`.
pub fn json(all: &[BrokerRun], peers: &[Peer], args: &Args) -> Value {
    let qos = args.qos;
    let summary: serde_json::Map<String, Value> = peers
        .iter()
        .map(|&peer| {
            let runs = runs_of(all, peer);
            let mut m = serde_json::Map::new();
            for f in FIGURES {
                m.insert(f.key(qos).into(), json!(median_of(&runs, f, qos)));
            }
            m.insert(
                "paced_offered_rate".into(),
                json!(median(
                    runs.iter()
                        .filter_map(|r| r.paced.as_ref()?.offered_rate)
                        .collect()
                )),
            );
            m.insert(
                "lost".into(),
                json!(runs.iter().map(|r| r.lost()).sum::<u64>()),
            );
            m.insert("notes".into(), json!(notes(peer, &runs, args)));
            (peer.to_string(), Value::Object(m))
        })
        .collect();
    let ratios: serde_json::Map<String, Value> = ratio_pairs(peers)
        .into_iter()
        .map(|(ordo, peer)| {
            let m: serde_json::Map<String, Value> = FIGURES
                .iter()
                .map(|&f| {
                    (
                        f.key(qos).to_string(),
                        json!(ratio(all, ordo, peer, f, qos)),
                    )
                })
                .collect();
            (format!("{ordo}/{peer}"), Value::Object(m))
        })
        .collect();
    json!({
        "config": {
            "qos": qos,
            "publishers": args.publishers,
            "subscribers": args.subscribers,
            "payload": args.payload,
            "window": args.window,
            "duration_s": args.duration,
            "runs": args.runs,
            "paced_rate": args.paced_rate,
            "scratch_dir": args.scratch_dir,
            "peer_defaults": args.peer_defaults,
            "mosquitto_conf": args.mosquitto_conf,
            "peers": peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .ok(),
        },
        "summary": summary,
        "ratios": ratios,
        "runs": all.iter().map(BrokerRun::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_handles_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn every_ordo_form_is_compared_with_every_peer() {
        let peers = [
            Peer::Sink,
            Peer::Ordo,
            Peer::Cluster1,
            Peer::Cluster3,
            Peer::Mosquitto,
        ];
        assert_eq!(
            ratio_pairs(&peers),
            vec![
                (Peer::Ordo, Peer::Mosquitto),
                (Peer::Cluster1, Peer::Mosquitto),
                (Peer::Cluster3, Peer::Mosquitto),
            ]
        );
        assert!(ratio_pairs(&[Peer::Sink, Peer::Cluster2]).is_empty());
    }

    fn run_with_cpu(run: usize, paced_rate: f64, cores: f64, entry: f64) -> BrokerRun {
        let cpu = crate::cpu::CpuUse {
            cores,
            by_role: vec![("entry".into(), entry), ("sync".into(), cores - entry)],
            bench_cores: 0.1,
            waiting: 2.0,
            wait_per_slice_us: 150.0,
        };
        let paced = PhaseResult {
            offered_rate: Some(paced_rate),
            cpu: Some(cpu),
            ..PhaseResult::default()
        };
        BrokerRun {
            peer: Peer::Cluster1,
            run,
            sub_qos: 1,
            subscribers: 2,
            peak: Some(PhaseResult::default()),
            paced: Some(paced),
            error: None,
        }
    }

    #[test]
    fn the_cpu_table_shows_medians_per_broker_and_role() {
        let all = [
            run_with_cpu(0, 10_000.0, 1.0, 0.4),
            run_with_cpu(1, 20_000.0, 1.6, 0.6),
            run_with_cpu(2, 30_000.0, 1.8, 0.9),
        ];
        let mut s = String::new();
        cpu_table(&mut s, &all, &[Peer::Cluster1, Peer::Mosquitto]);
        let row = s
            .lines()
            .find(|l| l.starts_with("cluster1"))
            .expect("a row for the cluster");
        // Medians: 20k msg/s, 1.60 cores, 0.800 cores per 10k/s (of 1.0, 0.8, 0.6), sync 0.90
        // (of 0.6, 1.0, 0.9).
        for want in ["20.0k", "1.60", "0.800", "150us", "entry 0.60", "sync 0.90"] {
            assert!(row.contains(want), "{want} missing from {row:?}");
        }
        assert!(!s.contains("mosquitto"), "no row without figures: {s}");
        let mut empty = String::new();
        cpu_table(&mut empty, &all[..0], &[Peer::Cluster1]);
        assert!(empty.is_empty());
    }

    #[test]
    fn units_are_readable() {
        assert_eq!(rate(27_700.0), "27.7k");
        assert_eq!(rate(1_234_567.0), "1.23M");
        assert_eq!(micros(87.4), "87us");
        assert_eq!(micros(1_234.0), "1.23ms");
    }
}

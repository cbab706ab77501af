//! One router's runs and the printed comparison table.

use serde_json::{json, Value};

use crate::broker::Peer;
use crate::cli::Args;
use crate::report::median;

use super::{Latency, PhaseOut};

// ------------------------------------------------------------------------- runs and the table

/// One router measured once.
#[derive(Debug, Clone)]
pub(super) struct RouterRun {
    pub(super) peer: Peer,
    pub(super) run: usize,
    pub(super) pubsub: Option<PhaseOut>,
    pub(super) pubsub_lat: Option<PhaseOut>,
    pub(super) rpc: Option<PhaseOut>,
    pub(super) rpc_lat: Option<PhaseOut>,
    pub(super) error: Option<String>,
}

#[derive(Clone, Copy)]
enum Fig {
    PubAck,
    Events,
    AckP50,
    AckP99,
    EventP50,
    EventP99,
    Calls,
    CallP50,
    CallP99,
}

const FIGS: [(Fig, &str, bool); 9] = [
    (Fig::PubAck, "pub ack/s", true),
    (Fig::Events, "event/s", true),
    (Fig::AckP50, "ack p50", false),
    (Fig::AckP99, "ack p99", false),
    (Fig::EventP50, "event p50", false),
    (Fig::EventP99, "event p99", false),
    (Fig::Calls, "call/s", true),
    (Fig::CallP50, "call p50", false),
    (Fig::CallP99, "call p99", false),
];

impl RouterRun {
    fn figure(&self, f: Fig) -> Option<f64> {
        let l50 = |p: &Option<PhaseOut>, ev: bool| {
            p.as_ref()
                .and_then(|p| if ev { p.event_latency } else { p.ack_latency })
                .map(|l| l.p50_us)
        };
        let l99 = |p: &Option<PhaseOut>, ev: bool| {
            p.as_ref()
                .and_then(|p| if ev { p.event_latency } else { p.ack_latency })
                .map(|l| l.p99_us)
        };
        match f {
            Fig::PubAck => self.pubsub.as_ref().map(|p| p.ack_rate),
            Fig::Events if self.peer == Peer::Sink => None,
            Fig::Events => self.pubsub.as_ref().map(|p| p.event_rate),
            Fig::AckP50 => l50(&self.pubsub_lat, false),
            Fig::AckP99 => l99(&self.pubsub_lat, false),
            Fig::EventP50 => l50(&self.pubsub_lat, true),
            Fig::EventP99 => l99(&self.pubsub_lat, true),
            Fig::Calls => self.rpc.as_ref().map(|p| p.ack_rate),
            Fig::CallP50 => l50(&self.rpc_lat, false),
            Fig::CallP99 => l99(&self.rpc_lat, false),
        }
    }

    fn phases(&self) -> impl Iterator<Item = &PhaseOut> {
        [&self.pubsub, &self.pubsub_lat, &self.rpc, &self.rpc_lat]
            .into_iter()
            .flatten()
    }

    pub(super) fn to_json(&self) -> Value {
        let phase = |p: &Option<PhaseOut>| {
            p.as_ref().map(|p| {
                let l =
                    |l: Option<Latency>| l.map(|l| json!({"p50_us": l.p50_us, "p99_us": l.p99_us}));
                json!({
                    "ack_rate": p.ack_rate,
                    "event_rate": p.event_rate,
                    "ack_latency": l(p.ack_latency),
                    "event_latency": l(p.event_latency),
                    "lost": p.lost,
                    "disorder": p.disorder,
                    "errors": p.errors,
                })
            })
        };
        json!({
            "router": self.peer.to_string(),
            "run": self.run,
            "pubsub_peak": phase(&self.pubsub),
            "pubsub_latency": phase(&self.pubsub_lat),
            "rpc_peak": phase(&self.rpc),
            "rpc_latency": phase(&self.rpc_lat),
            "error": self.error,
        })
    }
}

fn fmt_value(v: Option<f64>, rate: bool) -> String {
    match v {
        None => "-".into(),
        Some(v) if rate && v >= 1000.0 => format!("{:.1}k", v / 1000.0),
        Some(v) if rate => format!("{v:.0}"),
        Some(us) if us >= 1000.0 => format!("{:.2}ms", us / 1000.0),
        Some(us) => format!("{us:.0}us"),
    }
}

pub(super) fn table(all: &[RouterRun], peers: &[Peer], args: &Args) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\nWAMP over WebSocket (wamp.2.json): {} publishers x window {} (acknowledge), {} subscribers, \
         {} callers x window {} -> 1 callee, {} B payload, {} s phases, {} run(s); latencies from \
         the window-1 phases; medians over runs",
        args.publishers,
        args.window,
        args.subscribers,
        args.callers,
        args.window,
        args.payload,
        args.duration,
        args.runs
    );
    let header: Vec<&str> = FIGS.iter().map(|(_, l, _)| *l).collect();
    let _ = writeln!(
        s,
        "| router | {} | lost | notes |\n|---|{}---|---|",
        header.join(" | "),
        "---|".repeat(FIGS.len())
    );
    for &peer in peers {
        let runs: Vec<&RouterRun> = all.iter().filter(|r| r.peer == peer).collect();
        let cells: Vec<String> = FIGS
            .iter()
            .map(|(f, _, rate)| {
                fmt_value(
                    median(runs.iter().filter_map(|r| r.figure(*f)).collect()),
                    *rate,
                )
            })
            .collect();
        let lost: u64 = runs.iter().flat_map(|r| r.phases()).map(|p| p.lost).sum();
        let disorder: u64 = runs
            .iter()
            .flat_map(|r| r.phases())
            .map(|p| p.disorder)
            .sum();
        let errors: u64 = runs.iter().flat_map(|r| r.phases()).map(|p| p.errors).sum();
        let failed = runs.iter().filter(|r| r.error.is_some()).count();
        let mut notes = Vec::new();
        if peer == Peer::Sink {
            notes.push("the generator's ceiling: acks at once, delivers nothing".to_string());
        }
        if disorder > 0 {
            notes.push(format!("{disorder} duplicate/out-of-order"));
        }
        if errors > 0 {
            notes.push(format!("{errors} ERROR answers"));
        }
        if failed > 0 {
            notes.push(format!("{failed}/{} runs failed", runs.len()));
        }
        if lost > 0 {
            notes.push("WARNING: acknowledged events lost".into());
        }
        let _ = writeln!(
            s,
            "| {peer} | {} | {lost} | {} |",
            cells.join(" | "),
            notes.join("; ")
        );
    }
    if peers.contains(&Peer::Ordo) {
        let _ = writeln!(
            s,
            "\nOrdo / peer (median of per-run ratios; rates: >1 Ordo faster, latencies: <1 Ordo faster)\n| peer | {} |\n|---|{}",
            header.join(" | "),
            "---|".repeat(FIGS.len())
        );
        for &peer in peers
            .iter()
            .filter(|p| !matches!(p, Peer::Ordo | Peer::Sink))
        {
            let cells: Vec<String> = FIGS
                .iter()
                .map(|(f, _, _)| {
                    let ratios: Vec<f64> = (0..args.runs)
                        .filter_map(|run| {
                            let get = |p: Peer| {
                                all.iter()
                                    .find(|r| r.peer == p && r.run == run)
                                    .and_then(|r| r.figure(*f))
                            };
                            match (get(Peer::Ordo), get(peer)) {
                                (Some(o), Some(x)) if x > 0.0 => Some(o / x),
                                _ => None,
                            }
                        })
                        .collect();
                    median(ratios).map_or("-".into(), |r| format!("{r:.2}"))
                })
                .collect();
            let _ = writeln!(s, "| {peer} | {} |", cells.join(" | "));
        }
    }
    for r in all.iter().filter(|r| r.error.is_some()) {
        let _ = writeln!(
            s,
            "\n{} run {}: {}",
            r.peer,
            r.run + 1,
            r.error.as_deref().unwrap_or("")
        );
    }
    s
}

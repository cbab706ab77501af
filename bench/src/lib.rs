//! `ordo-bench`: run Ordo and its peers under the same MQTT load, in the same run, and print
//! ratios.
//!
//! ```text
//!   for run in 1..=K:
//!     for broker in [sink, ordo, cluster1..3, mosquitto, foxwamp]:
//!       start broker on 127.0.0.1:<free port>  ─▶ peak phase ─▶ paced phase (50% of peak) ─▶ kill
//!   table: medians per broker, Ordo/peer = median of per-run ratios; --json for everything
//! ```
//!
//! Modules: [`cli`] arguments, `broker` child processes and the in-process `sink`, `cluster` the
//! multi-process Ordo cluster, `cpu` what the broker's processes used, `wire` MQTT
//! framing, `client` publisher/subscriber connections, `phase` one measured phase, `report`
//! the table.

#![warn(missing_docs)]

pub mod cli;

mod broker;
mod client;
mod cluster;
mod cpu;
mod phase;
mod report;
mod sink;
mod wamp;
mod wire;

use std::time::Duration;

use anyhow::{Context, Result};

pub use crate::broker::Peer;
use crate::broker::{Broker, Programs};
use crate::cli::Args;
use crate::phase::PhaseConfig;
use crate::report::BrokerRun;

/// Run every configured broker `--runs` times, print the table, write `--json` if asked.
///
/// Every broker started here is stopped before this returns, also on error; dropping the future
/// (e.g. on Ctrl-C) kills them through their guards.
pub async fn run(args: Args) -> Result<()> {
    args.validate()?;
    let peers = args.peer_list();
    let ordo_bin = args
        .ordo_bin
        .clone()
        .unwrap_or_else(broker::default_ordo_bin);
    let programs = Programs {
        ndb_bin: args
            .ndb_bin
            .clone()
            .unwrap_or_else(|| broker::beside(&ordo_bin, "ordo-ndb")),
        sync_bin: args
            .sync_bin
            .clone()
            .unwrap_or_else(|| broker::beside(&ordo_bin, "ordo-sync")),
        ordo_bin,
        mosquitto_bin: args
            .mosquitto_bin
            .clone()
            .unwrap_or_else(broker::default_mosquitto_bin),
        node_bin: args.node_bin.clone(),
        foxwamp_js: args
            .foxwamp_js
            .clone()
            .unwrap_or_else(broker::default_foxwamp_js),
        crossbar_bin: args
            .crossbar_bin
            .clone()
            .unwrap_or_else(wamp::default_crossbar_bin),
        mosquitto_conf: args.mosquitto_conf.clone(),
        tune_peers: !args.peer_defaults,
        scratch_root: args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
        entry_config: args.entry_config.clone(),
        node_metrics: args.node_metrics.is_some(),
    };
    std::fs::create_dir_all(&programs.scratch_root)
        .with_context(|| format!("create {}", programs.scratch_root.display()))?;
    let fs = broker::fs_type(&programs.scratch_root).unwrap_or_else(|| "unknown".into());
    if peers.iter().any(|p| p.is_ordo()) && matches!(fs.as_str(), "tmpfs" | "ramfs") {
        eprintln!(
            "warning: {} is on {fs}: Ordo's fsyncs cost nothing there; pass --scratch-dir on a disk",
            programs.scratch_root.display()
        );
    }
    if args.wamp {
        return wamp::run(&args, &programs).await;
    }
    let mut all = Vec::new();
    for run in 0..args.runs {
        for &peer in &peers {
            eprintln!("[run {}/{}] {peer}", run + 1, args.runs);
            let result = bench_broker(peer, run, &args, &programs).await;
            if let Some(e) = &result.error {
                eprintln!("  {peer} failed: {e}");
            }
            all.push(result);
        }
    }
    let table = report::table(&all, &peers, &args);
    println!("{table}");
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report::json(&all, &peers, &args))?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Start `peer`, run both phases against it, stop it; failures end up in the result.
async fn bench_broker(peer: Peer, run: usize, args: &Args, programs: &Programs) -> BrokerRun {
    // fox-wamp's QoS 1 subscriber breaks after 65,535 deliveries (its packet id never wraps).
    let sub_qos = if peer == Peer::Foxwamp { 0 } else { args.qos };
    let subscribers = if peer == Peer::Sink {
        0
    } else {
        args.subscribers
    };
    let mut out = BrokerRun {
        peer,
        run,
        sub_qos,
        subscribers,
        peak: None,
        paced: None,
        error: None,
    };
    let startup = Duration::from_secs_f64(args.startup_timeout);
    let mut broker = match Broker::start(peer, programs, startup).await {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let duration = Duration::from_secs_f64(args.duration);
    let mut cfg = PhaseConfig {
        name: "peak",
        tag: format!("{:x}r{run}", std::process::id()),
        pub_qos: args.qos,
        sub_qos,
        publishers: args.publishers,
        subscribers,
        payload: args.payload,
        window: args.window,
        duration,
        rate: None,
        processes: broker.pids(),
    };
    // Handshakes, sending and draining are each bounded; this is the backstop.
    let limit = duration * 3 + Duration::from_secs(60);
    let result: Result<()> = async {
        let peak = tokio::time::timeout(
            limit,
            phase::run(&broker.addrs, broker.sink_received.clone(), &cfg),
        )
        .await
        .context("peak phase timed out")?
        .context("peak phase")?;
        broker.check_alive()?;
        let sustained = peak.sustained_rate(subscribers);
        eprintln!(
            "  peak: sent {:.0}/s, acked {}/s, delivered {}/s -> paced at {:.0}/s",
            peak.sent_rate,
            peak.ack_rate.map_or("-".into(), |r| format!("{r:.0}")),
            peak.deliver_rate.map_or("-".into(), |r| format!("{r:.0}")),
            args.paced_rate.unwrap_or(sustained / 2.0)
        );
        if let Some(cpu) = &peak.cpu {
            eprintln!("  peak cpu: {}", cpu.summary());
        }
        out.peak = Some(peak);
        anyhow::ensure!(
            sustained > 0.0 || args.paced_rate.is_some(),
            "no sustained rate to pace at"
        );
        cfg.name = "paced";
        cfg.rate = Some(args.paced_rate.unwrap_or(sustained / 2.0));
        let scrape_as = format!("{peer}-r{}", run + 1);
        if let Some(dir) = &args.node_metrics {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            cluster::save_metrics(&broker.metrics, dir, &scrape_as, "before").await;
        }
        let paced = tokio::time::timeout(
            limit,
            phase::run(&broker.addrs, broker.sink_received.clone(), &cfg),
        )
        .await
        .context("paced phase timed out")?
        .context("paced phase")?;
        if let Some(dir) = &args.node_metrics {
            cluster::save_metrics(&broker.metrics, dir, &scrape_as, "after").await;
        }
        broker.check_alive()?;
        let p = |l: Option<phase::Latency>| {
            l.map_or("-".into(), |l| format!("{:.0}/{:.0}us", l.p50_us, l.p99_us))
        };
        eprintln!(
            "  paced: acked {}/s, ack p50/p99 {}, deliver p50/p99 {}",
            paced.ack_rate.map_or("-".into(), |r| format!("{r:.0}")),
            p(paced.ack_latency),
            p(paced.deliver_latency)
        );
        if !paced.ack_p99_by_second_us.is_empty() {
            let by_second: Vec<String> = paced
                .ack_p99_by_second_us
                .iter()
                .map(|us| format!("{:.1}", us / 1e3))
                .collect();
            eprintln!("  paced ack p99 by second (ms): {}", by_second.join(" "));
        }
        if let Some(cpu) = &paced.cpu {
            eprintln!("  paced cpu: {}", cpu.summary());
        }
        out.paced = Some(paced);
        Ok(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
    }
    broker.stop().await;
    out
}

//! `--wamp`: the same comparison for WAMP routers (Ordo, fox-wamp, Crossbar) over WebSocket
//! with the JSON serializer, the one every peer speaks.
//!
//! ```text
//!   for run in 1..=K, for router in [sink, ordo, foxwamp, crossbar]:
//!     start ─▶ pub/sub peak (window W) ─▶ pub/sub latency (window 1)
//!           ─▶ RPC peak (window W)     ─▶ RPC latency (window 1) ─▶ kill
//! ```
//!
//! Pub/sub: `--publishers` sessions publish with `acknowledge: true` to their own topic, at most
//! `--window` un-PUBLISHED each; `--subscribers` sessions subscribe to every topic. RPC: one
//! callee session registers `bench.<tag>.echo` and answers every INVOCATION with its arguments;
//! `--callers` sessions call it, at most `--window` outstanding each. The latency phases repeat
//! the load with one message in flight per session, so p50/p99 are not queueing behind a window.
//! Every payload carries publisher, sequence number and send time (one in-process clock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::{watch, Barrier};

use crate::broker::{self, Broker, Peer, Programs};
use crate::cli::Args;

mod report;
mod session;
mod sink;

use report::{table, RouterRun};
use session::{
    code, int, now_ns, Session, CALL, ERROR, EVENT, INVOCATION, PUBLISH, PUBLISHED, REALM,
    REGISTER, REGISTERED, RESULT, SUBSCRIBE, SUBSCRIBED, YIELD,
};
use sink::WampSink;

// ------------------------------------------------------------------------- one phase

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    p50_us: f64,
    p99_us: f64,
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
struct PhaseOut {
    /// PUBLISHED (or RESULT) per second in the measured window.
    ack_rate: f64,
    /// EVENTs per second received by all subscribers together (pub/sub only).
    event_rate: f64,
    ack_latency: Option<Latency>,
    event_latency: Option<Latency>,
    /// Acknowledged publications some subscriber never received.
    lost: u64,
    /// Duplicate or out-of-order deliveries (per publisher).
    disorder: u64,
    /// ERROR answers to PUBLISH or CALL.
    errors: u64,
}

/// Timing of a phase: sending from `start` to `deadline`, measured from `warm`.
#[derive(Clone, Copy)]
struct Clock {
    warm_ns: u64,
    deadline_ns: u64,
    drain: Duration,
}

impl Clock {
    fn new(duration: Duration) -> Self {
        let start_ns = now_ns();
        let warm = (duration / 5).min(Duration::from_secs(1));
        Self {
            warm_ns: start_ns + warm.as_nanos() as u64,
            deadline_ns: start_ns + duration.as_nanos() as u64,
            drain: duration.max(Duration::from_secs(5)),
        }
    }

    fn measured_secs(&self) -> f64 {
        (self.deadline_ns - self.warm_ns) as f64 / 1e9
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.warm_ns && t <= self.deadline_ns
    }

    fn until(&self, t_ns: u64) -> Duration {
        Duration::from_nanos(t_ns.saturating_sub(now_ns()))
    }
}

/// What one publishing/calling session saw.
struct DriverOut {
    acked: u64,
    acked_in_window: u64,
    histogram: Histogram<u64>,
    errors: u64,
    /// Per publisher, the number acked (pub/sub: what subscribers are owed).
    index: usize,
}

/// What one publishing or calling session sends.
struct Drive {
    /// Publisher (caller) index, carried in every payload.
    index: usize,
    /// Most un-acknowledged requests at a time.
    window: usize,
    clock: Clock,
    /// Topic (pub/sub) or procedure (RPC).
    target: String,
    rpc: bool,
    /// Filler that brings the payload to `--payload` bytes.
    pad: String,
    /// Every driver and the phase start sending together.
    start: Arc<Barrier>,
}

/// Publish (or call) with at most `window` outstanding until the deadline, then drain.
async fn drive(mut s: Session, d: Drive) -> Result<DriverOut> {
    let Drive {
        index,
        window,
        clock,
        target,
        rpc,
        pad,
        start,
    } = d;
    let mut out = DriverOut {
        acked: 0,
        acked_in_window: 0,
        histogram: histogram(),
        errors: 0,
        index,
    };
    let mut pending: HashMap<u64, u64> = HashMap::with_capacity(window * 2);
    let mut seq = 0u64;
    start.wait().await;
    let drain_until = clock.deadline_ns + clock.drain.as_nanos() as u64;
    loop {
        let sending = now_ns() < clock.deadline_ns;
        if sending && pending.len() < window {
            while pending.len() < window {
                let req = s.request_id();
                let t = now_ns();
                let args = json!([index, seq, t, pad]);
                let msg = if rpc {
                    json!([CALL, req, {}, target, args])
                } else {
                    json!([PUBLISH, req, {"acknowledge": true}, target, args])
                };
                s.send(msg).await?;
                pending.insert(req, t);
                seq += 1;
            }
            s.flush().await?;
        }
        if pending.is_empty() && !sending {
            break;
        }
        let wait_until = if sending {
            clock.deadline_ns
        } else {
            drain_until
        };
        let m = match tokio::time::timeout(clock.until(wait_until), s.recv()).await {
            Err(_) if sending => continue,
            Err(_) => break, // drain time is over; the rest is never acknowledged
            Ok(m) => m?.context("router closed the connection")?,
        };
        let c = code(&m);
        let req = int(&m, if c == ERROR { 2 } else { 1 });
        let Some(sent) = pending.remove(&req) else {
            continue;
        };
        let t = now_ns();
        match c {
            PUBLISHED | RESULT => {
                out.acked += 1;
                if clock.in_window(t) {
                    out.acked_in_window += 1;
                }
                if clock.in_window(sent) {
                    let _ = out.histogram.record((t - sent).max(1));
                }
            }
            _ => out.errors += 1,
        }
    }
    s.close().await;
    Ok(out)
}

/// Receive events until told how many each publisher's topic will carry and all are in.
async fn subscribe_loop(
    mut s: Session,
    topics: HashMap<u64, usize>,
    publishers: usize,
    clock: Clock,
    mut owed: watch::Receiver<Option<Vec<u64>>>,
) -> Result<(u64, u64, Histogram<u64>, Vec<u64>, u64)> {
    let mut got = vec![0u64; publishers];
    let mut next_seq = vec![0u64; publishers];
    let mut disorder = 0u64;
    let mut in_window = 0u64;
    let mut h = histogram();
    let mut total = 0u64;
    loop {
        let expected = owed.borrow().clone();
        if let Some(exp) = &expected {
            if got.iter().zip(exp).all(|(g, e)| g >= e) {
                break;
            }
        }
        let m = tokio::select! {
            m = s.recv() => m?,
            changed = owed.changed() => {
                if changed.is_err() { break; }
                continue;
            }
            _ = tokio::time::sleep(clock.until(clock.deadline_ns) + clock.drain + clock.drain) => break,
        };
        let Some(m) = m else { break };
        if code(&m) != EVENT {
            continue;
        }
        let Some(&p) = topics.get(&int(&m, 1)) else {
            continue;
        };
        let args = m.get(4).and_then(Value::as_array);
        let (seq, sent) = match args {
            Some(a) => (
                a.get(1).and_then(Value::as_u64).unwrap_or(u64::MAX),
                a.get(2).and_then(Value::as_u64).unwrap_or(0),
            ),
            None => (u64::MAX, 0),
        };
        let t = now_ns();
        total += 1;
        got[p] += 1;
        if seq != next_seq[p] {
            disorder += 1;
        }
        next_seq[p] = seq.saturating_add(1);
        if clock.in_window(t) {
            in_window += 1;
        }
        if clock.in_window(sent) && t >= sent {
            let _ = h.record((t - sent).max(1));
        }
    }
    s.close().await;
    Ok((in_window, total, h, got, disorder))
}

async fn pubsub_phase(
    addr: SocketAddr,
    args: &Args,
    tag: &str,
    window: usize,
    subscribers: usize,
) -> Result<PhaseOut> {
    let duration = Duration::from_secs_f64(args.duration);
    let topic = |i: usize| format!("bench.{tag}.w{window}.p{i}");
    let mut subs = Vec::new();
    let (owed_tx, owed_rx) = watch::channel(None);
    let mut sub_sessions = Vec::new();
    for _ in 0..subscribers {
        let mut s = Session::connect(addr).await.context("subscriber")?;
        let mut topics = HashMap::new();
        for i in 0..args.publishers {
            let req = s.request_id();
            let m = s
                .request(json!([SUBSCRIBE, req, {}, topic(i)]), SUBSCRIBED)
                .await
                .context("SUBSCRIBE")?;
            topics.insert(int(&m, 2), i);
        }
        sub_sessions.push((s, topics));
    }
    let mut pubs = Vec::new();
    for _ in 0..args.publishers {
        pubs.push(Session::connect(addr).await.context("publisher")?);
    }
    let start = Arc::new(Barrier::new(args.publishers + 1));
    let clock = Clock::new(duration);
    for (s, topics) in sub_sessions {
        subs.push(tokio::spawn(subscribe_loop(
            s,
            topics,
            args.publishers,
            clock,
            owed_rx.clone(),
        )));
    }
    let pad = "x".repeat(args.payload.saturating_sub(42));
    let drivers: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(drive(
                s,
                Drive {
                    index: i,
                    window,
                    clock,
                    target: topic(i),
                    rpc: false,
                    pad: pad.clone(),
                    start: start.clone(),
                },
            ))
        })
        .collect();
    start.wait().await;
    let mut out = PhaseOut::default();
    let mut acks = histogram();
    let mut owed = vec![0u64; args.publishers];
    let mut acked_in_window = 0;
    for d in drivers {
        let d = d.await??;
        owed[d.index] = d.acked;
        acked_in_window += d.acked_in_window;
        out.errors += d.errors;
        acks.add(&d.histogram)?;
    }
    let _ = owed_tx.send(Some(owed.clone()));
    let mut events = histogram();
    let mut events_in_window = 0;
    for s in subs {
        let (in_window, _total, h, got, disorder) = s.await??;
        events_in_window += in_window;
        events.add(&h)?;
        out.disorder += disorder;
        out.lost += owed
            .iter()
            .zip(&got)
            .map(|(o, g)| o.saturating_sub(*g))
            .sum::<u64>();
    }
    out.ack_rate = acked_in_window as f64 / clock.measured_secs();
    out.event_rate = events_in_window as f64 / clock.measured_secs();
    out.ack_latency = latency(&acks);
    out.event_latency = latency(&events);
    Ok(out)
}

async fn rpc_phase(addr: SocketAddr, args: &Args, tag: &str, window: usize) -> Result<PhaseOut> {
    let duration = Duration::from_secs_f64(args.duration);
    let procedure = format!("bench.{tag}.w{window}.echo");
    let mut callee = Session::connect(addr).await.context("callee")?;
    let req = callee.request_id();
    callee
        .request(json!([REGISTER, req, {}, procedure]), REGISTERED)
        .await
        .context("REGISTER")?;
    let stop = Arc::new(AtomicU64::new(0));
    let callee_stop = stop.clone();
    let callee_task = tokio::spawn(async move {
        let mut served = 0u64;
        while callee_stop.load(Ordering::Relaxed) == 0 {
            let m = match tokio::time::timeout(Duration::from_millis(200), callee.recv()).await {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(_) => break,
            };
            if code(&m) != INVOCATION {
                continue;
            }
            let args = m.get(4).cloned().unwrap_or_else(|| json!([]));
            if callee
                .send(json!([YIELD, int(&m, 1), {}, args]))
                .await
                .is_err()
                || callee.flush().await.is_err()
            {
                break;
            }
            served += 1;
        }
        callee.close().await;
        served
    });
    let mut callers = Vec::new();
    for _ in 0..args.callers {
        callers.push(Session::connect(addr).await.context("caller")?);
    }
    let start = Arc::new(Barrier::new(args.callers + 1));
    let clock = Clock::new(duration);
    let pad = "x".repeat(args.payload.saturating_sub(42));
    let drivers: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(drive(
                s,
                Drive {
                    index: i,
                    window,
                    clock,
                    target: procedure.clone(),
                    rpc: true,
                    pad: pad.clone(),
                    start: start.clone(),
                },
            ))
        })
        .collect();
    start.wait().await;
    let mut out = PhaseOut::default();
    let mut h = histogram();
    let mut in_window = 0;
    for d in drivers {
        let d = d.await??;
        in_window += d.acked_in_window;
        out.errors += d.errors;
        h.add(&d.histogram)?;
    }
    stop.store(1, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), callee_task).await;
    out.ack_rate = in_window as f64 / clock.measured_secs();
    out.ack_latency = latency(&h);
    Ok(out)
}

/// `--wamp`: measure every router of `--wamp-peers` `--runs` times; print the table.
pub async fn run(args: &Args, programs: &Programs) -> Result<()> {
    let mut peers = args.wamp_peers.clone();
    if !args.no_sink {
        peers.push(Peer::Sink);
    }
    peers.sort();
    peers.dedup();
    for p in &peers {
        if !matches!(p, Peer::Sink | Peer::Ordo | Peer::Foxwamp | Peer::Crossbar) {
            bail!("--wamp-peers takes sink, ordo, foxwamp and crossbar, not {p}");
        }
    }
    if peers.contains(&Peer::Crossbar)
        && !programs.crossbar_bin.exists()
        && args.crossbar_bin.is_none()
    {
        // Not measured if this fails: the crossbar row then says why.
        if let Err(e) = install_crossbar().await {
            eprintln!("crossbar: {e:#}");
        }
    }
    let mut all = Vec::new();
    for run in 0..args.runs {
        for &peer in &peers {
            eprintln!("[run {}/{}] {peer} (WAMP)", run + 1, args.runs);
            let r = bench_router(peer, run, args, programs).await;
            if let Some(e) = &r.error {
                eprintln!("  {peer} failed: {e}");
            }
            all.push(r);
        }
    }
    println!("{}", table(&all, &peers, args));
    if let Some(path) = &args.json {
        let v = json!({
            "mode": "wamp",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "publishers": args.publishers,
            "subscribers": args.subscribers,
            "callers": args.callers,
            "window": args.window,
            "payload": args.payload,
            "duration": args.duration,
            "runs": all.iter().map(RouterRun::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn bench_router(peer: Peer, run: usize, args: &Args, programs: &Programs) -> RouterRun {
    let mut out = RouterRun {
        peer,
        run,
        pubsub: None,
        pubsub_lat: None,
        rpc: None,
        rpc_lat: None,
        error: None,
    };
    let startup = Duration::from_secs_f64(args.startup_timeout);
    let started = if peer == Peer::Sink {
        WampSink::start().map(Router::Sink)
    } else {
        Broker::start(peer, programs, startup)
            .await
            .map(Router::Broker)
    };
    let mut router = match started {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let Some(addr) = router.wamp() else {
        out.error = Some(format!("{peer} has no WAMP listener"));
        router.stop().await;
        return out;
    };
    let tag = format!("x{:x}r{run}", std::process::id());
    // The sink delivers nothing: its row measures the publishers and callers only.
    let subscribers = if peer == Peer::Sink {
        0
    } else {
        args.subscribers
    };
    let limit = Duration::from_secs_f64(args.duration * 3.0 + 60.0);
    let result: Result<()> = async {
        let show = |name: &str, p: &PhaseOut| {
            let l = |l: Option<Latency>| l.map_or("-".into(), |l| format!("{:.0}/{:.0}us", l.p50_us, l.p99_us));
            eprintln!(
                "  {name}: ack {:.0}/s, event {:.0}/s, ack p50/p99 {}, event p50/p99 {}, lost {}, errors {}",
                p.ack_rate, p.event_rate, l(p.ack_latency), l(p.event_latency), p.lost, p.errors
            );
        };
        let p = tokio::time::timeout(limit, pubsub_phase(addr, args, &tag, args.window, subscribers))
            .await
            .context("pub/sub phase timed out")?
            .context("pub/sub phase")?;
        show("pub/sub", &p);
        out.pubsub = Some(p);
        router.check_alive()?;
        let p = tokio::time::timeout(limit, pubsub_phase(addr, args, &tag, 1, subscribers))
            .await
            .context("pub/sub latency phase timed out")?
            .context("pub/sub latency phase")?;
        show("pub/sub window 1", &p);
        out.pubsub_lat = Some(p);
        router.check_alive()?;
        let p = tokio::time::timeout(limit, rpc_phase(addr, args, &tag, args.window))
            .await
            .context("RPC phase timed out")?
            .context("RPC phase")?;
        show("rpc", &p);
        out.rpc = Some(p);
        router.check_alive()?;
        let p = tokio::time::timeout(limit, rpc_phase(addr, args, &tag, 1))
            .await
            .context("RPC latency phase timed out")?
            .context("RPC latency phase")?;
        show("rpc window 1", &p);
        out.rpc_lat = Some(p);
        router.check_alive()?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
    }
    router.stop().await;
    out
}

/// A router under test: the in-process sink or a started broker.
enum Router {
    Sink(WampSink),
    Broker(Broker),
}

impl Router {
    fn wamp(&self) -> Option<SocketAddr> {
        match self {
            Router::Sink(s) => Some(s.addr),
            Router::Broker(b) => b.wamp,
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        match self {
            Router::Sink(_) => Ok(()),
            Router::Broker(b) => b.check_alive(),
        }
    }

    async fn stop(self) {
        match self {
            Router::Sink(s) => drop(s),
            Router::Broker(b) => b.stop().await,
        }
    }
}

/// Run scripts/crossbar-venv.sh (pip install crossbar into bench/.crossbar-venv), at most 20 min.
async fn install_crossbar() -> Result<()> {
    let script = broker::workspace_root()
        .join("scripts")
        .join("crossbar-venv.sh");
    eprintln!(
        "crossbar: {} missing; running {} (about 140 packages, 1-2 minutes)",
        default_crossbar_bin().display(),
        script.display()
    );
    let mut child = tokio::process::Command::new("bash")
        .arg(&script)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", script.display()))?;
    let status = tokio::time::timeout(Duration::from_secs(20 * 60), child.wait())
        .await
        .context("crossbar-venv.sh took over 20 minutes")??;
    anyhow::ensure!(status.success(), "crossbar-venv.sh failed ({status})");
    Ok(())
}

/// `<workspace>/bench/.crossbar-venv/bin/crossbar` (made by scripts/crossbar-venv.sh).
pub fn default_crossbar_bin() -> std::path::PathBuf {
    broker::workspace_root()
        .join("bench")
        .join(".crossbar-venv")
        .join("bin")
        .join("crossbar")
}

/// The node configuration Crossbar reads from `<cbdir>/config.json`: one router worker, realm1
/// with the anonymous role allowed everything, one WebSocket transport on `port`.
pub fn crossbar_config(port: u16) -> Value {
    json!({
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{
                "name": REALM,
                "roles": [{
                    "name": "anonymous",
                    "permissions": [{
                        "uri": "",
                        "match": "prefix",
                        "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                        "disclose": {"caller": false, "publisher": false},
                        "cache": true
                    }]
                }]
            }],
            "transports": [{
                "type": "websocket",
                "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
                "serializers": ["json", "msgpack"],
                "auth": {"anonymous": {"type": "static", "role": "anonymous"}}
            }]
        }]
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["ordo-bench", "--wamp", "--duration", "0.5"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn phases_against_the_sink_count_every_ack() {
        let sink = WampSink::start().expect("sink");
        let a = args(&["--publishers", "2", "--callers", "2", "--window", "8"]);
        let p = pubsub_phase(sink.addr, &a, "t", 8, 0)
            .await
            .expect("pub/sub");
        assert!(p.ack_rate > 0.0 && p.ack_latency.is_some());
        assert_eq!((p.lost, p.disorder, p.errors), (0, 0, 0));
        assert!(p.event_latency.is_none());
        let r = rpc_phase(sink.addr, &a, "t", 1).await.expect("rpc");
        assert!(r.ack_rate > 0.0 && r.ack_latency.is_some());
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn crossbar_config_allows_everything_on_one_port() {
        let c = crossbar_config(4242);
        let worker = &c["workers"][0];
        assert_eq!(worker["transports"][0]["endpoint"]["port"], 4242);
        assert_eq!(
            worker["transports"][0]["endpoint"]["interface"],
            "127.0.0.1"
        );
        let permission = &worker["realms"][0]["roles"][0]["permissions"][0];
        assert_eq!(permission["uri"], "");
        assert_eq!(permission["match"], "prefix");
        for action in ["call", "register", "publish", "subscribe"] {
            assert_eq!(permission["allow"][action], true);
        }
    }

    #[test]
    fn ratios_are_per_run_and_skip_the_sink() {
        let out = |peer, run, rate| RouterRun {
            peer,
            run,
            pubsub: Some(PhaseOut {
                ack_rate: rate,
                ..PhaseOut::default()
            }),
            pubsub_lat: None,
            rpc: None,
            rpc_lat: None,
            error: None,
        };
        let all = [
            out(Peer::Sink, 0, 100.0),
            out(Peer::Ordo, 0, 30.0),
            out(Peer::Foxwamp, 0, 10.0),
        ];
        let a = args(&[]);
        let text = table(&all, &[Peer::Sink, Peer::Ordo, Peer::Foxwamp], &a);
        assert!(text.contains("| foxwamp | 3.00 |"), "{text}");
        assert!(!text.contains("| sink | 0.30"), "{text}");
    }
}

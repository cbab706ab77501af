//! The real `ordo-entry` binary as a subprocess: clean restart and `kill -9`.
//!
//! Cargo builds the binary for these tests (`CARGO_BIN_EXE_ordo-entry`). The
//! clients are the ones of the `ordo-tests` crate, included by path because
//! `ordo-tests` depends on this crate.

#[allow(dead_code)]
#[path = "../../tests/src/mqtt_raw.rs"]
mod mqtt_raw;
#[allow(dead_code)]
#[path = "../../tests/src/wamp_client.rs"]
mod wamp_client;

use anyhow::{bail, ensure, Context};
use mqtt_raw::{publish_packet, RawMqtt};
use ordo_common::mqtt::{Packet, QoS};
use ordo_common::wamp::value::to_json;
use ordo_common::wamp::{Serializer, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use wamp_client::{dict, WampClient, REALM};

type Result = anyhow::Result<()>;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `ordo-entry --standalone` process.
struct Process {
    child: Child,
    mqtt: SocketAddr,
    wamp: SocketAddr,
    log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

impl Process {
    /// Start the binary on free ports with `data_dir`; wait until both listeners are bound.
    async fn start(data_dir: &Path, name: &str) -> anyhow::Result<Process> {
        let mut last_error = None;
        // A port found free may be taken before the binary binds it; try a few times.
        for attempt in 0..5 {
            let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let wamp = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let log = data_dir
                .parent()
                .unwrap_or(data_dir)
                .join(format!("{name}-{attempt}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_ordo-entry"))
                .arg("--standalone")
                .arg("--mqtt")
                .arg(mqtt.to_string())
                .arg("--wamp")
                .arg(wamp.to_string())
                .args(["--wamp-rawsocket", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(data_dir)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .kill_on_drop(true)
                .spawn()
                .context("spawn ordo-entry")?;
            let mut process = Process {
                child,
                mqtt,
                wamp,
                log,
            };
            match process.wait_ready().await {
                Ok(()) => return Ok(process),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("ordo-entry did not start")))
    }

    /// Wait until the log says both listeners are bound to our ports.
    async fn wait_ready(&mut self) -> Result {
        let ready = format!("WAMP listening on ws://{}/", self.wamp);
        let mqtt_ready = format!("MQTT listening on mqtt://{}", self.mqtt);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = log_text(&self.log);
            if text.contains(&ready) && text.contains(&mqtt_ready) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("ordo-entry exited with {status} during start:\n{text}");
            }
            if Instant::now() >= deadline {
                let _ = self.child.start_kill();
                bail!("ordo-entry not ready within {START_TIMEOUT:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Send SIGTERM and wait for a clean exit.
    async fn terminate(mut self) -> Result {
        let pid = self.child.id().context("process already reaped")?;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("no exit after SIGTERM:\n{}", log_text(&self.log)))??;
        ensure!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            log_text(&self.log)
        );
        Ok(())
    }

    /// Send SIGKILL and reap the process.
    async fn kill9(mut self) -> Result {
        self.child.start_kill()?;
        tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .context("no exit after SIGKILL")??;
        Ok(())
    }
}

/// Publish `count` QoS 1 messages with JSON number payloads `first..first+count`,
/// up to `window` in flight; return once all are acknowledged.
async fn publish_numbers(client: &mut RawMqtt, topic: &str, count: u64, window: u64) -> Result {
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        while sent < count && sent - acked < window {
            let pkid = (sent % 65_535) as u16 + 1;
            let payload = sent.to_string();
            client.queue(&publish_packet(
                topic,
                payload.as_bytes(),
                QoS::AtLeastOnce,
                pkid,
                false,
            ))?;
            sent += 1;
        }
        client.flush().await?;
        let want = (acked % 65_535) as u16 + 1;
        match client.recv().await? {
            Packet::PubAck(id) if id == want => acked += 1,
            other => bail!("expected PUBACK {want}, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_keeps_every_message_in_order() -> Result {
    const N: u64 = 1_000;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let node = Process::start(&data, "first").await?;
    let (mut publisher, _) = RawMqtt::connect(node.mqtt, "restart-pub", true, 0).await?;
    publish_numbers(&mut publisher, "restart/t", N, 100).await?;
    publisher
        .publish_acked("restart/retained", b"kept", 1, true)
        .await?;
    publisher
        .publish_acked("restart/cleared", b"gone soon", 2, true)
        .await?;
    publisher
        .publish_acked("restart/cleared", b"", 3, true)
        .await?;
    publisher.disconnect().await?;
    node.terminate().await?;

    let node = Process::start(&data, "second").await?;
    let mut sub = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    sub.subscribe("restart.t", dict([("after", Value::from(0u64))]))
        .await?;
    let mut last = 0u64;
    for want in 0..N {
        let e = sub.next_event().await?;
        let got = e.args.first().and_then(Value::as_u64);
        ensure!(
            got == Some(want),
            "replay position {want}: got {:?}",
            e.args
        );
        ensure!(e.publication > last, "ids must strictly increase");
        last = e.publication;
    }
    // A new publication continues strictly above every stored id and arrives live.
    let mut publisher = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let id = publisher
        .publish_acked("restart.t", vec![Value::from(N)])
        .await?;
    ensure!(id > last, "new id {id} not above the old ids (last {last})");
    let e = sub.next_event().await?;
    ensure!(
        e.publication == id && e.args.first().and_then(Value::as_u64) == Some(N),
        "after the replay, the next event must be the new one: {e:?}"
    );
    // The retained message survived the restart.
    let (mut mqtt_sub, _) = RawMqtt::connect(node.mqtt, "restart-sub", true, 0).await?;
    mqtt_sub
        .subscribe(1, &[("restart/+", QoS::AtLeastOnce)])
        .await?;
    let p = mqtt_sub.recv_publish().await?;
    ensure!(
        p.retain && p.topic == "restart/retained" && &p.payload[..] == b"kept",
        "retained after restart: {p:?}"
    );
    let (mut marker, _) = RawMqtt::connect(node.mqtt, "restart-marker", true, 0).await?;
    marker
        .publish_acked("restart/marker", b"m", 1, false)
        .await?;
    let p = mqtt_sub.recv_publish().await?;
    ensure!(
        p.topic == "restart/marker",
        "a cleared retained message came back after the restart: {p:?}"
    );
    node.terminate().await
}

/// What one publisher got through before the crash.
#[derive(Debug)]
struct Outcome {
    sent: u64,
    acked: u64,
    /// Anything other than an in-order PUBACK or a broken connection.
    anomaly: Option<String>,
}

/// Publish `{"p": name, "s": seq}` at QoS 1 until the connection breaks.
async fn publish_until_broken(
    addr: SocketAddr,
    name: String,
    total_acked: Arc<AtomicU64>,
) -> Outcome {
    let mut outcome = Outcome {
        sent: 0,
        acked: 0,
        anomaly: None,
    };
    let Ok((mut client, _)) = RawMqtt::connect(addr, &format!("k9-{name}"), true, 0).await else {
        return outcome;
    };
    let topic = format!("k9/{name}");
    let window = 64;
    loop {
        while outcome.sent - outcome.acked < window {
            let payload = format!(r#"{{"p":"{name}","s":{}}}"#, outcome.sent);
            let pkid = (outcome.sent % 65_535) as u16 + 1;
            let packet = publish_packet(&topic, payload.as_bytes(), QoS::AtLeastOnce, pkid, false);
            if client.queue(&packet).is_err() {
                return outcome;
            }
            outcome.sent += 1;
        }
        if client.flush().await.is_err() {
            return outcome;
        }
        match client.recv().await {
            Ok(Packet::PubAck(id)) if id == (outcome.acked % 65_535) as u16 + 1 => {
                outcome.acked += 1;
                total_acked.fetch_add(1, Ordering::Relaxed);
            }
            // Out-of-order acks would make the acked prefix meaningless; stop counting.
            Ok(other) => {
                outcome.anomaly = Some(format!("unexpected {other:?}"));
                return outcome;
            }
            Err(_) => return outcome,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_no_acknowledged_message() -> Result {
    const PUBLISHERS: usize = 4;
    const KILL_AFTER: u64 = 4_000;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let node = Process::start(&data, "first").await?;
    let total = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            tokio::spawn(publish_until_broken(
                node.mqtt,
                format!("p{i}"),
                total.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while total.load(Ordering::Relaxed) < KILL_AFTER {
        ensure!(
            Instant::now() < deadline,
            "load never reached {KILL_AFTER} acks"
        );
        ensure!(
            !tasks.iter().any(|t| t.is_finished()),
            "a publisher stopped before the kill:\n{}",
            log_text(&node.log)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9().await?;
    let mut outcomes = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .context("publisher did not notice the kill")??;
        outcomes.insert(format!("p{i}"), outcome);
    }

    let node = Process::start(&data, "second").await?;
    let mut sub = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    sub.subscribe(
        "k9.",
        dict([
            ("match", Value::from("wildcard")),
            ("after", Value::from(0u64)),
        ]),
    )
    .await?;
    let mut marker_client = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let marker = marker_client
        .publish_acked("k9.marker", vec![Value::from("end")])
        .await?;

    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last = 0u64;
    loop {
        let e = sub.next_event().await?;
        ensure!(e.publication > last, "ids must strictly increase");
        last = e.publication;
        if e.publication == marker {
            break;
        }
        let body = to_json(e.args.first().context("event without arguments")?);
        let p = body["p"].as_str().context("no p")?.to_owned();
        let s = body["s"].as_u64().context("no s")?;
        stored.entry(p).or_default().push(s);
    }
    ensure!(marker > 0 && last == marker);
    let counts: BTreeMap<&String, usize> = stored.iter().map(|(k, v)| (k, v.len())).collect();
    eprintln!("publishers at the kill: {outcomes:?}\nstored after restart: {counts:?}");
    for (name, outcome) in &outcomes {
        ensure!(outcome.anomaly.is_none(), "{name}: {outcome:?}");
        let seqs = stored.get(name).map(Vec::as_slice).unwrap_or(&[]);
        // Stored: exactly 0..n in order, once each, with every acknowledged one present.
        let n = seqs.len() as u64;
        ensure!(
            seqs.iter().copied().eq(0..n),
            "{name}: stored sequence is not 0..{n} in order (duplicate, gap or reorder)"
        );
        ensure!(
            n >= outcome.acked,
            "{name}: {} acknowledged but only {n} stored",
            outcome.acked
        );
        ensure!(
            n <= outcome.sent,
            "{name}: {n} stored but only {} sent",
            outcome.sent
        );
    }
    ensure!(
        stored.keys().all(|k| outcomes.contains_key(k)),
        "unknown publishers in the log: {:?}",
        stored.keys()
    );
    node.terminate().await
}

/// Session ids restart after a restart; a new session that happens to get the id
/// of an old publisher must still see that publisher's stored messages on replay
/// (publisher exclusion is about the publishing session, not a reused number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_restart_ignores_reused_session_ids() -> Result {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let node = Process::start(&data, "first").await?;
    let mut publisher = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let old_session = publisher.session;
    let mut ids = Vec::new();
    for i in 0..5u64 {
        // Default options: exclude_me is on.
        ids.push(
            publisher
                .publish_acked("reuse.t", vec![Value::from(i)])
                .await?,
        );
    }
    publisher.leave().await?;
    node.terminate().await?;

    let node = Process::start(&data, "second").await?;
    // Join until a session gets the old publisher's id (ids restart), at most 50 tries.
    let mut clients = Vec::new();
    let mut reader = loop {
        let c = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
        if c.session == old_session || clients.len() >= 50 {
            break c;
        }
        clients.push(c);
    };
    eprintln!(
        "old publisher session {old_session}, reader session {}",
        reader.session
    );
    reader
        .subscribe("reuse.t", dict([("after", Value::from(0u64))]))
        .await?;
    let mut marker_client = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let marker = marker_client
        .publish_acked("reuse.t", vec![Value::from("end")])
        .await?;
    let mut got = Vec::new();
    loop {
        let e = reader.next_event().await?;
        if e.publication == marker {
            break;
        }
        got.push(e.publication);
    }
    ensure!(
        got == ids,
        "replay to session {} returned {got:?}, stored {ids:?}",
        reader.session
    );
    node.terminate().await
}

//! Start an Ordo cluster of separate processes on loopback: 3 `ordo-sync`, 3 `ordo-ndb` and 1-3
//! `ordo-entry --cluster`.
//!
//! ```text
//!  scratch/cluster.toml (free UDP ports) ─▶ ordo-entry cluster-certs ─▶ scratch/certs
//!  ─▶ sync1..3, ndb1..3 ─▶ entry1..N (wait for each MQTT port)
//!  ─▶ one QoS 1 probe PUBLISH through every entry, wait for its PUBACK (the cluster orders)
//! ```
//!
//! Every process is owned by the returned [`Processes`]: dropping it kills them all and removes
//! the scratch directory with their data folders.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::process::Command;

use crate::broker::{free_ports, Peer, Processes, Programs, ScratchDir};
use crate::wire;

/// Sync nodes of every cluster peer.
pub const SYNCS: usize = 3;
/// Storage nodes of every cluster peer.
pub const NDBS: usize = 3;

/// Start `peer` (`entries` entries) and return the entries' MQTT addresses once every entry has
/// PUBACKed a probe message, i.e. the whole cluster is ordering.
pub async fn start(
    peer: Peer,
    entries: usize,
    programs: &Programs,
    startup: Duration,
) -> Result<(Vec<SocketAddr>, Vec<(String, SocketAddr)>, Processes)> {
    for (bin, what) in [
        (&programs.ordo_bin, "ordo-entry (--ordo-bin)"),
        (&programs.ndb_bin, "ordo-ndb (--ndb-bin)"),
        (&programs.sync_bin, "ordo-sync (--sync-bin)"),
    ] {
        if !bin.exists() {
            bail!(
                "{} not found: build {what} (cargo build --release -p ordo-entry -p ordo-ndb \
                 -p ordo-sync) or pass the flag",
                bin.display()
            );
        }
    }
    let deadline = tokio::time::Instant::now() + startup;
    let mut processes = Processes::new(ScratchDir::create(&programs.scratch_root, peer)?);
    let dir = processes.dir().to_path_buf();
    let cluster_file = dir.join("cluster.toml");
    std::fs::write(&cluster_file, cluster_toml(entries)?)
        .with_context(|| format!("write {}", cluster_file.display()))?;
    certs(&programs.ordo_bin, &cluster_file, &dir).await?;

    let data = dir.join("data");
    // Every TCP port of the run in one pick: ports picked apart can coincide, since a picked
    // port is free again until its node binds it.
    let nodes_with_metrics = if programs.node_metrics {
        SYNCS + NDBS + entries
    } else {
        0
    };
    let mut tcp_ports = free_ports(2 * entries + nodes_with_metrics)?.into_iter();
    let ports: Vec<u16> = tcp_ports.by_ref().take(2 * entries).collect();
    let mut metrics = Vec::new();
    let mut metrics_arg = |cmd: &mut Command, name: &str| -> Result<()> {
        if programs.node_metrics {
            let port = tcp_ports.next().context("a metrics port for every node")?;
            let addr = loopback(port);
            cmd.arg("--metrics").arg(addr.to_string());
            metrics.push((name.to_string(), addr));
        }
        Ok(())
    };
    for (role, bin, count) in [
        ("sync", &programs.sync_bin, SYNCS),
        ("ndb", &programs.ndb_bin, NDBS),
    ] {
        for id in 1..=count {
            let name = format!("{role}{id}");
            let mut cmd = node_command(bin, &cluster_file, id);
            cmd.arg("--data-dir").arg(data.join(&name));
            metrics_arg(&mut cmd, &name)?;
            processes.spawn(&name, cmd, dir.join(format!("{name}.log")))?;
        }
    }
    let mut addrs = Vec::with_capacity(entries);
    for id in 1..=entries {
        let name = format!("entry{id}");
        let mqtt = loopback(ports[2 * (id - 1)]);
        let wamp = loopback(ports[2 * (id - 1) + 1]);
        let mut cmd = node_command(&programs.ordo_bin, &cluster_file, id);
        cmd.arg("--mqtt")
            .arg(mqtt.to_string())
            .arg("--wamp")
            .arg(wamp.to_string())
            .args(["--wamp-rawsocket", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.join(&name));
        if let Some(config) = &programs.entry_config {
            cmd.arg("--config").arg(config);
        }
        metrics_arg(&mut cmd, &name)?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        processes
            .spawn(&name, cmd, dir.join(format!("{name}.log")))?
            .wait_listening(mqtt, left)
            .await
            .with_context(|| format!("{peer}"))?;
        addrs.push(mqtt);
    }
    for (i, &addr) in addrs.iter().enumerate() {
        let probe = tokio::time::timeout_at(deadline, probe(addr, i));
        match probe.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                processes.check_alive()?;
                return Err(e.context(format!("{peer}: probe through entry{}", i + 1)));
            }
            Err(_) => {
                processes.check_alive()?;
                bail!(
                    "{peer}: entry{} did not PUBACK a probe within {startup:?} (logs in {})",
                    i + 1,
                    dir.display()
                );
            }
        }
    }
    Ok((addrs, metrics, processes))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// `<bin> --cluster <file> --id <id>` with plain logs and a closed stdin.
fn node_command(bin: &Path, cluster_file: &Path, id: usize) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--cluster")
        .arg(cluster_file)
        .arg("--id")
        .arg(id.to_string())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    // Nine processes share this machine's cores: one runtime thread each (docs/performance.md,
    // sixth day), unless the caller chose otherwise. An environment variable, so that older
    // binaries without `--threads` still start.
    for var in ["ORDO_ENTRY_THREADS", "ORDO_NODE_THREADS"] {
        if std::env::var_os(var).is_none() {
            cmd.env(var, "1");
        }
    }
    cmd
}

/// The cluster file: `cert_dir = "certs"` and one block per node, each on a free UDP port.
fn cluster_toml(entries: usize) -> Result<String> {
    let ports = free_udp_ports(SYNCS + NDBS + entries)?;
    let mut ports = ports.into_iter();
    let mut text = String::from("cert_dir = \"certs\"\n");
    for (role, count) in [("sync", SYNCS), ("ndb", NDBS), ("entry", entries)] {
        for id in 1..=count {
            let port = ports.next().context("too few UDP ports")?;
            let _ = write!(
                text,
                "\n[[{role}]]\nid = {id}\naddr = \"127.0.0.1:{port}\"\n"
            );
        }
    }
    Ok(text)
}

/// Distinct free UDP ports on 127.0.0.1 (held together while picking so they differ).
fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("pick a free UDP port")?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// `ordo-entry cluster-certs --cluster <file>`: a CA and one certificate per node in `dir/certs`.
async fn certs(entry_bin: &Path, cluster_file: &Path, dir: &Path) -> Result<()> {
    let run = Command::new(entry_bin)
        .arg("cluster-certs")
        .arg("--cluster")
        .arg(cluster_file)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("ordo-entry cluster-certs timed out")?
        .context("run ordo-entry cluster-certs")?;
    if !out.status.success() {
        bail!(
            "ordo-entry cluster-certs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Publish one QoS 1 message through the entry at `addr` and wait for its PUBACK; retried until
/// the caller's deadline while the cluster is still electing or connecting.
async fn probe(addr: SocketAddr, entry: usize) -> Result<()> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match probe_once(addr, entry, attempt).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 60 => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn probe_once(addr: SocketAddr, entry: usize, attempt: u32) -> Result<()> {
    let id = format!("ob-probe-{}-e{entry}-{attempt}", std::process::id());
    let mut conn = wire::connect(addr, &id).await?;
    let mut publish = Publish::new("ordo-bench/probe", QoS::AtLeastOnce, "\"probe\"");
    publish.pkid = 1;
    wire::write_packet(&mut conn.wr, Packet::Publish(publish)).await?;
    let wait = async {
        loop {
            match wire::read_packet(&mut conn).await? {
                Packet::PubAck(ack) if ack.pkid == 1 => return Ok(()),
                Packet::PubAck(_) | Packet::PingResp => {}
                other => bail!("expected PUBACK, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .context("no PUBACK within 5 s")?
}

/// Scrape every node's `/metrics` and write each to `dir/<prefix>-<node>-<when>.prom`.
/// A node that does not answer is reported and skipped: the scrape is a diagnostic.
pub async fn save_metrics(nodes: &[(String, SocketAddr)], dir: &Path, prefix: &str, when: &str) {
    for (name, addr) in nodes {
        let path = dir.join(format!("{prefix}-{name}-{when}.prom"));
        let scraped = tokio::time::timeout(Duration::from_secs(5), scrape(*addr)).await;
        let result = match scraped {
            Ok(Ok(text)) => std::fs::write(&path, text).with_context(|| path.display().to_string()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!("timed out")),
        };
        if let Err(e) = result {
            eprintln!("  metrics of {name} ({addr}): {e:#}");
        }
    }
}

/// `GET /metrics` over a fresh connection; the body is everything after the headers.
async fn scrape(addr: SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map_or(&*text, |(_, b)| b);
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_file_lists_every_node_once() {
        let text = cluster_toml(2).expect("ports");
        assert!(text.starts_with("cert_dir = \"certs\"\n"));
        assert_eq!(text.matches("[[sync]]").count(), 3);
        assert_eq!(text.matches("[[ndb]]").count(), 3);
        assert_eq!(text.matches("[[entry]]").count(), 2);
        let ports: std::collections::HashSet<&str> =
            text.lines().filter(|l| l.starts_with("addr")).collect();
        assert_eq!(ports.len(), 8, "{text}");
    }
}

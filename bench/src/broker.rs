//! Start and stop the brokers under test, always on 127.0.0.1.
//!
//! Every external broker runs as a child process owned by a [`ProcessGuard`]: dropping the guard
//! (normal end, error, Ctrl-C) kills the process and removes its scratch directory, so a run never
//! leaves a broker behind.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use tokio::process::{Child, ChildStdin, Command};

use crate::sink::Sink;

/// A broker the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Peer {
    /// Built-in acker: PUBACKs at once, forwards nothing (the generator's ceiling).
    Sink,
    /// Ordo's entry binary in standalone mode.
    Ordo,
    /// Eclipse mosquitto.
    Mosquitto,
    /// fox-wamp (Node.js), launched through bench/peers/foxwamp.js.
    Foxwamp,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Sink => "sink",
            Peer::Ordo => "ordo",
            Peer::Mosquitto => "mosquitto",
            Peer::Foxwamp => "foxwamp",
        })
    }
}

/// Where the external brokers live.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Ordo's `ordo-entry` binary.
    pub ordo_bin: PathBuf,
    /// The mosquitto binary.
    pub mosquitto_bin: PathBuf,
    /// The node binary.
    pub node_bin: PathBuf,
    /// bench/peers/foxwamp.js.
    pub foxwamp_js: PathBuf,
    /// Lines appended to the generated mosquitto.conf.
    pub mosquitto_conf: Vec<String>,
    /// Tune mosquitto and fox-wamp for the workload (see `--peer-defaults`).
    pub tune_peers: bool,
    /// Parent of every scratch directory.
    pub scratch_root: PathBuf,
}

/// Workspace root, known at compile time.
pub fn workspace_root() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).to_path_buf()
}

/// `$CARGO_TARGET_DIR/release/ordo-entry`, else `<workspace>/target/release/ordo-entry`.
pub fn default_ordo_bin() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    target.join("release").join("ordo-entry")
}

/// `/usr/sbin/mosquitto` when present, else `mosquitto` from `PATH`.
pub fn default_mosquitto_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("mosquitto")
    }
}

/// `bench/peers/foxwamp.js`.
pub fn default_foxwamp_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join("foxwamp.js")
}

/// A started broker, listening for MQTT on `addr`; dropping it stops it.
pub struct Broker {
    /// Which broker this is.
    pub peer: Peer,
    /// Its MQTT listener (always 127.0.0.1).
    pub addr: SocketAddr,
    /// For the sink only: PUBLISH packets it received.
    pub sink_received: Option<Arc<AtomicU64>>,
    running: Running,
}

enum Running {
    Sink(Sink),
    Process(ProcessGuard),
}

impl Broker {
    /// Start `peer` on free loopback ports and wait until its MQTT port accepts connections.
    pub async fn start(peer: Peer, programs: &Programs, startup: Duration) -> Result<Self> {
        if peer == Peer::Sink {
            let sink = Sink::start()?;
            return Ok(Self {
                peer,
                addr: sink.addr(),
                sink_received: Some(sink.received()),
                running: Running::Sink(sink),
            });
        }
        let dir = ScratchDir::create(&programs.scratch_root, peer)?;
        let ports = free_ports(2)?;
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ports[0]));
        let wamp = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ports[1]));
        let mut cmd = match peer {
            Peer::Ordo => {
                if !programs.ordo_bin.exists() {
                    bail!(
                        "{} not found: build ordo-entry (cargo build --release -p ordo-entry) or \
                         pass --ordo-bin",
                        programs.ordo_bin.display()
                    );
                }
                let data = dir.path.join("data");
                std::fs::create_dir_all(&data)?;
                let mut cmd = Command::new(&programs.ordo_bin);
                cmd.arg("--standalone")
                    .arg("--mqtt")
                    .arg(addr.to_string())
                    .arg("--wamp")
                    .arg(wamp.to_string())
                    .args(["--wamp-rawsocket", "127.0.0.1:0"])
                    .arg("--data-dir")
                    .arg(&data);
                cmd
            }
            Peer::Mosquitto => {
                let conf = dir.path.join("mosquitto.conf");
                let mut text =
                    format!("listener {} 127.0.0.1\nallow_anonymous true\n", addr.port());
                if programs.tune_peers {
                    text.push_str("set_tcp_nodelay true\nmax_queued_messages 0\n");
                }
                for line in &programs.mosquitto_conf {
                    text.push_str(line);
                    text.push('\n');
                }
                std::fs::write(&conf, text)?;
                let mut cmd = Command::new(&programs.mosquitto_bin);
                cmd.arg("-c").arg(&conf);
                cmd
            }
            Peer::Foxwamp => {
                let modules = programs
                    .foxwamp_js
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("node_modules/fox-wamp");
                if !modules.exists() {
                    bail!(
                        "{} is missing: run `npm ci` in {}",
                        modules.display(),
                        programs
                            .foxwamp_js
                            .parent()
                            .unwrap_or(Path::new("."))
                            .display()
                    );
                }
                let mut cmd = Command::new(&programs.node_bin);
                cmd.arg(&programs.foxwamp_js)
                    .arg(addr.port().to_string())
                    .env("FOXWAMP_EXIT_ON_STDIN_EOF", "1")
                    .env(
                        "FOXWAMP_NODELAY",
                        if programs.tune_peers { "1" } else { "0" },
                    );
                cmd
            }
            Peer::Sink => unreachable!("handled above"),
        };
        let log = dir.path.join("broker.log");
        let out = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(&dir.path)
            .kill_on_drop(true);
        let program = cmd.as_std().get_program().to_owned();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {peer}: {}", Path::new(&program).display()))?;
        let stdin = child.stdin.take();
        let mut guard = ProcessGuard {
            child,
            _stdin: stdin,
            log,
            _dir: dir,
        };
        guard.wait_listening(peer, addr, startup).await?;
        Ok(Self {
            peer,
            addr,
            sink_received: None,
            running: Running::Process(guard),
        })
    }

    /// Stop the broker and wait for it to exit; its scratch directory is removed.
    pub async fn stop(self) {
        match self.running {
            Running::Sink(sink) => drop(sink),
            Running::Process(mut guard) => {
                let _ = guard.child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), guard.child.wait()).await;
            }
        }
    }

    /// Whether the broker process is still alive (the sink always is).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Running::Process(guard) = &mut self.running {
            if let Some(status) = guard.child.try_wait()? {
                bail!("{} exited ({status}){}", self.peer, guard.log_tail());
            }
        }
        Ok(())
    }
}

/// Owns a broker child process and its scratch directory; kills and removes them on drop.
struct ProcessGuard {
    child: Child,
    /// Held open so fox-wamp's launcher sees EOF (and exits) if this process dies without cleanup.
    _stdin: Option<ChildStdin>,
    log: PathBuf,
    /// Removed after the process is gone (fields drop after `Drop::drop`).
    _dir: ScratchDir,
}

impl ProcessGuard {
    async fn wait_listening(
        &mut self,
        peer: Peer,
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{peer} exited during startup ({status}){}", self.log_tail());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{peer} did not accept on {addr} within {limit:?}{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(6)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; log tail:\n  {tail}")
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Give the kill a moment so the scratch directory is not removed under a live writer.
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // `dir` is dropped (removed) after this, once the process is gone.
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(root: &Path, peer: Peer) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("ordo-bench-{}-{peer}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// File system type of the mount holding `path` (longest matching mount point in /proc/mounts).
pub fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// Distinct free TCP ports on 127.0.0.1 (held together while picking so they differ).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("pick a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

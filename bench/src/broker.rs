//! Start and stop the brokers under test, always on 127.0.0.1.
//!
//! Every external broker runs as one or more child processes, each owned by a [`ProcessGuard`],
//! all held by one [`Processes`] with their scratch directory: dropping it (normal end, error,
//! Ctrl-C) kills every process and then removes the directory, so a run never leaves a broker
//! behind. The Ordo cluster (several processes) is started by `crate::cluster`.

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
    /// Ordo cluster: 3 ordo-sync + 3 ordo-ndb + 1 ordo-entry, separate processes.
    Cluster1,
    /// Ordo cluster: 3 ordo-sync + 3 ordo-ndb + 2 ordo-entry.
    Cluster2,
    /// Ordo cluster: 3 ordo-sync + 3 ordo-ndb + 3 ordo-entry.
    Cluster3,
    /// Eclipse mosquitto.
    Mosquitto,
    /// fox-wamp (Node.js), launched through bench/peers/foxwamp.js.
    Foxwamp,
    /// Crossbar.io (Python, WAMP only: `--wamp`), from bench/.crossbar-venv.
    Crossbar,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Sink => "sink",
            Peer::Ordo => "ordo",
            Peer::Cluster1 => "cluster1",
            Peer::Cluster2 => "cluster2",
            Peer::Cluster3 => "cluster3",
            Peer::Mosquitto => "mosquitto",
            Peer::Foxwamp => "foxwamp",
            Peer::Crossbar => "crossbar",
        })
    }
}

impl Peer {
    /// Entries of a cluster peer; `None` for the single-process brokers.
    pub fn cluster_entries(self) -> Option<usize> {
        match self {
            Peer::Cluster1 => Some(1),
            Peer::Cluster2 => Some(2),
            Peer::Cluster3 => Some(3),
            _ => None,
        }
    }

    /// Ordo in any form (standalone or cluster): the numerator of the ratio table.
    pub fn is_ordo(self) -> bool {
        self == Peer::Ordo || self.cluster_entries().is_some()
    }
}

/// Where the external brokers live.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Ordo's `ordo-entry` binary.
    pub ordo_bin: PathBuf,
    /// `ordo-ndb` (cluster peers).
    pub ndb_bin: PathBuf,
    /// `ordo-sync` (cluster peers).
    pub sync_bin: PathBuf,
    /// The mosquitto binary.
    pub mosquitto_bin: PathBuf,
    /// The node binary.
    pub node_bin: PathBuf,
    /// bench/peers/foxwamp.js.
    pub foxwamp_js: PathBuf,
    /// Crossbar's `crossbar` command (bench/.crossbar-venv/bin/crossbar).
    pub crossbar_bin: PathBuf,
    /// Lines appended to the generated mosquitto.conf.
    pub mosquitto_conf: Vec<String>,
    /// Tune mosquitto and fox-wamp for the workload (see `--peer-defaults`).
    pub tune_peers: bool,
    /// Parent of every scratch directory.
    pub scratch_root: PathBuf,
    /// `--config` for every Ordo entry.
    pub entry_config: Option<PathBuf>,
    /// Serve cluster nodes' metrics (`--node-metrics`).
    pub node_metrics: bool,
}

/// Workspace root: from `CARGO_MANIFEST_DIR` when cargo runs the bench, else the path it was
/// compiled at when that still exists (a compiler cache may hand out a build made in another
/// checkout), else `bench` in the working directory.
pub fn workspace_root() -> PathBuf {
    bench_dir()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn bench_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        return PathBuf::from(dir);
    }
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    if compiled.exists() {
        return compiled.to_path_buf();
    }
    // Absolute: peers are started from their scratch directories.
    std::env::current_dir().unwrap_or_default().join("bench")
}

/// `$CARGO_TARGET_DIR/release/ordo-entry`, else `<workspace>/target/release/ordo-entry`.
pub fn default_ordo_bin() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    target.join("release").join("ordo-entry")
}

/// `name` in the directory of the entry binary `ordo_bin` (ordo-ndb, ordo-sync live beside it).
pub fn beside(ordo_bin: &Path, name: &str) -> PathBuf {
    ordo_bin.parent().unwrap_or(Path::new(".")).join(name)
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
    bench_dir().join("peers").join("foxwamp.js")
}

/// A started broker, listening for MQTT on `addrs`; dropping it stops it.
pub struct Broker {
    /// Which broker this is.
    pub peer: Peer,
    /// Its MQTT listeners (always 127.0.0.1): one, or one per cluster entry (Crossbar: none).
    pub addrs: Vec<SocketAddr>,
    /// Its WAMP WebSocket listener (standalone Ordo, fox-wamp, Crossbar).
    pub wamp: Option<SocketAddr>,
    /// For the sink only: PUBLISH packets it received.
    pub sink_received: Option<Arc<AtomicU64>>,
    /// Cluster nodes' metrics listeners by node name, with `--node-metrics`.
    pub metrics: Vec<(String, SocketAddr)>,
    running: Running,
}

enum Running {
    Sink(Sink),
    Processes(Processes),
}

impl Broker {
    /// Start `peer` on free loopback ports and wait until its MQTT port accepts connections.
    pub async fn start(peer: Peer, programs: &Programs, startup: Duration) -> Result<Self> {
        if peer == Peer::Sink {
            let sink = Sink::start()?;
            return Ok(Self {
                peer,
                addrs: vec![sink.addr()],
                wamp: None,
                sink_received: Some(sink.received()),
                metrics: Vec::new(),
                running: Running::Sink(sink),
            });
        }
        if let Some(entries) = peer.cluster_entries() {
            let (addrs, metrics, processes) =
                crate::cluster::start(peer, entries, programs, startup).await?;
            return Ok(Self {
                peer,
                addrs,
                wamp: None,
                sink_received: None,
                metrics,
                running: Running::Processes(processes),
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
                if let Some(config) = &programs.entry_config {
                    cmd.arg("--config").arg(config);
                }
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
                    .arg(wamp.port().to_string())
                    .env("FOXWAMP_EXIT_ON_STDIN_EOF", "1")
                    .env(
                        "FOXWAMP_NODELAY",
                        if programs.tune_peers { "1" } else { "0" },
                    );
                cmd
            }
            Peer::Crossbar => {
                if !programs.crossbar_bin.exists() {
                    bail!(
                        "{} not found: run scripts/crossbar-venv.sh (pip install crossbar into \
                         bench/.crossbar-venv) or pass --crossbar-bin",
                        programs.crossbar_bin.display()
                    );
                }
                let cbdir = dir.path.join(".crossbar");
                std::fs::create_dir_all(&cbdir)?;
                let config = crate::wamp::crossbar_config(wamp.port());
                std::fs::write(
                    cbdir.join("config.json"),
                    serde_json::to_string_pretty(&config)?,
                )?;
                let mut cmd = Command::new(&programs.crossbar_bin);
                cmd.arg("start")
                    .arg("--cbdir")
                    .arg(&cbdir)
                    .args(["--loglevel", "warn"])
                    // its router runs in a worker process: kill the whole group
                    .process_group(0);
                cmd
            }
            Peer::Sink | Peer::Cluster1 | Peer::Cluster2 | Peer::Cluster3 => {
                unreachable!("handled above")
            }
        };
        cmd.stdin(Stdio::piped());
        let log = dir.path.join("broker.log");
        let mut processes = Processes::new(dir);
        let guard = processes.spawn(&peer.to_string(), cmd, log)?;
        if peer == Peer::Crossbar {
            guard.kill_group = true;
            // a Python router with a controller and a worker process starts slowly
            guard
                .wait_listening(wamp, startup.max(Duration::from_secs(60)))
                .await?;
            return Ok(Self {
                peer,
                addrs: Vec::new(),
                wamp: Some(wamp),
                sink_received: None,
                metrics: Vec::new(),
                running: Running::Processes(processes),
            });
        }
        guard.wait_listening(addr, startup).await?;
        // mosquitto serves MQTT only; Ordo and fox-wamp also serve WAMP.
        let wamp = (peer != Peer::Mosquitto).then_some(wamp);
        if let Some(wamp) = wamp {
            guard.wait_listening(wamp, startup).await?;
        }
        Ok(Self {
            peer,
            addrs: vec![addr],
            wamp,
            sink_received: None,
            metrics: Vec::new(),
            running: Running::Processes(processes),
        })
    }

    /// Stop the broker and wait for it to exit; its scratch directory is removed.
    pub async fn stop(self) {
        match self.running {
            Running::Sink(sink) => drop(sink),
            Running::Processes(processes) => processes.stop().await,
        }
    }

    /// Name and pid of each of its processes (none for the in-process sink).
    pub fn pids(&self) -> Vec<(String, u32)> {
        match &self.running {
            Running::Sink(_) => Vec::new(),
            Running::Processes(p) => p
                .guards
                .iter()
                .filter_map(|g| Some((g.name.clone(), g.child.id()?)))
                .collect(),
        }
    }

    /// Whether every broker process is still alive (the sink always is).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Running::Processes(processes) = &mut self.running {
            processes
                .check_alive()
                .with_context(|| format!("{}", self.peer))?;
        }
        Ok(())
    }
}

/// The child processes of one broker and their scratch directory. Dropping it kills every
/// process, waits briefly for them, then removes the directory.
pub(crate) struct Processes {
    guards: Vec<ProcessGuard>,
    /// Declared after `guards`, so removed once the processes are gone.
    dir: ScratchDir,
}

impl Processes {
    /// No processes yet; `dir` is removed when this is dropped.
    pub(crate) fn new(dir: ScratchDir) -> Self {
        Self {
            guards: Vec::new(),
            dir,
        }
    }

    /// The scratch directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Start `cmd` in the scratch directory with stdout and stderr to `log`, owned from now on.
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        mut cmd: Command,
        log: PathBuf,
    ) -> Result<&mut ProcessGuard> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(&self.dir.path)
            .kill_on_drop(true);
        let program = cmd.as_std().get_program().to_owned();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {}", Path::new(&program).display()))?;
        let stdin = child.stdin.take();
        self.guards.push(ProcessGuard {
            name: name.to_string(),
            child,
            _stdin: stdin,
            log,
            kill_group: false,
        });
        let last = self.guards.len() - 1;
        Ok(&mut self.guards[last])
    }

    /// An error naming the first process that has exited, with its log tail.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for guard in &mut self.guards {
            if let Some(status) = guard.child.try_wait()? {
                bail!("{} exited ({status}){}", guard.name, guard.log_tail());
            }
        }
        Ok(())
    }

    /// Kill every process and wait (up to 5 s in all) for them to exit.
    async fn stop(mut self) {
        self.kill_all();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for guard in &mut self.guards {
            let _ = tokio::time::timeout_at(deadline, guard.child.wait()).await;
        }
    }

    fn kill_all(&mut self) {
        for guard in &mut self.guards {
            guard.kill();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Kill all first so they exit in parallel; each guard's drop then waits for its own.
        self.kill_all();
    }
}

/// Owns one broker child process; kills it on drop.
pub(crate) struct ProcessGuard {
    name: String,
    child: Child,
    /// Held open so fox-wamp's launcher sees EOF (and exits) if this process dies without cleanup.
    _stdin: Option<ChildStdin>,
    log: PathBuf,
    /// The child leads its own process group (see `Command::process_group(0)`): kill the group.
    pub(crate) kill_group: bool,
}

impl ProcessGuard {
    /// SIGKILL the child (and its process group when `kill_group`).
    fn kill(&mut self) {
        if self.kill_group {
            if let Some(pid) = self.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = self.child.start_kill();
    }

    /// Wait until `addr` accepts TCP connections; an error if the process exits or `limit` passes.
    pub(crate) async fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during startup ({status}){}",
                    self.name,
                    self.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept on {addr} within {limit:?}{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the process's log, formatted for an error message; an error's
    /// backtrace is left out, so the tail shows the error and its causes.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .take_while(|l| !l.starts_with("Stack backtrace:"))
            .collect();
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
        self.kill();
        // Give the kill a moment so the scratch directory is not removed under a live writer.
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// `<root>/ordo-bench-<pid>-<peer>-<n>`, emptied if it exists.
    pub(crate) fn create(root: &Path, peer: Peer) -> Result<Self> {
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
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("pick a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

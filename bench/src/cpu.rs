//! CPU a broker's processes used over a phase, and how long their threads waited for a core.
//!
//! Read from Linux's `/proc/<pid>/task/<tid>/schedstat` (time on a CPU, time runnable but
//! waiting for one, and how many times each thread was put on a CPU), summed over every thread
//! of the broker's processes and of their descendants (fox-wamp's router runs under a
//! launcher). Kernel threads working on a broker's behalf (the ext4 journal, block I/O
//! completions) are not counted. Elsewhere than Linux every figure is absent.
//!
//! Why it is printed: at half of its peak the Ordo cluster keeps the machine's cores nearly
//! busy, and a wake-up that waits for a core is a hop that waits (docs/performance.md).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

/// Scheduler counters of one thread or a sum of threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    /// Nanoseconds on a CPU.
    pub run_ns: u64,
    /// Nanoseconds runnable, waiting for a CPU.
    pub wait_ns: u64,
    /// Times put on a CPU.
    pub slices: u64,
}

impl Times {
    fn add(&mut self, o: Times) {
        self.run_ns += o.run_ns;
        self.wait_ns += o.wait_ns;
        self.slices += o.slices;
    }
}

/// Parse one `schedstat` line: `run_ns wait_ns slices`.
pub fn parse_schedstat(line: &str) -> Option<Times> {
    let mut it = line.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(Times {
        run_ns: it.next()??,
        wait_ns: it.next()??,
        slices: it.next()??,
    })
}

/// Most generations of descendants followed (a launcher and its child need two).
const MAX_DEPTH: usize = 4;

/// Add every thread's counters of `pid` to `out`, and of its descendants up to `MAX_DEPTH`
/// generations below `depth`.
fn threads_of(pid: u32, out: &mut Threads, depth: usize) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let dir = task.path();
        if let Some(t) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| parse_schedstat(&s))
        {
            out.insert((pid, tid), t);
        }
        if depth < MAX_DEPTH {
            let children = std::fs::read_to_string(dir.join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                threads_of(child, out, depth + 1);
            }
        }
    }
}

/// Every thread's counters of one process tree, keyed by (pid, tid).
type Threads = BTreeMap<(u32, u32), Times>;

/// Counters of named processes at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// Per process name: its threads' counters by (pid, tid).
    procs: Vec<(String, Threads)>,
    bench: Threads,
}

/// Read the counters of `procs` (name, pid) and of this process.
pub fn snapshot(procs: &[(String, u32)]) -> Snapshot {
    let procs = procs
        .iter()
        .map(|(name, pid)| {
            let mut threads = BTreeMap::new();
            threads_of(*pid, &mut threads, 0);
            (name.clone(), threads)
        })
        .collect();
    // The generator's own threads only: its children are the brokers.
    let mut bench = BTreeMap::new();
    threads_of(std::process::id(), &mut bench, MAX_DEPTH);
    Snapshot {
        at: Instant::now(),
        procs,
        bench,
    }
}

/// What a broker's processes used between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuUse {
    /// Cores busy on average, all of the broker's processes together.
    pub cores: f64,
    /// Cores by role: the process name without its trailing number (`entry`, `ndb`, ...).
    pub by_role: Vec<(String, f64)>,
    /// Cores the load generator (this process) used.
    pub bench_cores: f64,
    /// The broker's threads that were runnable but waiting for a core, on average.
    pub waiting: f64,
    /// Mean wait for a core each time one of its threads was put on one, in microseconds.
    pub wait_per_slice_us: f64,
}

impl CpuUse {
    /// Machine-readable form.
    pub fn to_json(&self) -> Value {
        let by_role: serde_json::Map<String, Value> = self
            .by_role
            .iter()
            .map(|(r, c)| (r.clone(), json!(c)))
            .collect();
        json!({
            "cores": self.cores,
            "by_role": by_role,
            "bench_cores": self.bench_cores,
            "waiting_threads": self.waiting,
            "wait_per_slice_us": self.wait_per_slice_us,
        })
    }

    /// `1.85 cores (entry 0.70, ndb 0.61, sync 0.42), bench 0.12; 7.1 threads waiting, 330us a wake-up`
    pub fn summary(&self) -> String {
        let roles = if self.by_role.len() > 1 {
            let parts: Vec<String> = self
                .by_role
                .iter()
                .map(|(r, c)| format!("{r} {c:.2}"))
                .collect();
            format!(" ({})", parts.join(", "))
        } else {
            String::new()
        };
        format!(
            "{:.2} cores{roles}, bench {:.2}; {:.1} threads waiting for a core, {:.0}us a wake-up",
            self.cores, self.bench_cores, self.waiting, self.wait_per_slice_us
        )
    }
}

/// Growth of every thread present at `after` (a thread started in between counts from zero;
/// one that exited is lost, so the figures are a floor).
fn delta(before: &Threads, after: &Threads) -> Times {
    let mut sum = Times::default();
    for (k, a) in after {
        let b = before.get(k).copied().unwrap_or_default();
        sum.add(Times {
            run_ns: a.run_ns.saturating_sub(b.run_ns),
            wait_ns: a.wait_ns.saturating_sub(b.wait_ns),
            slices: a.slices.saturating_sub(b.slices),
        });
    }
    sum
}

/// The role of a process name: `entry2` -> `entry`.
fn role(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

/// What the processes of `before` used until `after`; `None` if nothing was readable (not
/// Linux, or every process gone).
pub fn since(before: &Snapshot, after: &Snapshot) -> Option<CpuUse> {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    if secs <= 0.0 || after.procs.iter().all(|(_, t)| t.is_empty()) {
        return None;
    }
    let mut total = Times::default();
    let mut roles: BTreeMap<String, f64> = BTreeMap::new();
    let none = Threads::new();
    for (name, threads) in &after.procs {
        let old = before
            .procs
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&none, |(_, t)| t);
        let d = delta(old, threads);
        total.add(d);
        *roles.entry(role(name)).or_default() += d.run_ns as f64 / 1e9 / secs;
    }
    let bench = delta(&before.bench, &after.bench);
    Some(CpuUse {
        cores: total.run_ns as f64 / 1e9 / secs,
        by_role: roles.into_iter().collect(),
        bench_cores: bench.run_ns as f64 / 1e9 / secs,
        waiting: total.wait_ns as f64 / 1e9 / secs,
        wait_per_slice_us: total.wait_ns as f64 / 1e3 / total.slices.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_schedstat("1200 340 7\n"),
            Some(Times {
                run_ns: 1200,
                wait_ns: 340,
                slices: 7
            })
        );
        assert_eq!(parse_schedstat("1200 x 7"), None);
        assert_eq!(parse_schedstat("1200 340"), None);
    }

    #[test]
    fn roles_drop_the_node_number() {
        assert_eq!(role("entry12"), "entry");
        assert_eq!(role("mosquitto"), "mosquitto");
    }

    #[test]
    fn a_busy_child_shows_its_cpu_and_an_idle_one_none() {
        if !std::path::Path::new("/proc/self/task").exists() {
            return;
        }
        // A shell that spins for a while, and one that sleeps.
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .spawn()
            .expect("sh starts");
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let procs = vec![
            ("busy1".to_string(), busy.id()),
            ("idle1".to_string(), idle.id()),
        ];
        let before = snapshot(&procs);
        // Keep the last snapshot taken while the spinner still ran (an exited one has no
        // threads left to read).
        let mut after = snapshot(&procs);
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let next = snapshot(&procs);
            if next.procs[0].1.is_empty() {
                break;
            }
            after = next;
        }
        let use_ = since(&before, &after).expect("counters readable on Linux");
        let cores_of = |role: &str| {
            use_.by_role
                .iter()
                .find(|(r, _)| r == role)
                .map_or(0.0, |(_, c)| *c)
        };
        let (busy_cores, idle_cores) = (cores_of("busy"), cores_of("idle"));
        assert!(busy_cores > 0.0, "the spinner used no CPU: {use_:?}");
        assert!(idle_cores < busy_cores, "{use_:?}");
        let _ = busy.wait();
        let _ = idle.kill();
        let _ = idle.wait();
    }
}

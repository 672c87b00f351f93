//! Pegasus's own client against Markab: pypegasus3 0.0.1.1 from PyPI (the
//! Python 3 port of Pegasus's Python client, installed with its
//! dependencies pinned by `scripts/setup.sh` into `.pegasus-venv/`) talks
//! Pegasus's protocol (THFT header + Thrift binary) to meta's port and to
//! the nodes' shard ports of a real cluster: a meta and three nodes of two
//! shards each, a table of 8 partitions × 3 replicas.
//!
//! The Python scripts in `tests/pegasus/` do the talking and print one line
//! per check (`ok NAME` / `FAIL NAME: DETAIL`); these tests start the
//! cluster, run a script under a bound, and fail with its whole output (and
//! the client's log) unless every check passed. Every wait is bounded;
//! only processes the test started are killed, by pid.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, wait_served, Cluster, ClusterOptions};
use markab::client::{Client, ClientOptions};

const TABLE: &str = "pegasus";
const PARTITIONS: i32 = 8;
const REPLICAS: usize = 3;

/// Bound on `client_suite.py` (its own bound is 240 s).
const SUITE_BOUND: Duration = Duration::from_secs(270);
/// Checks `client_suite.py` runs.
const SUITE_CHECKS: usize = 43;
/// Bound on `raw_thrift.py` (its own bound is 180 s).
const RAW_BOUND: Duration = Duration::from_secs(200);
/// Checks `raw_thrift.py` runs.
const RAW_CHECKS: usize = 22;

/// Records `failover_loop.py` writes, one at a time.
const FAILOVER_KEYS: usize = 1_000;
/// Acknowledged writes before the kill.
const KILL_AFTER_ACKED: usize = 200;
/// `failover_loop.py`'s own bound on writing and reading back, in seconds.
const FAILOVER_LOOP_BOUND_S: u64 = 150;
/// Bound on the failover script as a whole: its loop, its start (a Python
/// process importing Twisted) and its watchdog's margin.
const FAILOVER_BOUND: Duration = Duration::from_secs(FAILOVER_LOOP_BOUND_S + 60);
/// Bound on the failover script's start and its first writes.
const FIRST_WRITES_BOUND: Duration = Duration::from_secs(60);
/// Lines of the client's log quoted when a script fails.
const LOG_TAIL_LINES: usize = 40;

/// One cluster at a time: a two-core machine runs one well, not two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The directories to look in, going up: the running test's package (as
/// cargo sets `CARGO_MANIFEST_DIR` when it runs the test), then where this
/// test was compiled (one build directory serves several checkouts).
fn package_dirs() -> Vec<PathBuf> {
    [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The venv's Python, which has pypegasus3 and its pinned dependencies.
fn python() -> PathBuf {
    let relative = Path::new(".pegasus-venv/bin/python");
    package_dirs()
        .iter()
        .flat_map(|start| start.ancestors())
        .map(|directory| directory.join(relative))
        .find(|program| program.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} is missing: run scripts/setup.sh (it installs pypegasus3==0.0.1.1 into .pegasus-venv)",
                relative.display()
            )
        })
}

/// `tests/pegasus/NAME` of this package.
fn script(name: &str) -> PathBuf {
    package_dirs()
        .iter()
        .map(|directory| directory.join("tests/pegasus").join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("tests/pegasus/{name} is missing"))
}

/// A running Python script; its stdout and stderr lines arrive on a channel
/// (stderr's prefixed `stderr: `). Killed by pid and reaped on drop.
struct Script {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line received so far.
    output: Vec<String>,
    /// Its working directory, where pypegasus3 writes `pegasus.log`.
    dir: PathBuf,
    started: Instant,
}

impl Script {
    /// Starts `python tests/pegasus/NAME ARGS...` in a fresh `dir`.
    fn start(name: &str, args: &[String], dir: &Path) -> Script {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new(python())
            .arg(script(name))
            .args(args)
            .current_dir(dir)
            // No __pycache__ next to the scripts in the checkout.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let (sender, lines) = mpsc::channel();
        forward_lines(child.stdout.take().unwrap(), sender.clone(), "");
        forward_lines(child.stderr.take().unwrap(), sender, "stderr: ");
        Script {
            name: name.to_owned(),
            child,
            lines,
            output: Vec::new(),
            dir: dir.to_owned(),
            started: Instant::now(),
        }
    }

    /// Waits until a line satisfies `wanted` and returns it; None past
    /// `bound` or when the script ends first.
    fn wait_line(&mut self, bound: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits (bounded) for the script to exit and for its last lines.
    /// Past `bound` it is killed, and the test fails with its output.
    fn finish(&mut self, bound: Duration) -> ExitStatus {
        // Both pipes close when it exits: the channel then disconnects.
        let left = bound.saturating_sub(self.started.elapsed());
        let _ = self.wait_line(left, |_| false);
        if self.started.elapsed() >= bound {
            common::kill_child(&mut self.child);
            panic!(
                "{} did not finish within {bound:?}; it was killed{}",
                self.name,
                self.transcript()
            );
        }
        self.child.wait().expect("reap the script")
    }

    /// Its output and the tail of the client's log, for a failure's message.
    fn transcript(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("pegasus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "\n--- {} output ---\n{}\n--- last lines of {} ---\n{tail}",
            self.name,
            self.output.join("\n"),
            self.dir.join("pegasus.log").display()
        )
    }

    /// Asserts a clean exit, no failed check and `checks` passed ones;
    /// prints the output either way.
    fn assert_passed(&mut self, status: ExitStatus, checks: usize) {
        let failed: Vec<&String> = self
            .output
            .iter()
            .filter(|line| line.starts_with("FAIL "))
            .collect();
        let passed = self
            .output
            .iter()
            .filter(|line| line.starts_with("ok "))
            .count();
        eprintln!(
            "{}: {passed} checks passed, {} failed, {:.1} s{}",
            self.name,
            failed.len(),
            self.started.elapsed().as_secs_f64(),
            self.transcript()
        );
        assert!(
            status.success() && failed.is_empty() && passed == checks,
            "{} exited with {status}: {} checks failed, {passed} of {checks} passed:\n{}{}",
            self.name,
            failed.len(),
            failed
                .iter()
                .map(|line| line.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            self.transcript()
        );
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        common::kill_child(&mut self.child);
    }
}

/// Sends each line of `pipe` to `sender`, prefixed, from a thread of its own.
fn forward_lines(
    pipe: impl Read + Send + 'static,
    sender: mpsc::Sender<String>,
    prefix: &'static str,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if sender.send(format!("{prefix}{line}")).is_err() {
                break;
            }
        }
    });
}

/// A meta and three nodes of two shards each, with the test's table at
/// three replicas per partition.
fn start_cluster() -> Cluster {
    // Fails fast, naming scripts/setup.sh, when the venv is missing.
    python();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        shards: 2,
        ..ClusterOptions::default()
    });
    cluster.create_table(TABLE, PARTITIONS, REPLICAS as i32);
    cluster.wait_full(TABLE, REPLICAS);
    // pypegasus3 does not retry a request refused while a primary is
    // still opening its replica (ERR_OBJECT_NOT_FOUND); it only re-queries
    // meta for the next ones. Start the scripts once every partition serves.
    let runtime = common::runtime();
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .expect("connect to meta");
    wait_served(&runtime, &client, TABLE);
    cluster
}

/// Runs `script` with the cluster's meta and table and asserts it passed
/// `checks` checks within `bound`.
fn run_script(cluster: &Cluster, name: &str, bound: Duration, checks: usize) {
    let args = [cluster.meta_address.clone(), TABLE.to_owned()];
    let dir = cluster.dir.path().join(name.trim_end_matches(".py"));
    let mut script = Script::start(name, &args, &dir);
    let status = script.finish(bound);
    script.assert_passed(status, checks);
}

// Every operation pypegasus3 offers — set/get (binary values, empty sort
// key, a missing record), TTLs and their expiry, exist, remove, multi_set,
// multi_get and multi_get_opt (ranges, limits, reverse, filters),
// get_sort_keys, multi_del, sort_key_count, a hash key's scanner in several
// batches, unordered scanners over every partition, an unknown table —
// answers as Pegasus would, through the client's own routing.
#[test]
fn pypegasus3_suite_passes() {
    let _serial = serial();
    let cluster = start_cluster();
    run_script(&cluster, "client_suite.py", SUITE_BOUND, SUITE_CHECKS);
}

// The RPCs pypegasus3 lacks (incr, check_and_set, check_and_mutate,
// batch_get), the Java client's v1 header, and the protocol's corners,
// byte by byte from the IDL: replies have the exact framing and values
// Pegasus gives.
#[test]
fn raw_thrift_rpcs_pass() {
    let _serial = serial();
    let cluster = start_cluster();
    run_script(&cluster, "raw_thrift.py", RAW_BOUND, RAW_CHECKS);
}

// A node holding primaries is SIGKILLed while pypegasus3 writes and reads:
// the client recovers by re-querying meta (no help from the test), every
// record is eventually acknowledged, and every acknowledged write reads
// back.
#[test]
fn pypegasus3_survives_a_primary_node_kill() {
    let _serial = serial();
    let mut cluster = start_cluster();
    let args = [
        cluster.meta_address.clone(),
        TABLE.to_owned(),
        FAILOVER_KEYS.to_string(),
        FAILOVER_LOOP_BOUND_S.to_string(),
    ];
    let dir = cluster.dir.path().join("failover_loop");
    let mut script = Script::start("failover_loop.py", &args, &dir);
    let progress = format!("acked {KILL_AFTER_ACKED}");
    if script
        .wait_line(FIRST_WRITES_BOUND, |line| line == progress)
        .is_none()
    {
        panic!(
            "failover_loop.py acknowledged no {KILL_AFTER_ACKED} writes within {FIRST_WRITES_BOUND:?}{}",
            script.transcript()
        );
    }

    // The node with the most primaries.
    let partitions = cluster.describe(TABLE);
    let primaries = |index: usize| {
        partitions
            .iter()
            .filter(|partition| partition.primary == cluster.node_ids[index])
            .count()
    };
    let victim = (0..cluster.node_ids.len())
        .max_by_key(|index| primaries(*index))
        .expect("three nodes");
    let victim_primaries = primaries(victim);
    assert!(victim_primaries > 0, "the victim hosts a primary");
    let victim_id = cluster.node_ids[victim].clone();
    let killed_at = Instant::now();
    cluster.kill_node(victim);
    eprintln!(
        "killed {victim_id} ({victim_primaries} primaries) after {KILL_AFTER_ACKED} acknowledged writes, {:.1} s into the loop",
        script.started.elapsed().as_secs_f64()
    );

    let status = script.finish(FAILOVER_BOUND);
    eprintln!(
        "failover_loop.py ended {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    script.assert_passed(status, 2);
    // The kill landed mid-run: writes failed before the client re-routed.
    let summary = script
        .output
        .iter()
        .find(|line| line.starts_with("acked="))
        .cloned()
        .unwrap_or_else(|| panic!("no summary line{}", script.transcript()));
    let failed_attempts: usize = summary
        .split_whitespace()
        .find_map(|field| field.strip_prefix("failed_attempts="))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no failed_attempts in {summary:?}"));
    assert!(
        failed_attempts > 0,
        "no write failed: the kill did not land mid-run ({summary}){}",
        script.transcript()
    );
    // Meta moved every primary off the dead node.
    wait_for("no primary on the dead node", || {
        cluster
            .describe(TABLE)
            .iter()
            .all(|partition| partition.primary != victim_id)
            .then_some(())
    });
}

//! End to end: `markab bench` as a process against a real standalone
//! two-shard node — load and run of workload A (and a short workload E
//! scan run) complete with zero errors, and the JSON lines parse with the
//! expected operation counts. The same against a real single etcd (its
//! JSON gateway). Also: a bad target fails with a clear error.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on one bench process in these tests.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `markab bench ARGS`, killing it past [`BENCH_TIMEOUT`].
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_markab"))
        .arg("bench")
        .args(args)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn markab bench");
    let deadline = Instant::now() + BENCH_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "markab bench ran past {BENCH_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `BENCH_JSON` lines of a bench run, parsed.
fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("BENCH_JSON "))
        .map(|line| serde_json::from_str(line).expect("JSON line parses"))
        .collect()
}

// A short workload-A bench (load 500 records, run 2000 operations) against
// a real node finishes with zero errors, and its JSON lines report exactly
// the loaded and run operation counts with a ~50/50 read/update mix; a
// workload-E run with a --json file scans the loaded records without errors.
#[test]
fn short_bench_against_a_real_node_has_zero_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, 8)]);
    let node = common::Node::start(&config);
    let target = format!("markab-node://{}", node.address());
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "a",
        "--records",
        "500",
        "--operations",
        "2000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# markab bench"), "{stdout}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 2, "{stdout}");
    let (load, run) = (&lines[0], &lines[1]);
    assert_eq!(load["phase"], "load");
    assert_eq!(load["overall"]["count"], 500);
    assert_eq!(load["operations"]["INSERT"]["count"], 500);
    assert_eq!(load["overall"]["errors"], serde_json::json!({}));
    assert_eq!(run["phase"], "run");
    assert_eq!(run["mode"], "closed");
    assert_eq!(run["overall"]["count"], 2000);
    assert_eq!(run["overall"]["errors"], serde_json::json!({}), "{stdout}");
    let reads = run["operations"]["READ"]["count"].as_u64().unwrap();
    let updates = run["operations"]["UPDATE"]["count"].as_u64().unwrap();
    assert_eq!(reads + updates, 2000);
    assert!((800..1200).contains(&reads), "reads {reads}");
    assert_eq!(run["environment"]["partitions"], 8);
    assert_eq!(
        run["environment"]["shards_per_node"],
        serde_json::json!([2])
    );
    assert!(run["overall"]["response_us"]["p99"].as_u64().unwrap() > 0);

    let json_path = dir.path().join("runs.jsonl");
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "e",
        "--phase",
        "run",
        "--records",
        "500",
        "--operations",
        "200",
        "--connections",
        "2",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["overall"]["count"], 200);
    assert_eq!(lines[0]["overall"]["errors"], serde_json::json!({}));
    assert!(lines[0]["operations"]["SCAN"]["count"].as_u64().unwrap() > 150);
    let file = std::fs::read_to_string(&json_path).unwrap();
    assert_eq!(file.lines().count(), 1);
    node.terminate();
}

// An open-loop run at a fixed rate takes about operations / rate and
// reports response time at least as large as service time.
#[test]
fn open_loop_run_against_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, 4)]);
    let node = common::Node::start(&config);
    let target = format!("markab-node://{}", node.address());
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "b",
        "--records",
        "200",
        "--operations",
        "500",
        "--target-rate",
        "500",
        "--connections",
        "2",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output);
    let run = &lines[1];
    assert_eq!(run["mode"], "open");
    assert_eq!(run["overall"]["count"], 500);
    assert!(run["runtime_ms"].as_u64().unwrap() >= 950, "{run}");
    let overall = &run["overall"];
    assert!(
        overall["response_us"]["max"].as_u64().unwrap()
            >= overall["service_us"]["max"].as_u64().unwrap()
    );
    node.terminate();
}

// A target nobody listens on (Markab or etcd) and an unknown scheme fail
// with a clear message and a non-zero exit, without a panic.
#[test]
fn bad_targets_fail_clearly() {
    let output = bench(&["--target", "markab-node://127.0.0.1:1", "--records", "10"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connect"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let output = bench(&["--target", "etcd://127.0.0.1:1", "--records", "10"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connect"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let output = bench(&["--target", "gopher://x:1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scheme"));
}

/// Bound on a fresh etcd becoming healthy.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A single-member etcd on free 127.0.0.1 ports with its data in a temp
/// dir; killed by pid when dropped.
struct Etcd {
    child: Child,
    client_port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run etcd ({error}): run scripts/setup.sh to install etcd-server")
            });
        let mut etcd = Etcd {
            child,
            client_port,
            _dir: dir,
        };
        etcd.wait_healthy();
        etcd
    }

    /// Polls `GET /health` until etcd says `"health":"true"`.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + ETCD_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self._dir.path().join("etcd.log"));
                panic!("etcd exited with {status}: {log:?}");
            }
            if common::etcd_healthy(&format!("127.0.0.1:{}", self.client_port)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy within {ETCD_START_TIMEOUT:?}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Child::kill signals this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// A workload-A bench (load 300 records, run 1000 operations) against a real
// single etcd finishes with zero errors and reports exactly those counts,
// and etcd then holds one key per field of every loaded record.
#[test]
fn short_bench_against_a_real_etcd_has_zero_errors() {
    let etcd = Etcd::start();
    let target = format!("etcd://127.0.0.1:{}", etcd.client_port);
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "a",
        "--records",
        "300",
        "--operations",
        "1000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 2, "{stdout}");
    let (load, run) = (&lines[0], &lines[1]);
    assert_eq!(load["overall"]["count"], 300);
    assert_eq!(load["overall"]["errors"], serde_json::json!({}), "{stdout}");
    assert_eq!(run["overall"]["count"], 1000);
    assert_eq!(run["overall"]["errors"], serde_json::json!({}), "{stdout}");
    let reads = run["operations"]["READ"]["count"].as_u64().unwrap();
    let updates = run["operations"]["UPDATE"]["count"].as_u64().unwrap();
    assert_eq!(reads + updates, 1000);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", etcd.client_port)).unwrap();
    // A count-only range over every key: {"key": "\0", "range_end": "\0"}.
    let body = r#"{"key":"AA==","range_end":"AA==","count_only":true}"#;
    let request = format!(
        "POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.contains(r#""count":"3000""#), "{reply}");
}

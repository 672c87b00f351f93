//! `markab chaos` on real processes, one test per fault kind: each runs a
//! short seeded round (a fresh 4-node cluster, clients recording a
//! history, two faults of its kind, heal, recovery, final reads, checks)
//! and asserts that the faults were injected and healed, the history is
//! linearizable, counters and sets are intact, no acknowledged write was
//! lost and the table returned to its full replica count. Together these
//! are CI's short run (every kind, about two minutes); the soak is the
//! same command for hours (docs/chaos.md). Needs root, as the nemesis does
//! (nftables, cgroups, loop mounts).

use std::path::Path;
use std::process::Command;

/// Runs one round of `kind` with `seed`; panics with the report on any
/// failure.
fn round(kind: &str, seed: u64, shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_markab"))
        .args(["chaos", "--dir"])
        .arg(dir.path())
        .args([
            "--kinds",
            kind,
            "--faults",
            "2",
            "--seed",
            &seed.to_string(),
            "--shards",
            &shards.to_string(),
            "--clients",
            "4",
            "--rate",
            "150",
        ])
        .output()
        .expect("run markab chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "markab chaos --kinds {kind} --seed {seed} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["violations"], 0, "{stdout}");
    assert_eq!(summary["lost_acknowledged_writes"], 0, "{stdout}");
    assert_eq!(summary["faults_by_kind"][kind], 2, "{stdout}");
    let report = round_report(dir.path());
    let events = report["events"].as_array().unwrap();
    let count = |action: &str| {
        events
            .iter()
            .filter(|event| event["action"] == action)
            .count()
    };
    assert_eq!(count("inject"), 2, "both faults injected:\n{stdout}");
    assert_eq!(count("heal"), 2, "both faults healed:\n{stdout}");
    assert!(report["full_replicas_ms"].is_u64(), "{stdout}");
    assert!(report["counts"]["ok"].as_u64().unwrap() > 50, "{stdout}");
}

/// The one round's `report.json`.
fn round_report(dir: &Path) -> serde_json::Value {
    let round = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.is_dir())
        .expect("a round directory");
    serde_json::from_str(&std::fs::read_to_string(round.join("report.json")).unwrap()).unwrap()
}

// SIGKILL of one node, then a restart.
#[test]
fn kill_node() {
    round("kill-node", 101, 1);
}

// SIGKILL of two nodes at once.
#[test]
fn kill_nodes() {
    round("kill-nodes", 102, 2);
}

// SIGKILL of meta.
#[test]
fn kill_meta() {
    round("kill-meta", 103, 1);
}

// SIGSTOP of a node past the lease and the grace, then SIGCONT.
#[test]
fn stop_node() {
    round("stop-node", 104, 2);
}

// SIGSTOP of meta past the lease and the grace.
#[test]
fn stop_meta() {
    round("stop-meta", 105, 1);
}

// A node cut from the other nodes both ways.
#[test]
fn partition_nodes() {
    round("partition-nodes", 106, 2);
}

// A node cut from meta.
#[test]
fn partition_meta() {
    round("partition-meta", 107, 1);
}

// A node cut from the other nodes and from meta.
#[test]
fn partition_all() {
    round("partition-all", 108, 2);
}

// One node cannot send to another.
#[test]
fn partition_one_way() {
    round("partition-one-way", 109, 1);
}

// A node's wall clock steps by minutes to days.
#[test]
fn clock_node() {
    round("clock-node", 110, 2);
}

// Meta's wall clock steps.
#[test]
fn clock_meta() {
    round("clock-meta", 111, 1);
}

// A node's data disk is full (the node stops on its failed log and starts
// again once space is back).
#[test]
fn disk_full() {
    round("disk-full", 112, 2);
}

// A node's data disk is throttled to 20 writes per second.
#[test]
fn slow_disk() {
    round("slow-disk", 113, 1);
}

// A node restarts on a torn or corrupted log tail.
#[test]
fn torn_log() {
    round("torn-log", 114, 2);
}

// A node restarts on a corrupted RocksDB file.
#[test]
fn corrupt_rocksdb() {
    round("corrupt-rocksdb", 115, 1);
}

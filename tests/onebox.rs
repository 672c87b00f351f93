//! `markab onebox` as a user runs it: a real supervisor process that starts
//! real meta and node processes, serves table `temp`, stops everything on
//! SIGTERM, and keeps its data across restarts.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use markab::client::{Client, ClientOptions};

/// Bound on a onebox start (three nodes on a busy two-core machine).
const ONEBOX_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on a onebox stop (its own bound is 30 s per stop).
const ONEBOX_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `markab onebox` with its stdout and stderr lines.
struct Onebox {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// `(name, pid)` of every child it reported starting.
    children: Vec<(String, i32)>,
    meta_address: String,
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

impl Onebox {
    /// Starts `markab onebox --dir DIR --nodes N --shards S` and waits for
    /// its ready line.
    fn start(dir: &Path, nodes: usize, shards: usize) -> Onebox {
        Onebox::start_with(dir, nodes, shards, 1)
    }

    /// [`Onebox::start`] with `--metas METAS`.
    fn start_with(dir: &Path, nodes: usize, shards: usize, metas: usize) -> Onebox {
        let mut child = Command::new(env!("CARGO_BIN_EXE_markab"))
            .arg("onebox")
            .arg("--dir")
            .arg(dir)
            .args(["--nodes", &nodes.to_string()])
            .args(["--shards", &shards.to_string()])
            .args(["--metas", &metas.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn markab onebox");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let mut onebox = Onebox {
            child,
            stdout,
            stderr,
            children: Vec::new(),
            meta_address: String::new(),
        };
        let deadline = Instant::now() + ONEBOX_READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = onebox.stdout.recv_timeout(left) else {
                let status = onebox.child.try_wait();
                let errors: Vec<String> = onebox.stderr.try_iter().collect();
                panic!("onebox not ready within {ONEBOX_READY_TIMEOUT:?} (process: {status:?}); stderr: {errors:#?}");
            };
            // "markab onebox: started node-0 (pid 123), log ..."
            if let Some(rest) = line.strip_prefix("markab onebox: started ") {
                let name = rest.split_whitespace().next().unwrap().to_string();
                let pid = rest
                    .split("(pid ")
                    .nth(1)
                    .and_then(|tail| tail.split(')').next())
                    .and_then(|pid| pid.parse().ok())
                    .expect("pid in the started line");
                onebox.children.push((name, pid));
            }
            if let Some(rest) = line.strip_prefix("markab onebox ready: ") {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                assert_eq!(fields[1], format!("nodes={nodes}"), "{line}");
                assert_eq!(fields[2], "table=temp", "{line}");
                let expected_dir = format!("dir={}", dir.canonicalize().unwrap().display());
                assert_eq!(fields[3], expected_dir, "{line}");
                onebox.meta_address = fields[0].strip_prefix("meta=").unwrap().to_string();
                return onebox;
            }
        }
    }

    fn pid_of(&self, name: &str) -> i32 {
        self.children
            .iter()
            .find(|(child, _)| child == name)
            .map(|(_, pid)| *pid)
            .unwrap_or_else(|| panic!("onebox reported no child {name}"))
    }

    /// SIGTERM to onebox; asserts exit 0 within the bound and that none of
    /// its children is left running.
    fn stop(mut self) {
        // SAFETY: kill(2) on the onebox process this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + ONEBOX_STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("onebox did not stop within {ONEBOX_STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "onebox exits 0 on SIGTERM: {status:?}");
        let metas = self.meta_address.split(',').count();
        let etcd = usize::from(metas > 1);
        assert_eq!(
            self.children.len(),
            etcd + metas + 3,
            "etcd (with several metas), the metas and three nodes were started"
        );
        for (name, pid) in &self.children {
            assert!(!process_exists(*pid), "{name} (pid {pid}) still runs");
        }
    }
}

impl Drop for Onebox {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first so that onebox stops its children; then make sure.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + ONEBOX_STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks the pid.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn client(runtime: &tokio::runtime::Runtime, meta_address: &str) -> Client {
    let metas: Vec<String> = meta_address.split(',').map(str::to_owned).collect();
    runtime
        .block_on(Client::connect_meta(&metas, ClientOptions::default()))
        .expect("connect to onebox's meta")
}

// Proves `--metas 3`: onebox starts etcd, three metas and the nodes; the
// leader's SIGKILL costs no data and a new leader serves; SIGTERM stops
// every child (etcd included); a second start of the directory keeps the
// data, and the directory refuses another meta count.
#[test]
fn onebox_with_three_metas_survives_its_leader() {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let onebox = Onebox::start_with(dir.path(), 3, 2, 3);
    let metas: Vec<String> = onebox.meta_address.split(',').map(str::to_owned).collect();
    assert_eq!(metas.len(), 3, "{}", onebox.meta_address);
    let first = client(&runtime, &onebox.meta_address);
    let table = runtime.block_on(first.open_table("temp")).unwrap();
    runtime.block_on(async {
        for index in 0..32 {
            let key = format!("user{index}");
            table.set(key.as_bytes(), b"s", b"v", 0).await.unwrap();
        }
    });
    let info = runtime.block_on(first.cluster_info()).unwrap();
    let leader = common::value_of(&info, "meta_leader").to_owned();
    assert_eq!(common::value_of(&info, "metas").split(',').count(), 3);
    let index = metas.iter().position(|meta| *meta == leader).unwrap();
    let pid = onebox.pid_of(&format!("meta-{index}"));
    // SAFETY: kill(2) on a meta this onebox started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let info = common::cluster::wait_for("a new leader", || {
        let info = runtime.block_on(first.cluster_info()).ok()?;
        (common::value_of(&info, "meta_leader") != leader).then_some(info)
    });
    assert_eq!(common::value_of(&info, "meta_role"), "leader");
    runtime.block_on(async {
        for index in 0..32 {
            let key = format!("user{index}");
            let value = table.get(key.as_bytes(), b"s").await.unwrap();
            assert_eq!(value.as_deref(), Some(&b"v"[..]), "{key}");
        }
    });
    drop(table);
    assert!(dir.path().join("etcd.toml").is_file());
    assert!(dir.path().join("meta-2.toml").is_file());
    assert!(!dir.path().join("meta.toml").exists());
    onebox.stop();

    let refused = Command::new(env!("CARGO_BIN_EXE_markab"))
        .arg("onebox")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--metas 1 needs a new --dir"), "{message}");

    let onebox = Onebox::start_with(dir.path(), 3, 2, 3);
    assert_eq!(onebox.meta_address, metas.join(","));
    let again = client(&runtime, &onebox.meta_address);
    let table = runtime.block_on(again.open_table("temp")).unwrap();
    let value = runtime.block_on(table.get(b"user7", b"s")).unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
    onebox.stop();
}

// Proves the whole user story: onebox starts meta and three nodes, prints its
// ready line, table temp takes writes and reads through the client across its
// partitions, a second onebox on the same directory is refused, SIGTERM stops
// every child and exits 0, and a second start reuses the same address and
// still holds the data — with one shard per node (onebox's default) and
// with two.
#[test]
fn onebox_serves_temp_stops_cleanly_and_keeps_data_across_restarts() {
    for shards in [1, 2] {
        serves_temp_stops_cleanly_and_keeps_data(shards);
    }
}

fn serves_temp_stops_cleanly_and_keeps_data(shards: usize) {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let onebox = Onebox::start(dir.path(), 3, shards);
    let meta_address = onebox.meta_address.clone();
    {
        let client = client(&runtime, &meta_address);
        let table = runtime.block_on(client.open_table("temp")).unwrap();
        assert_eq!(table.partition_count(), 8);
        runtime.block_on(async {
            for index in 0..64 {
                let hash_key = format!("user{index}");
                table
                    .set(hash_key.as_bytes(), b"name", hash_key.as_bytes(), 0)
                    .await
                    .unwrap();
            }
        });
    }
    let second = Command::new(env!("CARGO_BIN_EXE_markab"))
        .arg("onebox")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run a second onebox");
    assert!(!second.status.success(), "a second onebox on one dir fails");
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("another markab onebox"), "{message}");
    for file in [
        "meta.toml",
        "node-0.toml",
        "node-2.toml",
        "logs/meta.log",
        "logs/node-1.log",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} exists");
    }
    onebox.stop();
    assert!(!dir.path().join("onebox.pid").exists(), "pid file removed");

    let onebox = Onebox::start(dir.path(), 3, shards);
    assert_eq!(onebox.meta_address, meta_address, "same meta address");
    let client = client(&runtime, &onebox.meta_address);
    let table = runtime.block_on(client.open_table("temp")).unwrap();
    runtime.block_on(async {
        for index in 0..64 {
            let hash_key = format!("user{index}");
            let value = table.get(hash_key.as_bytes(), b"name").await.unwrap();
            assert_eq!(value.as_deref(), Some(hash_key.as_bytes()));
        }
    });
    let tables = runtime.block_on(client.list_tables(false)).unwrap();
    assert_eq!(
        tables.iter().filter(|table| table.name == "temp").count(),
        1,
        "temp is not created twice: {tables:?}"
    );
    onebox.stop();
}

// Proves a child that dies while onebox runs is reported on stderr, naming
// its log, and that onebox keeps running and still stops cleanly.
#[test]
fn onebox_reports_a_dead_child_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let onebox = Onebox::start(dir.path(), 3, 1);
    let pid = onebox.pid_of("node-2");
    // SAFETY: kill(2) on a node onebox started and reported.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = onebox
            .stderr
            .recv_timeout(left)
            .expect("onebox reports the dead node within 30 s");
        if line.contains("node-2") && line.contains("exited") {
            break line;
        }
    };
    assert!(report.contains("node-2.log"), "{report}");
    let mut onebox = onebox;
    assert!(onebox.child.try_wait().unwrap().is_none(), "onebox runs on");
    onebox.stop();
}

// Proves bad arguments are refused with a clear message before anything
// starts.
#[test]
fn onebox_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--nodes", "0"], "--nodes 0"),
        (vec!["--partitions", "3"], "--partitions"),
        (vec!["--shards", "0"], "--shards 0"),
        (vec!["--table", "bad name"], "--table"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_markab"))
            .arg("onebox")
            .arg("--dir")
            .arg(dir.path())
            .args(&args)
            .output()
            .expect("run onebox");
        assert!(!output.status.success(), "{args:?} fails");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains(needle), "{args:?}: {message}");
    }
    assert!(
        !dir.path().join("meta.toml").exists(),
        "nothing is written for bad arguments"
    );
}

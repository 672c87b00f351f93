//! Test harness: starts real `markab replica` processes on 127.0.0.1 with
//! OS-assigned ports and kills only the processes it started, by pid.

#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The text of `GET /metrics` at `address` (`host:port`).
pub fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: markab\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Whether the etcd whose client URL is `http://{address}` answers
/// `GET /health` with `"health":"true"`: ready, not merely listening.
pub fn etcd_healthy(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n");
    let mut reply = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.contains(r#""health":"true""#)
}

/// A small deterministic generator (xorshift64*): fuzz cases that are the
/// same on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// The value of `key` among a meta answer's pairs.
pub fn value_of<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {key:?} in {pairs:?}"))
}

/// The value of the first sample line starting with `prefix`.
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix:?} in:\n{text}"))
}

/// Scrapes `address` (bounded, every 200 ms) until `done` holds of the
/// text, and returns that text.
pub fn wait_for_metrics(address: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(address);
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics at {address} never settled:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads every acknowledged write (hash key, sort key `s`) back through
/// `table` and asserts it holds its value.
pub fn read_back(
    runtime: &tokio::runtime::Runtime,
    table: &markab::client::Table,
    acked: &std::collections::BTreeMap<String, String>,
) {
    runtime.block_on(async {
        for (hash_key, value) in acked {
            let got = table
                .get(hash_key.as_bytes(), b"s")
                .await
                .unwrap_or_else(|error| panic!("get {hash_key}: {error}"));
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "acknowledged write {hash_key} lost"
            );
        }
    });
}

/// How long a node may take to print its ready line.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running node process.
pub struct Node {
    pub child: Child,
    pub addresses: Vec<SocketAddr>,
    /// `host:port` of its metrics endpoint, when its config enables one.
    pub metrics_address: Option<String>,
    pub config_path: PathBuf,
    /// Where its stderr goes, when not the test's: quoted when it fails.
    log: Option<PathBuf>,
    stdout_lines: mpsc::Receiver<String>,
}

/// Writes a standalone node config in `dir` with tables `(name, app_id, partitions)`.
pub fn write_config(dir: &Path, shards: usize, tables: &[(&str, i32, u32)]) -> PathBuf {
    write_config_with(dir, shards, tables, "")
}

/// Like [`write_config`], with extra tuning written to `dir/tuning/default.toml`.
pub fn write_config_with(
    dir: &Path,
    shards: usize,
    tables: &[(&str, i32, u32)],
    tuning: &str,
) -> PathBuf {
    let mut text = format!(
        "[node]\ndata_dir = {:?}\nhost = \"127.0.0.1\"\nport_base = 0\nshards = {shards}\npin = false\ntuning_dir = \"tuning\"\n",
        dir.join("data")
    );
    for (name, app_id, partitions) in tables {
        text.push_str(&format!(
            "\n[[table]]\nname = {name:?}\napp_id = {app_id}\npartition_count = {partitions}\n"
        ));
    }
    std::fs::create_dir_all(dir.join("tuning")).unwrap();
    std::fs::write(dir.join("tuning/default.toml"), tuning).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `markab SUBCOMMAND --config PATH` with stdout piped; its lines
/// arrive on the returned channel (a thread reads them).
pub fn spawn_markab(subcommand: &str, config_path: &Path) -> (Child, mpsc::Receiver<String>) {
    spawn_markab_with(subcommand, config_path, &[], None)
}

/// [`spawn_markab`] with extra environment variables and, when `log` is
/// given, stderr appended to that file instead of the test's.
pub fn spawn_markab_with(
    subcommand: &str,
    config_path: &Path,
    env: &[(String, String)],
    log: Option<&Path>,
) -> (Child, mpsc::Receiver<String>) {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|error| panic!("open {}: {error}", path.display())),
        ),
        None => Stdio::inherit(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_markab"))
        .args([subcommand, "--config"])
        .arg(config_path)
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|error| panic!("spawn markab {subcommand}: {error}"));
    let stdout = child.stdout.take().unwrap();
    let (sender, stdout_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, stdout_lines)
}

impl Node {
    /// Starts `markab replica --config PATH` and waits for its ready line.
    pub fn start(config_path: &Path) -> Node {
        Node::start_logged(config_path, None)
    }

    /// [`Node::start`] with stderr appended to `log` when given.
    pub fn start_logged(config_path: &Path, log: Option<&Path>) -> Node {
        Node::start_logged_with(config_path, log, &[])
    }

    /// [`Node::start_logged`] with extra environment variables.
    pub fn start_logged_with(
        config_path: &Path,
        log: Option<&Path>,
        env: &[(String, String)],
    ) -> Node {
        let (child, stdout_lines) = spawn_markab_with("replica", config_path, env, log);
        let mut node = Node {
            child,
            addresses: Vec::new(),
            metrics_address: None,
            config_path: config_path.to_owned(),
            log: log.map(Path::to_owned),
            stdout_lines,
        };
        let line = node.wait_line("markab replica ready", NODE_START_TIMEOUT);
        let at = line
            .split(" at ")
            .nth(1)
            .expect("ready line names addresses");
        let list = at.split_whitespace().next().unwrap();
        node.addresses = list.split(',').map(|a| a.parse().unwrap()).collect();
        node.metrics_address = line
            .split(" metrics=http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(str::to_string);
        node
    }

    /// Waits for a stdout line containing `needle`; panics after `timeout`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => {
                    let status = self.child.try_wait();
                    panic!(
                        "no line containing {needle:?} within {timeout:?} (process: {status:?}){}",
                        self.log_tail()
                    );
                }
            }
        }
    }

    /// The last lines of its log file, when it has one, for a failure's
    /// message.
    fn log_tail(&self) -> String {
        const LINES: usize = 30;
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
        format!("\nlast lines of {}:\n{tail}", path.display())
    }

    /// The address of shard 0, where a client starts.
    pub fn address(&self) -> String {
        self.addresses[0].to_string()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns its status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        terminate_child(&mut self.child, "node")
    }

    /// Kills the process with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// How long a process may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends SIGTERM to a child this test started and waits (bounded) for its
/// exit; SIGKILLs it and panics past [`STOP_TIMEOUT`].
pub fn terminate_child(child: &mut Child, what: &str) -> std::process::ExitStatus {
    signal(child.id(), libc::SIGTERM);
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not stop within {STOP_TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs and reaps a child this test started, if it still runs.
pub fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sends `signal` to a process this test started (SIGSTOP / SIGCONT to
/// pause and resume it).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid this test started.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A multi-threaded tokio runtime for driving the client in tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Total bytes of the files directly in `dir` (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(|metadata| metadata.is_file())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

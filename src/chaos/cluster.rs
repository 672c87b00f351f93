//! The round's processes: one meta and N nodes, each a child of the
//! harness in cgroups of its own (so nftables can tell its sockets apart),
//! following a wall clock offset file, each node on a loop-mounted ext4
//! file system. Every signal goes to a pid the harness started and has not
//! reaped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::system::{ProcessGroups, Sandbox};
use crate::clock::WALL_CLOCK_OFFSET_FILE_ENV;
use crate::onebox::{LogTail, PortPicker, META_READY, NODE_READY};

/// How long a process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Size of each node's data file system (sparse: only what is written
/// takes space).
pub const DISK_BYTES: u64 = 256 * 1024 * 1024;
/// Per-shard budgets: small memtables, so RocksDB flushes (and has files
/// to damage) within a round.
const TUNING: &str = "\
# Written by markab chaos.
block_cache_bytes = 8_388_608
write_buffer_bytes = 1_048_576
compaction_threads = 1
";

/// One process of the cluster.
pub struct Proc {
    /// `meta` or `node-<i>`.
    pub name: String,
    role: &'static str,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    pub groups: ProcessGroups,
    /// Its wall clock offset file (milliseconds).
    pub clock_file: PathBuf,
    /// The ports it listens on (meta: one; a node: one per shard).
    pub ports: Vec<u16>,
    /// SIGSTOPped and not yet continued.
    pub stopped: bool,
    /// Its data directory (a node's is a loop mount).
    pub data_dir: PathBuf,
    /// Index of its disk in the sandbox (nodes only).
    pub disk: Option<usize>,
}

impl Proc {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// The cluster.
pub struct ChaosCluster {
    pub dir: PathBuf,
    exe: PathBuf,
    pub meta_address: String,
    pub meta: Proc,
    pub nodes: Vec<Proc>,
}

impl ChaosCluster {
    /// Writes the configs in `dir`, makes the nodes' disks and cgroups, and
    /// starts meta and every node.
    pub fn start(
        dir: &Path,
        sandbox: &mut Sandbox,
        nodes: usize,
        shards: usize,
    ) -> anyhow::Result<ChaosCluster> {
        let exe = std::env::current_exe().context("find the markab executable")?;
        for sub in ["logs", "tuning", "disks", "clocks"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("tuning/default.toml"), TUNING)?;
        let mut picker = PortPicker::new();
        let meta_port = picker.pick(1)?;
        let meta_address = format!("127.0.0.1:{meta_port}");
        let meta_config = dir.join("meta.toml");
        std::fs::write(
            &meta_config,
            format!(
                "[meta]\nlisten = \"{meta_address}\"\ndata_dir = \"{}\"\n",
                dir.join("meta").display()
            ),
        )?;
        let meta = new_proc(
            sandbox,
            dir,
            "meta",
            "meta",
            meta_config,
            vec![meta_port],
            dir.join("meta"),
            None,
        )?;
        let mut procs = Vec::with_capacity(nodes);
        for index in 0..nodes {
            let name = format!("node-{index}");
            let port_base = picker.pick(shards)?;
            let data_dir = dir.join(&name);
            let disk = sandbox.disk(
                &dir.join("disks").join(format!("{name}.img")),
                &data_dir,
                DISK_BYTES,
            )?;
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[node]\ndata_dir = \"{}\"\nhost = \"127.0.0.1\"\nport_base = {port_base}\nshards = {shards}\npin = false\ntuning_dir = \"tuning\"\nmeta = [\"{meta_address}\"]\n",
                    data_dir.display()
                ),
            )?;
            let ports = (0..shards as u16).map(|shard| port_base + shard).collect();
            procs.push(new_proc(
                sandbox,
                dir,
                &name,
                "replica",
                config,
                ports,
                data_dir,
                Some(disk),
            )?);
        }
        // The picker holds the ports until here; the processes bind them.
        drop(picker);
        let mut cluster = ChaosCluster {
            dir: dir.to_owned(),
            exe,
            meta_address,
            meta,
            nodes: procs,
        };
        cluster.start_meta()?;
        for index in 0..nodes {
            cluster.start_node(index)?;
        }
        Ok(cluster)
    }

    pub fn start_meta(&mut self) -> anyhow::Result<()> {
        spawn_ready(&self.exe, &mut self.meta, META_READY)
    }

    pub fn start_node(&mut self, index: usize) -> anyhow::Result<()> {
        spawn_ready(&self.exe, &mut self.nodes[index], NODE_READY)
    }

    /// The process `target`: `None` is meta, `Some(i)` node i.
    pub fn proc_mut(&mut self, target: Option<usize>) -> &mut Proc {
        match target {
            None => &mut self.meta,
            Some(index) => &mut self.nodes[index],
        }
    }

    pub fn proc(&self, target: Option<usize>) -> &Proc {
        match target {
            None => &self.meta,
            Some(index) => &self.nodes[index],
        }
    }

    /// SIGKILLs `target` (if it runs) and reaps it.
    pub fn kill(&mut self, target: Option<usize>) {
        let proc = self.proc_mut(target);
        if let Some(mut child) = proc.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        proc.stopped = false;
    }

    /// SIGSTOP (`stop`) or SIGCONT to `target`.
    pub fn signal_stop(&mut self, target: Option<usize>, stop: bool) {
        let proc = self.proc_mut(target);
        if let Some(child) = &proc.child {
            let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: the pid is a child this harness started and has not
            // reaped, so it cannot have been reused.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            proc.stopped = stop;
        }
    }

    /// Starts `target` again if it is not running.
    pub fn ensure_running(&mut self, target: Option<usize>) -> anyhow::Result<()> {
        if self.proc(target).is_running() {
            if self.proc(target).stopped {
                self.signal_stop(target, false);
            }
            return Ok(());
        }
        match target {
            None => self.start_meta(),
            Some(index) => self.start_node(index),
        }
    }

    /// Steps `target`'s wall clock to system time plus `offset_ms`.
    pub fn set_clock(&self, target: Option<usize>, offset_ms: i64) -> anyhow::Result<()> {
        let file = &self.proc(target).clock_file;
        let temporary = file.with_extension("tmp");
        std::fs::write(&temporary, format!("{offset_ms}\n"))?;
        std::fs::rename(&temporary, file)?;
        Ok(())
    }

    /// Reaps processes that exited without the harness's doing: for each,
    /// its target (`None`: meta) and its exit status with the last lines of
    /// its log.
    pub fn reap_exits(&mut self) -> Vec<(Option<usize>, String)> {
        let mut exited = Vec::new();
        let targets = std::iter::once(None).chain((0..self.nodes.len()).map(Some));
        for target in targets.collect::<Vec<_>>() {
            let proc = self.proc_mut(target);
            let status: Option<ExitStatus> = proc
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = status {
                proc.child = None;
                proc.stopped = false;
                let tail = LogTail::open(&proc.log, log_tail_offset(&proc.log))
                    .ok()
                    .map(|mut tail| {
                        let _ = tail.poll("");
                        tail.last_lines().join(" | ")
                    })
                    .unwrap_or_default();
                exited.push((target, format!("{} {status}: {tail}", proc.name)));
            }
        }
        exited
    }

    /// SIGKILLs everything (the round is over or failed).
    pub fn kill_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(Some(index));
        }
        self.kill(None);
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Offset of about the last 4 KiB of a log.
fn log_tail_offset(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|metadata| metadata.len().saturating_sub(4096))
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn new_proc(
    sandbox: &mut Sandbox,
    dir: &Path,
    name: &str,
    role: &'static str,
    config: PathBuf,
    ports: Vec<u16>,
    data_dir: PathBuf,
    disk: Option<usize>,
) -> anyhow::Result<Proc> {
    let clock_file = dir.join("clocks").join(name);
    std::fs::write(&clock_file, "0\n")?;
    Ok(Proc {
        name: name.to_string(),
        role,
        config,
        log: dir.join("logs").join(format!("{name}.log")),
        child: None,
        groups: sandbox.groups_for(name)?,
        clock_file,
        ports,
        stopped: false,
        data_dir,
        disk,
    })
}

/// Starts `proc` in its cgroups and waits for `ready` in its log.
fn spawn_ready(exe: &Path, proc: &mut Proc, ready: &str) -> anyhow::Result<()> {
    if proc.child.is_some() {
        bail!("{} is already running", proc.name);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&proc.log)
        .with_context(|| format!("open {}", proc.log.display()))?;
    let offset = file.metadata()?.len();
    let stderr = file.try_clone()?;
    let procs_files: Vec<CString> = proc
        .groups
        .procs_files()
        .iter()
        .map(|path| CString::new(path.as_os_str().as_bytes()).expect("no NUL in a cgroup path"))
        .collect();
    let mut command = Command::new(exe);
    command
        .arg(proc.role)
        .arg("--config")
        .arg(&proc.config)
        .env(WALL_CLOCK_OFFSET_FILE_ENV, &proc.clock_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .process_group(0);
    // SAFETY: between fork and exec the closure calls only async-signal-safe
    // functions (prctl, getpid, open, write, close) on memory prepared
    // before the fork: it joins the process's cgroups before it opens a
    // socket, and asks for SIGKILL when the harness dies.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut digits = [0u8; 20];
            let mut pid = libc::getpid() as u32;
            let mut start = digits.len();
            loop {
                start -= 1;
                digits[start] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for path in &procs_files {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let bytes = &digits[start..];
                let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                libc::close(fd);
                if written < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("start {}", proc.name))?;
    proc.child = Some(child);
    proc.stopped = false;
    let mut tail = LogTail::open(&proc.log, offset)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if tail.poll(ready)? {
            return Ok(());
        }
        let child = proc.child.as_mut().expect("set above");
        if let Ok(Some(status)) = child.try_wait() {
            proc.child = None;
            let _ = tail.poll(ready);
            bail!(
                "{} exited at start ({status}); last lines of {}:\n{}",
                proc.name,
                proc.log.display(),
                tail.last_lines().join("\n")
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} printed no ready line within {} s; see {}",
                proc.name,
                READY_TIMEOUT.as_secs(),
                proc.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

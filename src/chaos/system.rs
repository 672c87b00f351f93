//! What the nemesis needs from Linux, created per round and removed at its
//! end: a cgroup (v2) per process, which names its sockets for nftables; a
//! blkio cgroup (v1) or `io.max` (v2) per node for a slow disk; an ext4
//! file system on a loop device per node for a full disk; and one nftables
//! table whose output chain drops what the partitions cut.
//!
//! Everything is named `markab-chaos-<harness pid>-...`, touches only the
//! processes the harness started and traffic on 127.0.0.1, and is removed
//! on drop (a harness killed with SIGKILL leaves it behind; the next run
//! removes what belongs to dead harnesses).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Prefix of everything the harness creates outside its directory.
const PREFIX: &str = "markab-chaos-";
/// nftables table name prefix (nft names allow no `-`).
const NFT_PREFIX: &str = "markab_chaos_";
/// Where nftables resolves cgroup v2 paths from.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Runs a command; fails with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot run {program} (is it installed? scripts/setup.sh installs it)")
        })?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks up front what the nemesis needs, so a run fails at once with
/// what is missing rather than in the middle of a schedule.
pub fn check_capabilities() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("markab chaos needs root: it adds nftables rules, cgroups and loop mounts");
    }
    for program in ["nft", "losetup", "mkfs.ext4", "mount", "umount"] {
        run("sh", &["-c", &format!("command -v {program}")])
            .with_context(|| format!("{program} is missing (scripts/setup.sh installs it)"))?;
    }
    cgroup2_mount()?;
    Ok(())
}

/// The cgroup v2 mount point, which must lie under /sys/fs/cgroup (where
/// nftables looks for cgroup paths).
fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("read /proc/self/mounts")?;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 3 && fields[2] == "cgroup2" && fields[1].starts_with(CGROUP_ROOT) {
            return Ok(PathBuf::from(fields[1]));
        }
    }
    bail!("no cgroup2 file system is mounted under {CGROUP_ROOT}; nftables needs one to tell the processes' sockets apart")
}

/// The blkio controller: v1's own hierarchy, or v2's `io` controller.
#[derive(Clone, Debug)]
enum Blkio {
    V1(PathBuf),
    V2,
}

fn blkio_controller(cgroup2: &Path) -> Option<Blkio> {
    let v1 = PathBuf::from(CGROUP_ROOT).join("blkio");
    if v1.join("blkio.throttle.write_iops_device").exists() {
        return Some(Blkio::V1(v1));
    }
    let controllers = std::fs::read_to_string(cgroup2.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|name| name == "io")
        .then_some(Blkio::V2)
}

/// One process's cgroups.
#[derive(Clone, Debug)]
pub struct ProcessGroups {
    /// The v2 cgroup directory.
    pub v2: PathBuf,
    /// Its path for nftables (relative to /sys/fs/cgroup).
    pub nft_path: String,
    /// The v1 blkio cgroup directory, where there is one.
    pub blkio_v1: Option<PathBuf>,
}

impl ProcessGroups {
    /// The `cgroup.procs` files a new process writes its pid into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.v2.join("cgroup.procs")];
        if let Some(blkio) = &self.blkio_v1 {
            files.push(blkio.join("cgroup.procs"));
        }
        files
    }
}

/// A node's data file system: an ext4 image on a loop device.
#[derive(Debug)]
pub struct Disk {
    pub image: PathBuf,
    pub mount: PathBuf,
    pub device: String,
    /// `major:minor` of the loop device.
    pub dev_id: String,
    ballast: PathBuf,
}

/// One direction of traffic that a partition cuts: from the sockets of
/// `from` (a process's nft cgroup path) to `ports` on 127.0.0.1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cut {
    pub from: String,
    pub ports: Vec<u16>,
}

/// The round's system resources.
pub struct Sandbox {
    tag: String,
    cgroup2: PathBuf,
    blkio: Option<Blkio>,
    groups: Vec<ProcessGroups>,
    disks: Vec<Disk>,
    nft_table: String,
    nft_ready: bool,
}

impl Sandbox {
    /// Names the round's resources `markab-chaos-<pid>-r<round>-...`.
    pub fn new(round: usize) -> anyhow::Result<Sandbox> {
        remove_stale();
        let pid = std::process::id();
        let cgroup2 = cgroup2_mount()?;
        let blkio = blkio_controller(&cgroup2);
        if let Some(Blkio::V2) = &blkio {
            // Let the harness's own cgroups have the io controller.
            let _ = std::fs::write(cgroup2.join("cgroup.subtree_control"), "+io");
        }
        let sandbox = Sandbox {
            tag: format!("{PREFIX}{pid}-r{round}"),
            cgroup2,
            blkio,
            groups: Vec::new(),
            disks: Vec::new(),
            nft_table: format!("{NFT_PREFIX}{pid}_r{round}"),
            nft_ready: false,
        };
        Ok(sandbox)
    }

    /// Creates the cgroups of process `name`.
    pub fn groups_for(&mut self, name: &str) -> anyhow::Result<ProcessGroups> {
        let dir_name = format!("{}-{name}", self.tag);
        let v2 = self.cgroup2.join(&dir_name);
        std::fs::create_dir_all(&v2).with_context(|| format!("create cgroup {}", v2.display()))?;
        let relative = v2
            .strip_prefix(CGROUP_ROOT)
            .expect("the cgroup2 mount lies under /sys/fs/cgroup")
            .to_string_lossy()
            .into_owned();
        let blkio_v1 = match &self.blkio {
            Some(Blkio::V1(root)) => {
                let dir = root.join(&dir_name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("create cgroup {}", dir.display()))?;
                Some(dir)
            }
            _ => None,
        };
        let groups = ProcessGroups {
            v2,
            nft_path: relative,
            blkio_v1,
        };
        self.groups.push(groups.clone());
        Ok(groups)
    }

    /// Makes an ext4 file system of `bytes` on a loop device and mounts it
    /// at `mount` (created).
    pub fn disk(&mut self, image: &Path, mount: &Path, bytes: u64) -> anyhow::Result<usize> {
        std::fs::create_dir_all(mount).with_context(|| format!("create {}", mount.display()))?;
        let file =
            std::fs::File::create(image).with_context(|| format!("create {}", image.display()))?;
        file.set_len(bytes)
            .with_context(|| format!("size {}", image.display()))?;
        drop(file);
        let image_text = image.to_string_lossy().into_owned();
        let device = run("losetup", &["--find", "--show", &image_text])?
            .trim()
            .to_string();
        let dev_id = std::fs::read_to_string(format!(
            "/sys/block/{}/dev",
            device.trim_start_matches("/dev/")
        ))
        .with_context(|| format!("read the device number of {device}"))?
        .trim()
        .to_string();
        let disk = Disk {
            image: image.to_owned(),
            mount: mount.to_owned(),
            device: device.clone(),
            dev_id,
            ballast: mount.join("chaos-ballast"),
        };
        // Registered before mkfs, so a failure below still frees the device.
        self.disks.push(disk);
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &device])?;
        run("mount", &[&device, &mount.to_string_lossy()])?;
        Ok(self.disks.len() - 1)
    }

    /// Fills disk `index` (a ballast file over all its free space).
    pub fn fill_disk(&self, index: usize) -> anyhow::Result<()> {
        let disk = &self.disks[index];
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&disk.ballast)
            .with_context(|| format!("create {}", disk.ballast.display()))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // Reserve in shrinking chunks until nothing is left.
        let mut chunk: i64 = 1 << 30;
        let mut offset = file.metadata()?.len() as i64;
        while chunk >= 4096 {
            // SAFETY: fd is an open, writable file for the whole call.
            let result = unsafe { libc::fallocate(fd, 0, offset, chunk) };
            if result == 0 {
                offset += chunk;
            } else {
                chunk /= 2;
            }
        }
        Ok(())
    }

    /// Frees disk `index` again.
    pub fn free_disk(&self, index: usize) -> anyhow::Result<()> {
        let ballast = &self.disks[index].ballast;
        match std::fs::remove_file(ballast) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error).with_context(|| format!("remove {}", ballast.display())),
        }
    }

    /// Limits writes of `groups` to disk `index` to `iops` per second and
    /// `bytes_per_s` (0: no limit).
    pub fn throttle_disk(
        &self,
        groups: &ProcessGroups,
        index: usize,
        iops: u64,
        bytes_per_s: u64,
    ) -> anyhow::Result<()> {
        let dev = &self.disks[index].dev_id;
        match &self.blkio {
            Some(Blkio::V1(_)) => {
                let dir = groups.blkio_v1.as_ref().expect("v1 blkio cgroup made");
                for (file, value) in [
                    ("blkio.throttle.write_iops_device", iops),
                    ("blkio.throttle.write_bps_device", bytes_per_s),
                ] {
                    let path = dir.join(file);
                    std::fs::write(&path, format!("{dev} {value}"))
                        .with_context(|| format!("write {}", path.display()))?;
                }
            }
            Some(Blkio::V2) => {
                let path = groups.v2.join("io.max");
                let limit = |value: u64| {
                    if value == 0 {
                        "max".to_string()
                    } else {
                        value.to_string()
                    }
                };
                std::fs::write(
                    &path,
                    format!("{dev} wiops={} wbps={}", limit(iops), limit(bytes_per_s)),
                )
                .with_context(|| format!("write {}", path.display()))?;
            }
            None => bail!("no blkio controller: slow disks cannot be injected here"),
        }
        Ok(())
    }

    /// Replaces the partition rules with `cuts` (one atomic nft script).
    pub fn set_cuts(&mut self, cuts: &BTreeSet<Cut>) -> anyhow::Result<()> {
        let table = &self.nft_table;
        let mut script = String::new();
        if !self.nft_ready {
            script.push_str(&format!(
                "add table inet {table}\nadd chain inet {table} out {{ type filter hook output priority 0; policy accept; }}\n"
            ));
        }
        script.push_str(&format!("flush chain inet {table} out\n"));
        for cut in cuts {
            let ports: Vec<String> = cut.ports.iter().map(u16::to_string).collect();
            script.push_str(&format!(
                "add rule inet {table} out socket cgroupv2 level 1 \"{}\" ip daddr 127.0.0.1 tcp dport {{ {} }} drop\n",
                cut.from,
                ports.join(", ")
            ));
        }
        nft_script(&script)?;
        self.nft_ready = true;
        Ok(())
    }
}

fn nft_script(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .context("write to nft")?;
    let output = child.wait_with_output().context("wait for nft")?;
    if !output.status.success() {
        bail!(
            "nft failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.nft_ready {
            let _ = run("nft", &["delete", "table", "inet", &self.nft_table]);
        }
        for disk in self.disks.drain(..).rev() {
            let _ = run("umount", &["-l", &disk.mount.to_string_lossy()]);
            let _ = run("losetup", &["-d", &disk.device]);
            let _ = std::fs::remove_file(&disk.image);
        }
        for groups in self.groups.drain(..) {
            let _ = std::fs::remove_dir(&groups.v2);
            if let Some(blkio) = &groups.blkio_v1 {
                let _ = std::fs::remove_dir(blkio);
            }
        }
    }
}

/// Whether `pid` names a live process.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks the pid.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Removes the nftables tables and empty cgroups of harnesses that died
/// without cleaning up.
fn remove_stale() {
    if let Ok(tables) = run("nft", &["list", "tables"]) {
        for line in tables.lines() {
            let Some(name) = line.strip_prefix("table inet ") else {
                continue;
            };
            let Some(rest) = name.strip_prefix(NFT_PREFIX) else {
                continue;
            };
            let pid = rest
                .split('_')
                .next()
                .and_then(|pid| pid.parse::<i32>().ok());
            if pid.is_some_and(|pid| !alive(pid)) {
                let _ = run("nft", &["delete", "table", "inet", name]);
            }
        }
    }
    let mut roots = vec![PathBuf::from(CGROUP_ROOT).join("blkio")];
    if let Ok(cgroup2) = cgroup2_mount() {
        roots.push(cgroup2);
    }
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid = rest
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<i32>().ok());
            if pid.is_some_and(|pid| !alive(pid)) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

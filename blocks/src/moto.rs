//! A local S3 server for tests and benchmarks: moto (`moto[server]==5.2.5`, which
//! `scripts/setup.sh` installs into `.moto-venv/` at the repository root). [`Moto::start`] runs
//! `moto_server` on a free loopback port and waits (bounded) until it answers; the server is
//! killed by pid and reaped when the [`Moto`] is dropped. Test support: it panics on failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on moto's start: a Python process importing Flask and moto on a busy 2-core machine.
pub const MOTO_START_BOUND: Duration = Duration::from_secs(20);

/// Where `moto_server` is: `.moto-venv/bin/` in the first directory holding one, going up from
/// the running test's package (`CARGO_MANIFEST_DIR` as cargo sets it when it runs the test), then
/// from where this crate was compiled. Looked up at run time: one build directory serves several
/// checkouts, and cargo reuses this crate's build from whichever compiled it first.
fn moto_server() -> PathBuf {
    let relative = Path::new(".moto-venv/bin/moto_server");
    let starts = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for start in starts.into_iter().flatten() {
        if let Some(found) = start
            .ancestors()
            .map(|directory| directory.join(relative))
            .find(|program| program.exists())
        {
            return found;
        }
    }
    panic!(
        "{} is missing: run scripts/setup.sh (it installs moto[server]==5.2.5 into .moto-venv)",
        relative.display()
    );
}

/// A running `moto_server`, killed (by pid) and reaped on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts `moto_server` on a free port with `environment` added, and waits until it answers.
    pub fn start(environment: &[(&str, &str)]) -> Moto {
        let program = moto_server();
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        let mut moto = Moto { child, port };
        let started = Instant::now();
        loop {
            if http(port, "GET", "/").is_ok() {
                return moto;
            }
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited with {status} before answering");
            }
            assert!(
                started.elapsed() < MOTO_START_BOUND,
                "moto_server did not answer on port {port} within {MOTO_START_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts an unsigned `PUT /bucket` unless auth is turned on).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, response) = http(self.port, "PUT", &format!("/{bucket}")).unwrap();
        assert_eq!(status, 200, "creating bucket {bucket}: {response}");
    }

    /// Kills the server by pid and reaps it.
    pub fn kill(&mut self) {
        // Already exited is fine: kill only fails then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One unsigned HTTP/1.1 request without a body; returns the status and the whole response.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))?;
    Ok((status, response))
}

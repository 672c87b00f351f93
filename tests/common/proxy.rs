//! A fault-injecting TCP proxy between nodes and meta, on 127.0.0.1: each
//! node reaches meta through a proxy of its own, so a test can cut one
//! node (or all of them) off from meta, and hold meta's requests of one
//! kind for a while, without root and without touching the processes.
//!
//! It understands Markab's frames in the node-to-meta direction (16-byte
//! header, then the body), so it can delay a request by its kind; bytes in
//! the other direction are copied as they come. Every thread ends when the
//! proxy is dropped (the listener and every connection are shut down).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab::wire::codec::decode_request;
use markab::wire::frame::{decode_header, FRAME_HEADER_BYTES};
use markab::wire::Request;

/// What the proxy does to traffic now.
#[derive(Default)]
struct Faults {
    /// Cut: connections are closed and new ones refused.
    cut: AtomicBool,
    /// Requests other than beacons are held this long before meta sees them
    /// (0 = none), like a meta slow to answer them.
    hold_requests_ms: AtomicU64,
    /// Requests held so far.
    held: AtomicU64,
}

/// A proxy listening on 127.0.0.1 and forwarding to one upstream address.
pub struct FaultProxy {
    pub address: String,
    faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl FaultProxy {
    /// Listens on `listen` (an address picked free by the caller) and
    /// forwards to `upstream`.
    pub fn start(listen: &str, upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind(listen).unwrap_or_else(|error| {
            panic!("proxy cannot listen on {listen}: {error}");
        });
        listener.set_nonblocking(true).unwrap();
        let faults = Arc::new(Faults::default());
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accept_faults, accept_stop, accept_connections) =
            (faults.clone(), stop.clone(), connections.clone());
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            while !accept_stop.load(Ordering::Relaxed) {
                let downstream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if accept_faults.cut.load(Ordering::Relaxed) {
                    let _ = downstream.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&upstream) else {
                    let _ = downstream.shutdown(Shutdown::Both);
                    continue;
                };
                downstream.set_nonblocking(false).unwrap();
                let _ = downstream.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                {
                    let mut held = accept_connections.lock().unwrap();
                    held.push(downstream.try_clone().unwrap());
                    held.push(upstream.try_clone().unwrap());
                }
                let (to_meta_from, to_meta_to) = (
                    downstream.try_clone().unwrap(),
                    upstream.try_clone().unwrap(),
                );
                let faults = accept_faults.clone();
                std::thread::spawn(move || forward_requests(to_meta_from, to_meta_to, &faults));
                std::thread::spawn(move || copy_bytes(upstream, downstream));
            }
        });
        FaultProxy {
            address: listen.to_owned(),
            faults,
            stop,
            connections,
        }
    }

    /// Cuts the link: every open connection is shut down and new ones are
    /// closed at once, until [`FaultProxy::heal`].
    pub fn cut(&self) {
        self.faults.cut.store(true, Ordering::Relaxed);
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Ends a cut: new connections are forwarded again.
    pub fn heal(&self) {
        self.faults.cut.store(false, Ordering::Relaxed);
    }

    /// Holds every request other than a beacon for `hold` before forwarding
    /// it (and what follows it on its connection).
    pub fn hold_requests(&self, hold: Duration) {
        self.faults
            .hold_requests_ms
            .store(hold.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests held so far.
    pub fn held(&self) -> u64 {
        self.faults.held.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Node to meta: whole frames, each held first if it is a request the
/// faults say to hold.
fn forward_requests(mut from: TcpStream, mut to: TcpStream, faults: &Faults) {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    loop {
        if from.read_exact(&mut header).is_err() {
            break;
        }
        let Ok(decoded) = decode_header(&header) else {
            break;
        };
        let mut body = vec![0u8; decoded.body_bytes];
        if from.read_exact(&mut body).is_err() {
            break;
        }
        let hold_ms = faults.hold_requests_ms.load(Ordering::Relaxed);
        if hold_ms > 0 {
            let is_beacon = matches!(decode_request(&body), Ok((_, Request::Beacon(_))));
            if !is_beacon {
                faults.held.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(hold_ms));
            }
        }
        if faults.cut.load(Ordering::Relaxed)
            || to.write_all(&header).is_err()
            || to.write_all(&body).is_err()
        {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Meta to node: bytes as they come.
fn copy_bytes(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

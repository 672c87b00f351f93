//! The shard runtime: one glommio executor per shard, each with its own listener, all joined by a
//! full mesh of bounded channels, started and stopped together.
//!
//! Start-up, per shard, on its own executor thread: a 1 ms warm-up sleep (glommio 0.9 pays tens
//! of milliseconds on the first timer), bind the listener, report the bound address to the
//! starting thread, wait for every shard's address, join the channel mesh, then run `serve`.
//! [`ShardRuntime::start`] returns once every shard is listening, or the first failure.
//!
//! The runtime lives as long as every shard: when one shard's `serve` returns or panics, stop is
//! requested for all of them, because the others cannot forward work to it any more.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::error::ShardsError;
use crate::listener::bind_listener;
use crate::topology::ShardPlan;
use crate::tuning::Tuning;

/// How often [`StopSignal::stopped`] checks the stop flag, in milliseconds: the most a shard
/// waits to notice a stop request.
pub const STOP_POLL_INTERVAL_MS: u64 = 20;

/// How long [`ShardRuntime::start`] waits for every shard to be listening, in milliseconds.
pub const START_TIMEOUT_MS: u64 = 30_000;

/// Length of the warm-up sleep each executor does before it reports ready, in milliseconds.
const WARM_UP_SLEEP_MS: u64 = 1;

/// Where shards listen: shard `i` binds `host:(port_base + i)`, unless its tuning sets
/// `listen_port`. A `port_base` of 0 lets the OS pick a free port for every shard without a
/// `listen_port` override (useful in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// Address every shard listens on (IPv4 or IPv6).
    pub host: IpAddr,
    /// Port of shard 0; shard `i` uses `port_base + i`. 0 = OS-assigned ports.
    pub port_base: u16,
}

/// Requests a stop of every shard; cheap to clone, usable from any thread (a signal-handling
/// thread, for instance).
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    stopped: Arc<AtomicBool>,
}

impl StopHandle {
    /// Requests a stop. Idempotent; returns at once.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Whether a stop has been requested.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A signal shards can watch.
    pub fn signal(&self) -> StopSignal {
        StopSignal {
            stopped: Arc::clone(&self.stopped),
        }
    }
}

/// What a shard watches to learn that the node is stopping; cheap to clone and `Send`.
#[derive(Clone, Debug)]
pub struct StopSignal {
    stopped: Arc<AtomicBool>,
}

impl StopSignal {
    /// Whether a stop has been requested.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Resolves once a stop has been requested, at most [`STOP_POLL_INTERVAL_MS`] (20 ms) plus
    /// scheduling delay after the request. It polls a flag with glommio timers, so it must be
    /// awaited on a glommio executor.
    pub async fn stopped(&self) {
        while !self.is_stopped() {
            glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
        }
    }
}

/// This shard's ends of the full channel mesh. `senders.send_to(peer, msg)` reaches shard `peer`;
/// `receivers.recv_from(peer)` takes what shard `peer` sent here. Every channel is bounded by the
/// largest `mesh_capacity` among the shards' tunings; a shard has no channel to itself.
#[derive(Debug)]
pub struct Mesh<M: Send> {
    /// Senders to every other shard, indexed by shard number.
    pub senders: Senders<M>,
    /// Receivers from every other shard, indexed by shard number.
    pub receivers: Receivers<M>,
}

impl<M: Send> Mesh<M> {
    /// This shard's number (its index in the mesh).
    pub fn shard(&self) -> usize {
        self.senders.peer_id()
    }

    /// Number of shards in the mesh.
    pub fn nr_shards(&self) -> usize {
        self.senders.nr_consumers()
    }
}

/// Everything a shard's `serve` future gets.
#[derive(Debug)]
pub struct ShardContext<M: Send> {
    /// This shard's number.
    pub shard: usize,
    /// Number of shards on this node.
    pub nr_shards: usize,
    /// The cpu this shard's executor is pinned to, `None` when unpinned.
    pub cpu: Option<usize>,
    /// This shard's effective tuning.
    pub tuning: Tuning,
    /// This shard's listener, bound on this shard's executor.
    pub listener: glommio::net::TcpListener,
    /// The listener's bound address.
    pub local_addr: SocketAddr,
    /// Every shard's listener address, indexed by shard.
    pub addresses: Vec<SocketAddr>,
    /// This shard's ends of the channel mesh.
    pub mesh: Mesh<M>,
    /// Resolves when the node is stopping.
    pub stop: StopSignal,
}

/// A started node: every shard listening and running its `serve` future.
#[derive(Debug)]
pub struct ShardRuntime {
    handles: Vec<(usize, ExecutorJoinHandle<Result<(), ShardsError>>)>,
    addresses: Vec<SocketAddr>,
    stop: StopHandle,
}

/// What a starting shard tells the starting thread.
enum StartReport {
    Listening { shard: usize, addr: SocketAddr },
    Failed { shard: usize, error: ShardsError },
}

/// Makes sure every shard reports exactly once: if the shard's start-up is dropped (executor
/// construction failed, a panic) before it reported, the drop reports the abort.
struct ReadyGuard {
    shard: usize,
    reports: Option<mpsc::Sender<StartReport>>,
}

impl ReadyGuard {
    fn report(&mut self, report: StartReport) {
        if let Some(reports) = self.reports.take() {
            // The starting thread may have given up (timeout); nothing to do then.
            let _ = reports.send(report);
        }
    }
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        let shard = self.shard;
        self.report(StartReport::Failed {
            shard,
            error: ShardsError::StartAborted {
                shard,
                reason: "its executor ended before it was listening".to_string(),
            },
        });
    }
}

/// Requests a stop of every shard when a shard's future ends, normally or by panic.
struct StopOnExit(StopHandle);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What one shard's executor needs to start.
struct ShardSetup<M: Send, F> {
    shard: usize,
    nr_shards: usize,
    cpu: Option<usize>,
    tuning: Tuning,
    addr: SocketAddr,
    mesh: MeshBuilder<M, Full>,
    addresses: mpsc::Receiver<Vec<SocketAddr>>,
    stop: StopHandle,
    serve: F,
}

impl ShardRuntime {
    /// Starts one executor per slot of `plan`, with `tunings[i]` for shard `i`, and returns once
    /// every shard is listening (see the module docs for the start-up sequence).
    ///
    /// `pin` pins shard `i` to `plan.slots[i].cpu` (`Placement::Fixed`); without it executors are
    /// unbound (tests, containers). Errors: a tuning count that does not match the plan, an
    /// invalid tuning, a port above 65535, an executor that cannot be built, a listener that
    /// cannot be bound (naming the address), or a shard not listening within
    /// [`START_TIMEOUT_MS`]. On error every shard already started is stopped and joined.
    pub fn start<M, F, Fut>(
        plan: &ShardPlan,
        tunings: Vec<Tuning>,
        listen: ListenSpec,
        pin: bool,
        serve: F,
    ) -> Result<ShardRuntime, ShardsError>
    where
        M: Send + 'static,
        F: Fn(ShardContext<M>) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let nr_shards = plan.slots.len();
        if nr_shards == 0 {
            return Err(ShardsError::ZeroShards);
        }
        if tunings.len() != nr_shards {
            return Err(ShardsError::TuningCount {
                tunings: tunings.len(),
                shards: nr_shards,
            });
        }
        for tuning in &tunings {
            tuning.validate()?;
        }
        let mut addrs = Vec::with_capacity(nr_shards);
        for (slot, tuning) in plan.slots.iter().zip(&tunings) {
            addrs.push(SocketAddr::new(
                listen.host,
                listen_port(slot.shard, tuning, listen)?,
            ));
        }
        let mesh_capacity = tunings
            .iter()
            .map(|tuning| tuning.mesh_capacity)
            .max()
            .unwrap_or(Tuning::default().mesh_capacity);
        let mesh = MeshBuilder::<M, Full>::full(nr_shards, mesh_capacity);
        let stop = StopHandle::default();
        // Each shard sends exactly one report, so this channel holds at most nr_shards messages.
        let (reports_sender, reports) = mpsc::channel::<StartReport>();
        let mut address_senders = Vec::with_capacity(nr_shards);
        let mut handles = Vec::with_capacity(nr_shards);

        for ((slot, tuning), addr) in plan.slots.iter().zip(tunings).zip(addrs) {
            let shard = slot.shard;
            let cpu = pin.then_some(slot.cpu);
            let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
            let mut builder = LocalExecutorBuilder::new(placement)
                .name(&format!("markab-shard-{shard}"))
                .io_memory(tuning.io_memory_bytes)
                .ring_depth(tuning.ring_depth)
                .preempt_timer(tuning.preempt_timer());
            if let Some(spin) = tuning.spin_before_park() {
                builder = builder.spin_before_park(spin);
            }
            // Capacity 1: the starting thread sends the address list once.
            let (address_sender, addresses) = mpsc::sync_channel(1);
            address_senders.push(address_sender);
            let setup = ShardSetup {
                shard,
                nr_shards,
                cpu,
                tuning,
                addr,
                mesh: mesh.clone(),
                addresses,
                stop: stop.clone(),
                serve: serve.clone(),
            };
            let guard = ReadyGuard {
                shard,
                reports: Some(reports_sender.clone()),
            };
            match builder.spawn(move || run_shard(setup, guard)) {
                Ok(handle) => handles.push((shard, handle)),
                Err(error) => {
                    stop.stop();
                    drop(address_senders);
                    join_all(handles);
                    return Err(ShardsError::Spawn {
                        shard,
                        cpu,
                        reason: error.to_string(),
                    });
                }
            }
        }
        drop(reports_sender);

        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        let mut addresses: Vec<Option<SocketAddr>> = vec![None; nr_shards];
        let mut failure = None;
        while let Some(waiting) = addresses.iter().position(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match reports.recv_timeout(left) {
                Ok(StartReport::Listening { shard, addr }) => addresses[shard] = Some(addr),
                Ok(StartReport::Failed { shard, error }) => {
                    failure = Some((shard, error));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Do not join: a shard that is stuck would hang the caller too.
                    stop.stop();
                    return Err(ShardsError::StartTimeout {
                        shard: waiting,
                        timeout_ms: START_TIMEOUT_MS,
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    failure = Some((
                        waiting,
                        ShardsError::StartAborted {
                            shard: waiting,
                            reason: "it never reported".to_string(),
                        },
                    ));
                    break;
                }
            }
        }
        if let Some((shard, error)) = failure {
            stop.stop();
            // Dropping the senders releases every shard waiting for the address list.
            drop(address_senders);
            let join_errors = join_all(handles);
            // An abort report says less than the shard's own exit error, when there is one.
            if matches!(error, ShardsError::StartAborted { .. }) {
                if let Some((_, better)) = join_errors.into_iter().find(|(s, _)| *s == shard) {
                    return Err(better);
                }
            }
            return Err(error);
        }

        let addresses: Vec<SocketAddr> = addresses.into_iter().flatten().collect();
        for sender in address_senders {
            // A shard that died since it reported shows its error in join().
            let _ = sender.send(addresses.clone());
        }
        Ok(ShardRuntime {
            handles,
            addresses,
            stop,
        })
    }

    /// Every shard's listener address, indexed by shard.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.addresses.clone()
    }

    /// Requests a stop of every shard; returns at once. Shards see it through
    /// [`ShardContext::stop`].
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// A handle another thread (a signal handler, say) can use to stop the runtime while this
    /// thread waits in [`ShardRuntime::join`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for every shard's executor to end. Returns the first shard's error in shard order
    /// (a panic comes back as [`ShardsError::ShardPanicked`] naming the shard); errors of later
    /// shards are logged.
    pub fn join(mut self) -> Result<(), ShardsError> {
        let handles = std::mem::take(&mut self.handles);
        let mut errors = join_all(handles).into_iter().map(|(_, error)| error);
        let first = errors.next();
        for error in errors {
            tracing::error!(%error, "another shard also failed");
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for ShardRuntime {
    /// A runtime dropped without [`ShardRuntime::join`] stops its shards (their threads finish
    /// in the background).
    fn drop(&mut self) {
        if !self.handles.is_empty() {
            self.stop.stop();
        }
    }
}

/// The port shard `shard` listens on.
fn listen_port(shard: usize, tuning: &Tuning, listen: ListenSpec) -> Result<u16, ShardsError> {
    if let Some(port) = tuning.listen_port {
        return Ok(port);
    }
    if listen.port_base == 0 {
        return Ok(0);
    }
    usize::from(listen.port_base)
        .checked_add(shard)
        .and_then(|port| u16::try_from(port).ok())
        .ok_or(ShardsError::PortOverflow {
            shard,
            port_base: listen.port_base,
        })
}

/// Joins every handle, in order, returning the errors with their shard.
fn join_all(
    handles: Vec<(usize, ExecutorJoinHandle<Result<(), ShardsError>>)>,
) -> Vec<(usize, ShardsError)> {
    let mut errors = Vec::new();
    for (shard, handle) in handles {
        let error = match handle.join() {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(glommio::GlommioError::BuilderError(glommio::BuilderErrorKind::ThreadPanic(
                payload,
            ))) => ShardsError::ShardPanicked {
                shard,
                message: panic_message(payload.as_ref()),
            },
            Err(error) => ShardsError::ShardFailed {
                shard,
                reason: error.to_string(),
            },
        };
        errors.push((shard, error));
    }
    errors
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Body of one shard's executor.
async fn run_shard<M, F, Fut>(
    setup: ShardSetup<M, F>,
    mut guard: ReadyGuard,
) -> Result<(), ShardsError>
where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ShardSetup {
        shard,
        nr_shards,
        cpu,
        tuning,
        addr,
        mesh,
        addresses,
        stop,
        serve,
    } = setup;
    let _stop_on_exit = StopOnExit(stop.clone());

    glommio::timer::sleep(Duration::from_millis(WARM_UP_SLEEP_MS)).await;

    let bound = bind_listener(addr).and_then(|listener| {
        let local_addr = listener.local_addr().map_err(|error| ShardsError::Bind {
            addr,
            source: error.into(),
        })?;
        Ok((listener, local_addr))
    });
    let (listener, local_addr) = match bound {
        Ok(bound) => bound,
        Err(error) => {
            // The starting thread returns this error from start().
            guard.report(StartReport::Failed { shard, error });
            return Ok(());
        }
    };
    guard.report(StartReport::Listening {
        shard,
        addr: local_addr,
    });

    // Blocking this executor's thread is fine here: nothing else runs on it yet, and the
    // starting thread answers (or hangs up) as soon as every shard has reported.
    let Ok(addresses) = addresses.recv() else {
        // Another shard failed to start; start() reports that failure.
        return Ok(());
    };

    let (senders, receivers) = mesh.join().await.map_err(|error| ShardsError::Mesh {
        shard,
        reason: error.to_string(),
    })?;
    // glommio orders mesh peers by executor id, and ids grow in spawn order, which is shard
    // order; check it rather than trust it.
    if senders.peer_id() != shard || senders.nr_consumers() != nr_shards {
        return Err(ShardsError::Mesh {
            shard,
            reason: format!(
                "mesh position {} of {} does not match shard {shard} of {nr_shards}",
                senders.peer_id(),
                senders.nr_consumers()
            ),
        });
    }

    let context = ShardContext {
        shard,
        nr_shards,
        cpu,
        tuning,
        listener,
        local_addr,
        addresses,
        mesh: Mesh { senders, receivers },
        stop: stop.signal(),
    };
    serve(context).await;
    Ok(())
}

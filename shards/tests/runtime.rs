//! The shard runtime with real glommio executors: listeners, mesh, stop, start errors.
//! Every test runs two unpinned shards (or one) so it passes on any machine.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use markab_shards::{
    configure_stream, ListenSpec, ShardContext, ShardPlan, ShardRuntime, ShardSlot, ShardsError,
    Tuning,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A plan of `count` unpinned shards; cpus are only labels when `pin` is false.
fn plan(count: usize) -> ShardPlan {
    ShardPlan {
        slots: (0..count)
            .map(|shard| ShardSlot {
                shard,
                cpu: shard,
                core: shard,
                numa_node: 0,
            })
            .collect(),
    }
}

/// Tunings with little io memory, so that many test executors fit in memlock.
fn tunings(count: usize) -> Vec<Tuning> {
    let tuning = Tuning {
        io_memory_bytes: 1 << 20,
        ..Tuning::default()
    };
    vec![tuning; count]
}

fn any_port() -> ListenSpec {
    ListenSpec {
        host: LOCALHOST,
        port_base: 0,
    }
}

/// Accepts connections until stop; each connection gets back every byte it sends, prefixed once
/// by the shard number.
async fn echo(context: ShardContext<()>) {
    loop {
        let accepted =
            futures_lite::future::or(async { Some(context.listener.accept().await) }, async {
                context.stop.stopped().await;
                None
            })
            .await;
        let Some(Ok(mut stream)) = accepted else {
            break;
        };
        configure_stream(&stream).expect("nodelay");
        let shard = context.shard as u8;
        glommio::spawn_local(async move {
            if stream.write_all(&[shard]).await.is_err() {
                return;
            }
            let mut buffer = [0u8; 256];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        if stream.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
        .detach();
    }
}

fn exchange(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(payload).expect("write");
    let mut reply = vec![0u8; payload.len() + 1];
    stream.read_exact(&mut reply).expect("read");
    reply
}

// Proves each shard listens on its own OS-assigned port and serves connections on that shard:
// bytes sent to shard i's address come back prefixed with i.
#[test]
fn each_shard_serves_its_own_listener() {
    let runtime =
        ShardRuntime::start(&plan(2), tunings(2), any_port(), false, echo).expect("start");
    let addresses = runtime.addresses();
    assert_eq!(addresses.len(), 2);
    assert_ne!(addresses[0].port(), addresses[1].port());
    for (shard, addr) in addresses.iter().enumerate() {
        assert_eq!(addr.ip(), LOCALHOST);
        // Connect late enough that the shard's accept is already waiting in io_uring.
        std::thread::sleep(Duration::from_millis(100));
        let payload = format!("hello shard {shard}");
        let reply = exchange(*addr, payload.as_bytes());
        assert_eq!(reply[0] as usize, shard);
        assert_eq!(&reply[1..], payload.as_bytes());
    }
    runtime.stop();
    runtime.join().expect("join");
}

// Proves the mesh connects shards in shard order and every shard knows every address: shard 0
// sends 41 to shard 1, which answers 42.
#[test]
fn mesh_carries_a_request_and_a_reply() {
    let answer = Arc::new(AtomicU64::new(0));
    let seen_addresses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let serve = {
        let answer = Arc::clone(&answer);
        let seen_addresses = Arc::clone(&seen_addresses);
        move |context: ShardContext<u64>| {
            let answer = Arc::clone(&answer);
            let seen_addresses = Arc::clone(&seen_addresses);
            async move {
                assert_eq!(context.mesh.shard(), context.shard);
                assert_eq!(context.mesh.nr_shards(), 2);
                assert_eq!(context.addresses[context.shard], context.local_addr);
                seen_addresses
                    .lock()
                    .expect("lock")
                    .push(context.addresses.clone());
                if context.shard == 0 {
                    context.mesh.senders.send_to(1, 41).await.expect("send");
                    let reply = context.mesh.receivers.recv_from(1).await.expect("recv");
                    answer.store(reply.expect("reply"), Ordering::SeqCst);
                } else {
                    let request = context.mesh.receivers.recv_from(0).await.expect("recv");
                    let request = request.expect("request");
                    context
                        .mesh
                        .senders
                        .send_to(0, request + 1)
                        .await
                        .expect("send");
                    // Stay up until shard 0 has read the reply and stopped the node.
                    context.stop.stopped().await;
                }
            }
        }
    };
    let runtime =
        ShardRuntime::start(&plan(2), tunings(2), any_port(), false, serve).expect("start");
    let addresses = runtime.addresses();
    // Shard 0 returning stops the node, so join returns without an explicit stop.
    runtime.join().expect("join");
    assert_eq!(answer.load(Ordering::SeqCst), 42);
    let seen = seen_addresses.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|list| *list == addresses));
}

// Proves stop() from another thread makes join() return soon after, through StopSignal.
#[test]
fn stop_from_another_thread_ends_join() {
    let serve = |context: ShardContext<()>| async move { context.stop.stopped().await };
    let runtime =
        ShardRuntime::start(&plan(2), tunings(2), any_port(), false, serve).expect("start");
    let handle = runtime.stop_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        handle.stop();
        Instant::now()
    });
    runtime.join().expect("join");
    let stopped_at = stopper.join().expect("stopper");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(2),
        "join took too long after stop"
    );
}

// Proves a port already in use makes start() fail with an error naming the address.
#[test]
fn bind_conflict_fails_start_naming_the_address() {
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let listen = ListenSpec {
        host: LOCALHOST,
        port_base: port,
    };
    let serve = |context: ShardContext<()>| async move { context.stop.stopped().await };
    let error =
        ShardRuntime::start(&plan(1), tunings(1), listen, false, serve).expect_err("in use");
    assert!(matches!(error, ShardsError::Bind { .. }), "{error}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}

// Proves a listen_port override in a shard's tuning replaces port_base + shard.
#[test]
fn listen_port_override_is_used() {
    let free = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let mut tunings = tunings(2);
    tunings[1].listen_port = Some(port);
    let serve = |context: ShardContext<()>| async move { context.stop.stopped().await };
    let runtime = ShardRuntime::start(&plan(2), tunings, any_port(), false, serve).expect("start");
    assert_eq!(runtime.addresses()[1].port(), port);
    runtime.stop();
    runtime.join().expect("join");
}

// Proves a panic in one shard stops the others and comes back from join() naming the shard.
#[test]
fn panic_in_a_shard_is_reported_by_join() {
    let serve = |context: ShardContext<()>| async move {
        if context.shard == 1 {
            panic!("shard one gives up");
        }
        context.stop.stopped().await;
    };
    let runtime =
        ShardRuntime::start(&plan(2), tunings(2), any_port(), false, serve).expect("start");
    let error = runtime.join().expect_err("panic");
    match error {
        ShardsError::ShardPanicked { shard, message } => {
            assert_eq!(shard, 1);
            assert_eq!(message, "shard one gives up");
        }
        other => panic!("unexpected error: {other}"),
    }
}

// Proves start() refuses a tuning list that does not match the plan, and invalid tunings.
#[test]
fn start_checks_its_inputs() {
    let serve = |context: ShardContext<()>| async move { context.stop.stopped().await };
    let error =
        ShardRuntime::start(&plan(2), tunings(1), any_port(), false, serve).expect_err("count");
    assert!(matches!(
        error,
        ShardsError::TuningCount {
            tunings: 1,
            shards: 2
        }
    ));
    let mut bad = tunings(1);
    bad[0].ring_depth = 0;
    let error = ShardRuntime::start(&plan(1), bad, any_port(), false, serve).expect_err("ring");
    assert!(error.to_string().contains("ring_depth = 0"), "{error}");
    let listen = ListenSpec {
        host: LOCALHOST,
        port_base: 65_535,
    };
    let error = ShardRuntime::start(&plan(2), tunings(2), listen, false, serve).expect_err("port");
    assert!(
        matches!(error, ShardsError::PortOverflow { shard: 1, .. }),
        "{error}"
    );
}

//! Crash safety with real processes: a node under a bounded write load from
//! many concurrent client tasks is SIGKILLed at seeded random moments, then
//! restarted on the same data directory, several times. After every restart
//! each acknowledged write must be readable with its value (writes in flight
//! at the kill may be present or absent), and every counter must be at least
//! its last acknowledged incr result and at most the number of incrs tried.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab::client::{Client, ClientOptions};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 4;
const WRITERS: usize = 24;
/// Most writes one writer makes in one round (bounds the load).
const WRITES_PER_WRITER_MAX: usize = 3_000;

#[derive(Default)]
struct Acked {
    /// key → value of every acknowledged set.
    sets: HashMap<String, String>,
    /// counter hash key → (highest acknowledged incr result, incrs tried).
    counters: HashMap<String, (i64, i64)>,
}

// Every acknowledged write survives SIGKILL at random points, four times over.
#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = std::env::var("MARKAB_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(20261121);
    eprintln!("crash test seed {seed} (replay with MARKAB_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, 8)]);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let runtime = common::runtime();
    for round in 0..ROUNDS {
        let node = common::Node::start(&config);
        let address = node.address();
        // Everything acknowledged in earlier rounds is still there.
        verify(&runtime, &address, &acked);
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        let load = {
            let acked = acked.clone();
            let address = address.clone();
            runtime.spawn(async move { write_load(round, &address, acked).await })
        };
        std::thread::sleep(kill_after);
        node.kill();
        let attempts = runtime.block_on(load).unwrap();
        eprintln!("round {round}: killed after {kill_after:?} with {attempts} writes attempted");
    }
    let node = common::Node::start(&config);
    verify(&runtime, &node.address(), &acked);
    let acked = acked.lock().unwrap();
    assert!(
        acked.sets.len() > 100,
        "the load acknowledged too few writes to prove anything: {}",
        acked.sets.len()
    );
    assert!(node.terminate().success());
}

/// Writes until the node dies (the first error) or the bound is reached;
/// returns how many writes were attempted.
async fn write_load(round: usize, address: &str, acked: Arc<Mutex<Acked>>) -> usize {
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let client = Client::connect(address, options).await.unwrap();
    let table = client.open_table("temp").await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let table = table.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let counter = format!("counter-{writer}");
            for seq in 0..WRITES_PER_WRITER_MAX {
                if seq % 10 == 9 {
                    acked
                        .lock()
                        .unwrap()
                        .counters
                        .entry(counter.clone())
                        .or_default()
                        .1 += 1;
                    match table.incr(counter.as_bytes(), b"c", 1, 0).await {
                        Ok(value) => {
                            let mut acked = acked.lock().unwrap();
                            let entry = acked.counters.get_mut(&counter).unwrap();
                            entry.0 = entry.0.max(value);
                        }
                        Err(_) => return seq,
                    }
                    continue;
                }
                let key = format!("r{round}-w{writer}-{seq}");
                let value = format!("value-{key}-{}", "x".repeat(seq % 200));
                match table.set(key.as_bytes(), b"s", value.as_bytes(), 0).await {
                    Ok(()) => {
                        acked.lock().unwrap().sets.insert(key, value);
                    }
                    Err(_) => return seq,
                }
            }
            WRITES_PER_WRITER_MAX
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await.unwrap();
    }
    attempts
}

fn verify(runtime: &tokio::runtime::Runtime, address: &str, acked: &Arc<Mutex<Acked>>) {
    let (sets, counters) = {
        let acked = acked.lock().unwrap();
        (acked.sets.clone(), acked.counters.clone())
    };
    runtime.block_on(async move {
        let client = Client::connect(address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        for (key, value) in &sets {
            let got = table.get(key.as_bytes(), b"s").await.unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "acknowledged write {key} lost or changed"
            );
        }
        for (counter, (acked_max, tried)) in &counters {
            let got = table.get(counter.as_bytes(), b"c").await.unwrap();
            let value: i64 = got
                .map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap())
                .unwrap_or(0);
            assert!(
                value >= *acked_max,
                "{counter}: {value} < acknowledged {acked_max}"
            );
            assert!(value <= *tried, "{counter}: {value} > {tried} incrs tried");
        }
    });
}

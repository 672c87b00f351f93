//! A bounded write load through the client library: writers of distinct
//! keys, one write at a time each, recording what was acknowledged and
//! every error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab::client::Table;

/// What the load saw.
#[derive(Default)]
pub struct Load {
    /// Acknowledged writes: hash key → value (sort key `s`).
    pub acked: Mutex<BTreeMap<String, String>>,
    pub errors: Mutex<Vec<String>>,
    pub stop: AtomicBool,
    issued: AtomicUsize,
}

/// `writers` writers of keys `<prefix><writer>-<n>`, until stopped or
/// `writes_max` writes in all.
pub fn start_load(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    writers: usize,
    writes_max: usize,
    prefix: &str,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let handles = (0..writers)
        .map(|writer| {
            let (table, load, prefix) = (table.clone(), load.clone(), prefix.to_owned());
            runtime.spawn(async move {
                let mut sequence = 0u64;
                while !load.stop.load(Ordering::Relaxed)
                    && load.issued.fetch_add(1, Ordering::Relaxed) < writes_max
                {
                    sequence += 1;
                    let hash_key = format!("{prefix}{writer}-{sequence}");
                    let value = format!("value-{writer}-{sequence}");
                    match table
                        .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
                        .await
                    {
                        Ok(()) => {
                            load.acked.lock().unwrap().insert(hash_key, value);
                        }
                        Err(error) => {
                            load.errors
                                .lock()
                                .unwrap()
                                .push(format!("{hash_key}: {error}"));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    (load, handles)
}

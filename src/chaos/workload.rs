//! The clients: concurrent tasks that issue register, counter and set
//! operations through the Rust client library and record every one with its
//! invocation time, completion time and outcome.
//!
//! Keys: registers `reg-<i>` (get / set / check_and_set, every written
//! value unique), counters `ctr-<i>` (incr by 1), sets `set-<i>` (each add
//! a multi_set of 1–3 new sort keys, all or nothing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bench::workload::Random;
use crate::client::{ClientError, Table};
use crate::wire::{CheckAndSetRequest, CheckType, ErrorCode, MultiGetRequest, SortKeyValue};

pub const REGISTERS: u64 = 12;
pub const COUNTERS: u64 = 4;
pub const SETS: u64 = 4;
/// Sort key of register and counter records.
pub const SORT_KEY: &[u8] = b"v";

/// What an operation asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Input {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expect: Option<String>,
        new: String,
    },
    Incr {
        key: String,
    },
    Add {
        set: String,
        elements: Vec<String>,
    },
    /// The final read of a set after every fault healed.
    ReadSet {
        set: String,
    },
}

impl Input {
    /// The record (or set) it addresses.
    pub fn key(&self) -> &str {
        match self {
            Input::Get { key }
            | Input::Set { key, .. }
            | Input::Cas { key, .. }
            | Input::Incr { key } => key,
            Input::Add { set, .. } | Input::ReadSet { set } => set,
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, Input::Get { .. } | Input::ReadSet { .. })
    }
}

/// What it returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Output {
    Written,
    Value { value: Option<String> },
    Cas { succeeded: bool },
    Counter { value: i64 },
    Elements { elements: Vec<String> },
}

/// How it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        output: Output,
    },
    /// Definitely not applied (refused before it took effect).
    Failed {
        error: String,
    },
    /// May or may not have been applied (a timeout, a lost connection,
    /// `UNKNOWN_OUTCOME`).
    Unknown {
        error: String,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

/// One recorded operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    pub client: u64,
    /// Nanoseconds after the workload started.
    pub invoke_ns: u64,
    /// When the call returned (also for unknown outcomes).
    pub complete_ns: u64,
    pub input: Input,
    pub outcome: Outcome,
}

/// The shared history.
pub type History = Arc<Mutex<Vec<Op>>>;

/// Whether a failed write may still have taken effect.
fn is_ambiguous(error: &ClientError) -> bool {
    match error {
        ClientError::Server(error) => matches!(
            error.code,
            ErrorCode::UnknownOutcome
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::StorageError
                | ErrorCode::Internal
        ),
        ClientError::Timeout { .. } | ClientError::Io(_) | ClientError::Protocol(_) => true,
        ClientError::Connect { .. }
        | ClientError::UnknownTable(_)
        | ClientError::TableReplaced { .. }
        | ClientError::NeedsMeta { .. }
        | ClientError::Closed => false,
    }
}

fn outcome_of<T>(result: Result<T, ClientError>, output: impl FnOnce(T) -> Output) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok {
            output: output(value),
        },
        Err(error) if is_ambiguous(&error) => Outcome::Unknown {
            error: error.to_string(),
        },
        Err(error) => Outcome::Failed {
            error: error.to_string(),
        },
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Performs `input` on `table`.
pub async fn perform(table: &Table, input: &Input) -> Outcome {
    match input {
        Input::Get { key } => outcome_of(table.get(key.as_bytes(), SORT_KEY).await, |value| {
            Output::Value {
                value: value.map(text),
            }
        }),
        Input::Set { key, value } => outcome_of(
            table
                .set(key.as_bytes(), SORT_KEY, value.as_bytes(), 0)
                .await,
            |()| Output::Written,
        ),
        Input::Cas { key, expect, new } => {
            let (check_type, operand) = match expect {
                Some(value) => (CheckType::ValueBytesEqual, value.as_bytes().to_vec()),
                None => (CheckType::ValueNotExist, Vec::new()),
            };
            let request = CheckAndSetRequest {
                hash_key: key.as_bytes().to_vec(),
                check_sort_key: SORT_KEY.to_vec(),
                check_type,
                check_operand: operand,
                set_sort_key: SORT_KEY.to_vec(),
                set_value: new.as_bytes().to_vec(),
                set_ttl_seconds: 0,
                return_check_value: false,
            };
            outcome_of(table.check_and_set(request).await, |result| Output::Cas {
                succeeded: result.set_succeeded,
            })
        }
        Input::Incr { key } => {
            outcome_of(table.incr(key.as_bytes(), SORT_KEY, 1, 0).await, |value| {
                Output::Counter { value }
            })
        }
        Input::Add { set, elements } => {
            let kvs = elements
                .iter()
                .map(|element| SortKeyValue {
                    sort_key: element.as_bytes().to_vec(),
                    value: b"1".to_vec(),
                })
                .collect();
            outcome_of(table.multi_set(set.as_bytes(), kvs, 0).await, |()| {
                Output::Written
            })
        }
        Input::ReadSet { set } => outcome_of(read_set(table, set).await, |elements| {
            Output::Elements { elements }
        }),
    }
}

/// Every sort key of hash key `set`, page by page.
async fn read_set(table: &Table, set: &str) -> Result<Vec<String>, ClientError> {
    let mut elements = Vec::new();
    let mut start: Vec<u8> = Vec::new();
    let mut first = true;
    // Bounded: a set holds at most what the round added.
    for _ in 0..100_000 {
        let mut request = MultiGetRequest::range(set.as_bytes().to_vec());
        request.no_value = true;
        request.start_sort_key = start.clone();
        request.start_inclusive = first;
        let page = table.multi_get(request).await?;
        for kv in &page.kvs {
            elements.push(String::from_utf8_lossy(&kv.sort_key).into_owned());
        }
        match page.kvs.last() {
            Some(last) if page.incomplete => {
                start = last.sort_key.clone();
                first = false;
            }
            _ => return Ok(elements),
        }
    }
    Err(ClientError::Protocol(format!("set {set} did not end")))
}

/// The clients' settings.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub clients: usize,
    /// Operations per second over all clients (a target, not a promise).
    pub rate: u64,
    pub seed: u64,
}

/// Runs the clients until `stop`; every operation lands in `history`.
pub async fn run_clients(
    table: Table,
    options: WorkloadOptions,
    origin: Instant,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let interval = Duration::from_micros(1_000_000 * options.clients as u64 / options.rate.max(1));
    let mut tasks = Vec::new();
    for client in 0..options.clients as u64 {
        let table = table.clone();
        let history = history.clone();
        let stop = stop.clone();
        let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(client);
        tasks.push(tokio::spawn(async move {
            let mut random = Random::new(seed);
            let mut sequence = 0u64;
            // The last value this client saw per register, for CAS.
            let mut seen: Vec<Option<String>> = vec![None; REGISTERS as usize];
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                let input = draw(&mut random, client, sequence, &seen);
                let invoke_ns = origin.elapsed().as_nanos() as u64;
                let outcome = perform(&table, &input).await;
                let complete_ns = origin.elapsed().as_nanos() as u64;
                if let (
                    Input::Get { key },
                    Outcome::Ok {
                        output: Output::Value { value },
                    },
                ) = (&input, &outcome)
                {
                    if let Some(index) = register_index(key) {
                        seen[index] = value.clone();
                    }
                }
                history.lock().expect("history lock").push(Op {
                    client,
                    invoke_ns,
                    complete_ns,
                    input,
                    outcome,
                });
                tokio::time::sleep(interval).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn register_index(key: &str) -> Option<usize> {
    key.strip_prefix("reg-")?.parse().ok()
}

/// Draws the next operation of `client`.
fn draw(random: &mut Random, client: u64, sequence: u64, seen: &[Option<String>]) -> Input {
    let unique = format!("c{client}-{sequence}");
    let roll = random.below(100);
    if roll < 55 {
        let index = random.below(REGISTERS) as usize;
        let key = format!("reg-{index}");
        match random.below(10) {
            0..=3 => Input::Get { key },
            4..=7 => Input::Set { key, value: unique },
            _ => Input::Cas {
                key,
                expect: seen[index].clone(),
                new: unique,
            },
        }
    } else if roll < 75 {
        Input::Incr {
            key: format!("ctr-{}", random.below(COUNTERS)),
        }
    } else {
        let count = 1 + random.below(3);
        Input::Add {
            set: format!("set-{}", random.below(SETS)),
            elements: (0..count)
                .map(|index| format!("{unique}-{index}"))
                .collect(),
        }
    }
}

/// The final reads after every fault healed: each register, counter and
/// set once, retried until it succeeds or `deadline` passes. Every try is
/// recorded, so the checkers see them in the history.
pub async fn final_reads(
    table: &Table,
    origin: Instant,
    history: &History,
    deadline: Instant,
) -> bool {
    let client = u64::MAX;
    let mut inputs: Vec<Input> = (0..REGISTERS)
        .map(|index| Input::Get {
            key: format!("reg-{index}"),
        })
        .collect();
    inputs.extend((0..COUNTERS).map(|index| Input::Get {
        key: format!("ctr-{index}"),
    }));
    inputs.extend((0..SETS).map(|index| Input::ReadSet {
        set: format!("set-{index}"),
    }));
    let mut complete = true;
    for input in inputs {
        loop {
            let invoke_ns = origin.elapsed().as_nanos() as u64;
            let outcome = perform(table, &input).await;
            let complete_ns = origin.elapsed().as_nanos() as u64;
            let ok = outcome.is_ok();
            history.lock().expect("history lock").push(Op {
                client,
                invoke_ns,
                complete_ns,
                input: input.clone(),
                outcome,
            });
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                complete = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    complete
}

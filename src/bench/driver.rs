//! The load driver: closed loop (connections × requests in flight, as fast
//! as the target answers) or open loop (a target rate, each operation with
//! an intended send time), recording per operation type and overall:
//!
//! - **service time**: from the moment the request is sent to its reply;
//! - **response time**: from the operation's *intended* send time to its
//!   reply. In open loop it includes the time an operation waited because
//!   every in-flight slot was busy, so a slow target cannot hide its stalls
//!   (no coordinated omission). In closed loop there is no schedule and
//!   response time equals service time.
//!
//! Both go into `hdrhistogram::Histogram<u64>` in microseconds (1 µs to
//! 60 s, 3 significant digits, larger values saturate), with a count and
//! errors by code, plus a one-second time series of the overall response
//! time.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::target::{Target, TargetError};
use super::workload::{
    field_name, key_name, InsertSequence, Operation, OperationGenerator, PlannedOperation,
    Workload, WorkloadError, OPERATIONS_MAX,
};

/// Most connections (each keeps its own histograms).
pub const CONNECTIONS_MAX: usize = 256;
/// Most requests in flight per connection.
pub const IN_FLIGHT_MAX: usize = 256;
/// Highest open-loop rate, operations per second.
pub const TARGET_RATE_MAX: f64 = 10_000_000.0;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Largest latency a histogram tells apart; larger values are recorded as
/// this value.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant digits of every histogram (as YCSB).
pub const HISTOGRAM_DIGITS: u8 = 3;
/// Most interval samples kept (one per second of [`DURATION_MAX`]).
pub const INTERVALS_MAX: usize = 24 * 3600;
/// Runs shorter than this print no progress line.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(2);

/// Why a phase could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid driver setting: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
}

/// Load inserts the records; run issues the workload's mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Load,
    Run,
}

impl Phase {
    /// `load` or `run`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Run => "run",
        }
    }
}

/// How operations are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoopMode {
    /// Every in-flight slot sends its next operation as soon as the last
    /// one is answered (finds peak throughput).
    Closed,
    /// Operation `i` is intended to start at `start + i / rate_ops_s`.
    Open { rate_ops_s: f64 },
}

impl LoopMode {
    /// `closed` or `open`.
    pub fn name(self) -> &'static str {
        match self {
            LoopMode::Closed => "closed",
            LoopMode::Open { .. } => "open",
        }
    }
}

/// One phase's settings.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub phase: Phase,
    pub mode: LoopMode,
    /// Requests in flight per target (connection).
    pub in_flight: usize,
    /// Operations to issue (load: records to insert, from key number 0).
    pub operations: u64,
    /// Stop issuing after this long (in-flight requests still finish).
    pub duration: Option<Duration>,
    /// Seeds every worker's generator.
    pub seed: u64,
    /// Print a progress line on stderr once a second (after
    /// [`PROGRESS_AFTER`]).
    pub progress: bool,
}

impl DriverConfig {
    fn validate(&self, targets: usize) -> Result<(), DriverError> {
        let invalid = |message: String| Err(DriverError::InvalidConfig(message));
        if targets == 0 || targets > CONNECTIONS_MAX {
            return invalid(format!(
                "connections {targets} not in 1..={CONNECTIONS_MAX}"
            ));
        }
        if self.in_flight == 0 || self.in_flight > IN_FLIGHT_MAX {
            return invalid(format!(
                "in-flight {} not in 1..={IN_FLIGHT_MAX}",
                self.in_flight
            ));
        }
        if self.operations > OPERATIONS_MAX {
            return invalid(format!(
                "operations {} over {OPERATIONS_MAX}",
                self.operations
            ));
        }
        if let LoopMode::Open { rate_ops_s } = self.mode {
            if !(rate_ops_s > 0.0 && rate_ops_s <= TARGET_RATE_MAX) {
                return invalid(format!(
                    "target rate {rate_ops_s} not in (0, {TARGET_RATE_MAX}]"
                ));
            }
        }
        if let Some(duration) = self.duration {
            if duration.is_zero() || duration > DURATION_MAX {
                return invalid(format!(
                    "duration {duration:?} not in (0, {DURATION_MAX:?}]"
                ));
            }
        }
        Ok(())
    }
}

/// A latency histogram in µs, 1 µs..[`LATENCY_US_MAX`], 3 digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low ≥ 1,
    // high ≥ 2 × low, digits ≤ 5); failure would be a programming error.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, HISTOGRAM_DIGITS)
        .expect("constant histogram bounds are valid")
}

fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Counts and latencies of one operation type (or overall).
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Operations completed, successful or not.
    pub count: u64,
    /// Failed operations by error code.
    pub errors: BTreeMap<String, u64>,
    /// Send → reply, µs.
    pub service_us: Histogram<u64>,
    /// Intended send → reply, µs (equal to service time in closed loop).
    pub response_us: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> OpStats {
        OpStats::new()
    }
}

impl OpStats {
    /// Empty statistics.
    pub fn new() -> OpStats {
        OpStats {
            count: 0,
            errors: BTreeMap::new(),
            service_us: latency_histogram(),
            response_us: latency_histogram(),
        }
    }

    /// Records one completed operation.
    pub fn record(&mut self, service: Duration, response: Duration, error: Option<&str>) {
        self.count += 1;
        self.service_us.saturating_record(duration_us(service));
        self.response_us.saturating_record(duration_us(response));
        if let Some(code) = error {
            *self.errors.entry(code.to_string()).or_insert(0) += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &OpStats) {
        self.count += other.count;
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_insert(0) += count;
        }
        // Same bounds on both sides, so adding cannot fail; saturate anyway.
        if self.service_us.add(&other.service_us).is_err()
            || self.response_us.add(&other.response_us).is_err()
        {
            tracing::warn!("histogram merge out of range");
        }
    }

    /// Failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One second of the run: overall response times of the operations that
/// completed in it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IntervalSample {
    /// Seconds since the phase started, at the end of this interval.
    pub second: u64,
    pub count: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub response_us_mean: f64,
    pub response_us_p50: u64,
    pub response_us_p99: u64,
    pub response_us_max: u64,
}

/// What one phase measured.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    pub phase: Phase,
    pub mode: LoopMode,
    /// Per operation type, indexed as [`Operation::ALL`].
    pub operations: [OpStats; 5],
    pub overall: OpStats,
    /// From the phase's start to its last reply.
    pub runtime: Duration,
    pub intervals: Vec<IntervalSample>,
}

impl PhaseResult {
    /// Operations per second over the whole phase.
    pub fn throughput_ops_s(&self) -> f64 {
        let seconds = self.runtime.as_secs_f64();
        if seconds > 0.0 {
            self.overall.count as f64 / seconds
        } else {
            0.0
        }
    }

    /// The statistics of `operation`.
    pub fn of(&self, operation: Operation) -> &OpStats {
        &self.operations[operation.index()]
    }
}

/// One connection's statistics, shared by its in-flight workers and read
/// by the interval reporter.
struct ConnectionStats {
    operations: [OpStats; 5],
    interval: OpStats,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fields_with_values(
    generator: &mut OperationGenerator,
    workload: &Workload,
    only: Option<u32>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let indexes: Vec<u32> = match only {
        Some(field) => vec![field],
        None => (0..workload.field_count).collect(),
    };
    indexes
        .into_iter()
        .map(|index| {
            let mut value = vec![0u8; workload.field_bytes as usize];
            generator.random().fill_printable(&mut value);
            (field_name(index), value)
        })
        .collect()
}

async fn execute(
    target: &dyn Target,
    workload: &Workload,
    generator: &mut OperationGenerator,
    planned: PlannedOperation,
) -> (Duration, Result<(), TargetError>) {
    let key = key_name(planned.keynum);
    match planned.operation {
        Operation::Read => {
            let sent = Instant::now();
            let result = target.read(&key, &[]).await;
            (sent.elapsed(), result)
        }
        Operation::Update | Operation::ReadModifyWrite => {
            let fields = fields_with_values(generator, workload, Some(planned.field));
            let sent = Instant::now();
            let result = if planned.operation == Operation::Update {
                target.update(&key, &fields).await
            } else {
                target.read_modify_write(&key, &fields).await
            };
            (sent.elapsed(), result)
        }
        Operation::Insert => {
            let fields = fields_with_values(generator, workload, None);
            let sent = Instant::now();
            let result = target.insert(&key, &fields).await;
            (sent.elapsed(), result)
        }
        Operation::Scan => {
            let keys: Vec<Vec<u8>> = (0..planned.scan_length)
                .map(|offset| key_name(planned.keynum.saturating_add(offset)))
                .collect();
            let sent = Instant::now();
            let result = target.scan(&keys).await;
            (sent.elapsed(), result)
        }
    }
}

struct Shared {
    workload: Arc<Workload>,
    inserts: Arc<InsertSequence>,
    config: DriverConfig,
    next_index: AtomicU64,
    start: Instant,
    deadline: Option<Instant>,
}

async fn worker(
    shared: Arc<Shared>,
    target: Arc<dyn Target>,
    stats: Arc<Mutex<ConnectionStats>>,
    mut generator: OperationGenerator,
) -> Result<(), DriverError> {
    loop {
        let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
        if index >= shared.config.operations {
            return Ok(());
        }
        let intended = match shared.config.mode {
            LoopMode::Closed => None,
            LoopMode::Open { rate_ops_s } => {
                Some(shared.start + Duration::from_secs_f64(index as f64 / rate_ops_s))
            }
        };
        if let (Some(intended), Some(deadline)) = (intended, shared.deadline) {
            if intended >= deadline {
                return Ok(());
            }
        }
        if let Some(intended) = intended {
            tokio::time::sleep_until(intended).await;
        }
        if shared
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Ok(());
        }
        let planned = match shared.config.phase {
            Phase::Load => PlannedOperation {
                operation: Operation::Insert,
                keynum: index,
                scan_length: 1,
                field: 0,
            },
            Phase::Run => generator.next_operation(),
        };
        let begun = Instant::now();
        let (service, result) =
            execute(target.as_ref(), &shared.workload, &mut generator, planned).await;
        let done = Instant::now();
        if shared.config.phase == Phase::Run && planned.operation == Operation::Insert {
            shared.inserts.acknowledge(planned.keynum)?;
        }
        let response = done.saturating_duration_since(intended.unwrap_or(begun));
        // In closed loop there is no schedule: response time is service time.
        let response = if intended.is_some() {
            response.max(service)
        } else {
            service
        };
        let code = result.err().map(|error| error.code());
        let mut stats = lock(&stats);
        stats.operations[planned.operation.index()].record(service, response, code.as_deref());
        stats.interval.record(service, response, code.as_deref());
    }
}

fn take_interval(
    connections: &[Arc<Mutex<ConnectionStats>>],
    second: u64,
    elapsed: Duration,
) -> IntervalSample {
    let mut merged = OpStats::new();
    for stats in connections {
        let mut stats = lock(stats);
        merged.merge(&stats.interval);
        stats.interval.count = 0;
        stats.interval.errors.clear();
        stats.interval.service_us.reset();
        stats.interval.response_us.reset();
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let empty = merged.response_us.is_empty();
    IntervalSample {
        second,
        count: merged.count,
        errors: merged.error_count(),
        ops_per_s: merged.count as f64 / seconds,
        response_us_mean: if empty {
            0.0
        } else {
            merged.response_us.mean()
        },
        response_us_p50: merged.response_us.value_at_quantile(0.5),
        response_us_p99: merged.response_us.value_at_quantile(0.99),
        response_us_max: merged.response_us.max(),
    }
}

fn print_progress(phase: Phase, sample: &IntervalSample, done: u64, total: u64, terminal: bool) {
    let line = format!(
        "[{}] {:>5} s {:>12} / {} ops {:>10.0} ops/s  p99 {} us  errors {}",
        phase.name(),
        sample.second,
        done,
        total,
        sample.ops_per_s,
        sample.response_us_p99,
        sample.errors
    );
    let mut stderr = std::io::stderr().lock();
    let _ = if terminal {
        write!(stderr, "\r{line}")
    } else {
        writeln!(stderr, "{line}")
    };
    let _ = stderr.flush();
}

/// Runs one phase of `workload` over `targets` (one per connection, each
/// driven by `config.in_flight` concurrent workers).
///
/// ```no_run
/// # async fn example(targets: Vec<std::sync::Arc<dyn markab::bench::target::Target>>) -> Result<(), markab::bench::driver::DriverError> {
/// use std::sync::Arc;
/// use markab::bench::driver::{run_phase, DriverConfig, LoopMode, Phase};
/// use markab::bench::workload::{InsertSequence, Workload, WorkloadName};
///
/// let workload = Arc::new(Workload::core(WorkloadName::A, 1000, 10_000));
/// let inserts = Arc::new(InsertSequence::new(workload.record_count));
/// let config = DriverConfig {
///     phase: Phase::Run,
///     mode: LoopMode::Open { rate_ops_s: 5000.0 },
///     in_flight: 4,
///     operations: 10_000,
///     duration: None,
///     seed: 1,
///     progress: false,
/// };
/// let result = run_phase(&targets, workload, inserts, &config).await?;
/// println!("{:.0} ops/s", result.throughput_ops_s());
/// # Ok(())
/// # }
/// ```
pub async fn run_phase(
    targets: &[Arc<dyn Target>],
    workload: Arc<Workload>,
    inserts: Arc<InsertSequence>,
    config: &DriverConfig,
) -> Result<PhaseResult, DriverError> {
    config.validate(targets.len())?;
    workload.validate()?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        workload: workload.clone(),
        inserts: inserts.clone(),
        config: config.clone(),
        next_index: AtomicU64::new(0),
        start,
        deadline: config.duration.map(|duration| start + duration),
    });
    let connections: Vec<Arc<Mutex<ConnectionStats>>> = targets
        .iter()
        .map(|_| {
            Arc::new(Mutex::new(ConnectionStats {
                operations: Default::default(),
                interval: OpStats::new(),
            }))
        })
        .collect();
    let mut workers = tokio::task::JoinSet::new();
    for (connection, target) in targets.iter().enumerate() {
        for slot in 0..config.in_flight {
            let worker_index = (connection * config.in_flight + slot) as u64;
            let seed = config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(worker_index);
            let generator = OperationGenerator::new(workload.clone(), inserts.clone(), seed);
            workers.spawn(worker(
                shared.clone(),
                target.clone(),
                connections[connection].clone(),
                generator,
            ));
        }
    }
    let terminal = std::io::stderr().is_terminal();
    let mut intervals = Vec::new();
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_tick = start;
    let mut failure = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => {
                    failure.get_or_insert(error);
                    workers.abort_all();
                }
                Some(Err(join_error)) if join_error.is_cancelled() => {}
                Some(Err(join_error)) => {
                    failure.get_or_insert(DriverError::InvalidConfig(format!(
                        "worker failed: {join_error}"
                    )));
                    workers.abort_all();
                }
            },
            tick = ticker.tick() => {
                let sample = take_interval(&connections, intervals.len() as u64 + 1, tick - last_tick);
                last_tick = tick;
                if config.progress && tick - start >= PROGRESS_AFTER {
                    let done = shared.next_index.load(Ordering::Relaxed).min(config.operations);
                    print_progress(config.phase, &sample, done, config.operations, terminal);
                }
                if intervals.len() < INTERVALS_MAX {
                    intervals.push(sample);
                }
            }
        }
    }
    let runtime = start.elapsed();
    if let Some(error) = failure {
        return Err(error);
    }
    let tail = Instant::now() - last_tick;
    if !tail.is_zero() && intervals.len() < INTERVALS_MAX {
        let sample = take_interval(&connections, intervals.len() as u64 + 1, tail);
        if sample.count > 0 {
            intervals.push(sample);
        }
    }
    if config.progress && terminal && runtime >= PROGRESS_AFTER {
        eprintln!();
    }
    let mut operations: [OpStats; 5] = Default::default();
    let mut overall = OpStats::new();
    for stats in &connections {
        let stats = lock(stats);
        for (index, op_stats) in stats.operations.iter().enumerate() {
            operations[index].merge(op_stats);
            overall.merge(op_stats);
        }
    }
    Ok(PhaseResult {
        phase: config.phase,
        mode: config.mode,
        operations,
        overall,
        runtime,
        intervals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::WorkloadName;
    use futures::future::BoxFuture;
    use std::sync::atomic::AtomicU64;

    /// A fake store: every call sleeps `delay` and every `fail_every`-th
    /// call fails with NOT_FOUND (0 = never).
    struct FakeTarget {
        delay: Duration,
        fail_every: u64,
        calls: AtomicU64,
    }

    impl FakeTarget {
        fn shared(delay: Duration, fail_every: u64) -> Arc<dyn Target> {
            Arc::new(FakeTarget {
                delay,
                fail_every,
                calls: AtomicU64::new(0),
            })
        }

        fn call(&self) -> BoxFuture<'_, Result<(), TargetError>> {
            Box::pin(async move {
                let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                if self.fail_every > 0 && call.is_multiple_of(self.fail_every) {
                    return Err(TargetError::NotFound);
                }
                Ok(())
            })
        }
    }

    impl Target for FakeTarget {
        fn read<'a>(
            &'a self,
            _: &'a [u8],
            _: &'a [Vec<u8>],
        ) -> BoxFuture<'a, Result<(), TargetError>> {
            self.call()
        }
        fn update<'a>(
            &'a self,
            _: &'a [u8],
            _: &'a [(Vec<u8>, Vec<u8>)],
        ) -> BoxFuture<'a, Result<(), TargetError>> {
            self.call()
        }
        fn insert<'a>(
            &'a self,
            _: &'a [u8],
            _: &'a [(Vec<u8>, Vec<u8>)],
        ) -> BoxFuture<'a, Result<(), TargetError>> {
            self.call()
        }
        fn scan<'a>(&'a self, _: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), TargetError>> {
            self.call()
        }
    }

    fn config(phase: Phase, mode: LoopMode, in_flight: usize, operations: u64) -> DriverConfig {
        DriverConfig {
            phase,
            mode,
            in_flight,
            operations,
            duration: Some(Duration::from_secs(30)),
            seed: 1,
            progress: false,
        }
    }

    // Proves histograms report what was recorded: count, min, max, mean and
    // percentiles of known inputs (within 3 significant digits).
    #[test]
    fn histograms_report_recorded_values() {
        let mut stats = OpStats::new();
        for value in 1..=1000u64 {
            let latency = Duration::from_micros(value);
            stats.record(latency, latency * 2, None);
        }
        stats.record(
            Duration::from_secs(120),
            Duration::from_secs(120),
            Some("TIMEOUT"),
        );
        assert_eq!(stats.count, 1001);
        assert_eq!(stats.service_us.min(), 1);
        assert_eq!(stats.service_us.value_at_quantile(0.5), 501);
        assert_eq!(stats.service_us.value_at_quantile(0.9), 901);
        assert_eq!(stats.response_us.value_at_quantile(0.5), 1002);
        // 120 s saturates at the histogram's bound (within its precision).
        let max = stats.service_us.max();
        assert!((LATENCY_US_MAX..=LATENCY_US_MAX + LATENCY_US_MAX / 1000).contains(&max));
        assert_eq!(stats.errors.get("TIMEOUT"), Some(&1));
        let mut merged = OpStats::new();
        merged.merge(&stats);
        merged.merge(&stats);
        assert_eq!(merged.count, 2002);
        assert_eq!(merged.error_count(), 2);
        assert_eq!(merged.service_us.len(), 2002);
    }

    // Proves a closed-loop run issues exactly the requested operations with
    // the workload's mix, and counts errors by code.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_counts_operations_and_errors() {
        let workload = Arc::new(Workload::core(WorkloadName::A, 1000, 4000));
        let inserts = Arc::new(InsertSequence::new(1000));
        let targets = vec![FakeTarget::shared(Duration::ZERO, 10)];
        let result = run_phase(
            &targets,
            workload,
            inserts,
            &config(Phase::Run, LoopMode::Closed, 8, 4000),
        )
        .await
        .unwrap();
        assert_eq!(result.overall.count, 4000);
        assert_eq!(result.overall.errors.get("NOT_FOUND"), Some(&400));
        let reads = result.of(Operation::Read).count;
        let updates = result.of(Operation::Update).count;
        assert_eq!(reads + updates, 4000);
        assert!((1700..2300).contains(&reads), "reads {reads}");
        assert_eq!(
            result.overall.service_us.max(),
            result.overall.response_us.max()
        );
    }

    // Proves the load phase inserts exactly the record count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn load_phase_inserts_every_record() {
        let workload = Arc::new(Workload::core(WorkloadName::C, 500, 0));
        let inserts = Arc::new(InsertSequence::new(0));
        let targets = vec![FakeTarget::shared(Duration::ZERO, 0)];
        let result = run_phase(
            &targets,
            workload,
            inserts,
            &config(Phase::Load, LoopMode::Closed, 8, 500),
        )
        .await
        .unwrap();
        assert_eq!(result.of(Operation::Insert).count, 500);
        assert_eq!(result.overall.error_count(), 0);
    }

    // Proves open-loop response time is never below service time and
    // includes the schedule lag when the target is slower than the rate:
    // 20 ops at 200 ops/s against a 20 ms target with one slot finish
    // ~400 ms after they start, although the last was due at 95 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_response_time_includes_queueing() {
        let workload = Arc::new(Workload::core(WorkloadName::C, 100, 20));
        let inserts = Arc::new(InsertSequence::new(100));
        let targets = vec![FakeTarget::shared(Duration::from_millis(20), 0)];
        let result = run_phase(
            &targets,
            workload,
            inserts,
            &config(Phase::Run, LoopMode::Open { rate_ops_s: 200.0 }, 1, 20),
        )
        .await
        .unwrap();
        let overall = &result.overall;
        assert_eq!(overall.count, 20);
        assert!(overall.response_us.min() >= overall.service_us.min());
        assert!(overall.response_us.max() >= overall.service_us.max());
        assert!(overall.response_us.mean() > overall.service_us.mean() * 3.0);
        // Service time stays near 20 ms; the last response waited ~300 ms.
        assert!(
            overall.service_us.max() < 150_000,
            "{}",
            overall.service_us.max()
        );
        assert!(
            overall.response_us.max() >= 250_000,
            "{}",
            overall.response_us.max()
        );
        assert!(result.runtime >= Duration::from_millis(400));
    }

    // Proves an open loop under capacity keeps the schedule: the run takes
    // about operations / rate, and response time stays near service time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_paces_at_the_target_rate() {
        let workload = Arc::new(Workload::core(WorkloadName::C, 100, 100));
        let inserts = Arc::new(InsertSequence::new(100));
        let targets = vec![FakeTarget::shared(Duration::from_millis(1), 0)];
        let result = run_phase(
            &targets,
            workload,
            inserts,
            &config(Phase::Run, LoopMode::Open { rate_ops_s: 200.0 }, 4, 100),
        )
        .await
        .unwrap();
        assert_eq!(result.overall.count, 100);
        assert!(
            result.runtime >= Duration::from_millis(490),
            "{:?}",
            result.runtime
        );
        assert!(
            result.runtime < Duration::from_secs(3),
            "{:?}",
            result.runtime
        );
        assert!(result.overall.response_us.value_at_quantile(0.5) < 50_000);
    }

    // Proves a duration cap stops a run early and interval samples are kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duration_caps_the_run_and_intervals_are_sampled() {
        let workload = Arc::new(Workload::core(WorkloadName::C, 100, 1_000_000));
        let inserts = Arc::new(InsertSequence::new(100));
        let targets = vec![FakeTarget::shared(Duration::from_millis(1), 0)];
        let mut settings = config(Phase::Run, LoopMode::Closed, 2, 1_000_000);
        settings.duration = Some(Duration::from_millis(1500));
        let result = run_phase(&targets, workload, inserts, &settings)
            .await
            .unwrap();
        assert!(result.runtime < Duration::from_secs(3));
        assert!(result.overall.count < 1_000_000);
        assert!(!result.intervals.is_empty());
        let counted: u64 = result.intervals.iter().map(|sample| sample.count).sum();
        assert_eq!(counted, result.overall.count);
    }

    // Proves out-of-range settings are refused before anything runs.
    #[tokio::test]
    async fn invalid_settings_are_refused() {
        let workload = Arc::new(Workload::core(WorkloadName::C, 100, 10));
        let inserts = Arc::new(InsertSequence::new(100));
        let targets = vec![FakeTarget::shared(Duration::ZERO, 0)];
        for bad in [
            config(Phase::Run, LoopMode::Closed, 0, 10),
            config(Phase::Run, LoopMode::Open { rate_ops_s: 0.0 }, 1, 10),
            config(Phase::Run, LoopMode::Closed, 1, OPERATIONS_MAX + 1),
        ] {
            let result = run_phase(&targets, workload.clone(), inserts.clone(), &bad).await;
            assert!(matches!(result, Err(DriverError::InvalidConfig(_))));
        }
        assert!(run_phase(
            &[],
            workload,
            inserts,
            &config(Phase::Run, LoopMode::Closed, 1, 1)
        )
        .await
        .is_err());
    }
}

//! YCSB core workloads A–F and the Pegasus profile: operation mixes, key
//! choosers and record layout, written from YCSB's `CoreWorkload`,
//! `ZipfianGenerator`, `ScrambledZipfianGenerator`, `SkewedLatestGenerator`
//! and `Utils.fnvhash64` (see docs/bench.md).
//!
//! Everything random is drawn from [`Random`], a seeded SplitMix64, so a run
//! replays from its `--seed`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// YCSB's zipfian constant (θ).
pub const ZIPFIAN_CONSTANT: f64 = 0.99;
/// The item count YCSB's scrambled zipfian draws from before scrambling.
pub const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;
/// ζ(10¹⁰, 0.99), precomputed by YCSB (`ScrambledZipfianGenerator.ZETAN`).
pub const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;
/// Workload E's `maxscanlength`.
pub const SCAN_LENGTH_MAX_E: u64 = 100;
/// Most records a run may load (bounds the key space).
pub const RECORDS_MAX: u64 = 1_000_000_000;
/// Most operations one run may issue.
pub const OPERATIONS_MAX: u64 = 10_000_000_000;
/// Most fields per record.
pub const FIELDS_MAX: u32 = 1024;
/// Most bytes of one field.
pub const FIELD_BYTES_MAX: u32 = 1024 * 1024;
/// Most bytes of one record (all fields): below the client's default
/// 1 MiB request bound, with room for keys and framing.
pub const RECORD_BYTES_MAX: u64 = 900 * 1024;
/// Most inserts acknowledged out of order that the insert sequence keeps
/// (YCSB's `AcknowledgedCounterGenerator` window is 2²⁰).
pub const INSERTS_PENDING_MAX: usize = 1 << 20;

const FNV_OFFSET_BASIS_64: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME_64: u64 = 1_099_511_628_211;

/// Why a workload cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    #[error("unknown workload {0:?}: expected a, b, c, d, e, f or pegasus")]
    UnknownWorkload(String),
    #[error("{name} = {value} is out of range {min}..={max}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("a record of {fields} × {field_bytes} bytes exceeds {RECORD_BYTES_MAX} bytes")]
    RecordTooLarge { fields: u32, field_bytes: u32 },
    #[error("too many inserts acknowledged out of order (more than {INSERTS_PENDING_MAX})")]
    InsertWindowFull,
}

/// A seeded SplitMix64 generator (Steele, Lea, Flood 2014): fast, 64-bit
/// output, passes BigCrush; enough for a load generator.
#[derive(Clone, Debug)]
pub struct Random {
    state: u64,
}

impl Random {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Random {
        Random { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform double in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, bound)`; `bound` must be positive
    /// (Lemire's multiply-shift with rejection, unbiased).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0)");
        loop {
            let product = (self.next_u64() as u128) * (bound as u128);
            let low = product as u64;
            if low >= bound.wrapping_neg() % bound {
                return (product >> 64) as u64;
            }
        }
    }

    /// Fills `buffer` with printable ASCII (YCSB's values are random
    /// strings).
    pub fn fill_printable(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bits = self.next_u64().to_le_bytes();
            for (byte, bit) in chunk.iter_mut().zip(bits) {
                *byte = b' ' + (bit % 95);
            }
        }
    }
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 little-endian bytes of
/// `value`, then Java's `Math.abs` (which leaves `i64::MIN` as is).
pub fn fnv_hash64(value: u64) -> u64 {
    let mut hash = FNV_OFFSET_BASIS_64;
    let mut rest = value;
    for _ in 0..8 {
        hash ^= rest & 0xff;
        rest >>= 8;
        hash = hash.wrapping_mul(FNV_PRIME_64);
    }
    (hash as i64).wrapping_abs() as u64
}

/// YCSB's `buildKeyName` with `insertorder=hashed`, `zeropadding=1`:
/// `"user"` followed by the decimal FNV hash of the key number.
pub fn key_name(keynum: u64) -> Vec<u8> {
    format!("user{}", fnv_hash64(keynum)).into_bytes()
}

/// YCSB's field names: `field0`, `field1`, ...
pub fn field_name(index: u32) -> Vec<u8> {
    format!("field{index}").into_bytes()
}

/// ζ(n, θ) summed from item `from` (exclusive count) to `to`, added to
/// `sum` (YCSB's incremental `zeta(st, n, theta, initialsum)`).
fn zeta_from(from: u64, to: u64, theta: f64, sum: f64) -> f64 {
    let mut total = sum;
    for item in from..to {
        total += 1.0 / ((item + 1) as f64).powf(theta);
    }
    total
}

/// ζ(n, θ) = Σ_{i=1..n} 1/i^θ.
pub fn zeta(items: u64, theta: f64) -> f64 {
    zeta_from(0, items, theta, 0.0)
}

/// YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating
/// billion-record synthetic databases"): item 0 is the most popular,
/// P(i) = 1 / ((i+1)^θ ζ(n, θ)). The item count may grow (latest
/// distribution); ζ is then extended incrementally.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    zeta2theta: f64,
    eta: f64,
}

impl Zipfian {
    /// A zipfian over `items` (≥ 1) items with constant `theta`.
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let items = items.max(1);
        Zipfian::with_zetan(items, theta, zeta(items, theta))
    }

    /// A zipfian whose ζ(n, θ) is already known (YCSB precomputes it for
    /// 10¹⁰ items).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2theta = zeta(2, theta);
        let mut zipfian = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            zeta2theta,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta_for(items);
        zipfian
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / self.zetan)
    }

    /// ζ(n, θ) of the current item count.
    pub fn zetan(&self) -> f64 {
        self.zetan
    }

    /// Draws an item in `[0, items)`, first growing the item count to
    /// `items` if it is larger (YCSB's `nextLong(itemcount)`).
    pub fn next_of(&mut self, random: &mut Random, items: u64) -> u64 {
        let items = items.max(1);
        if items > self.items {
            self.zetan = zeta_from(self.items, items, self.theta, self.zetan);
            self.items = items;
            self.eta = self.eta_for(items);
        }
        let u = random.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let drawn = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        drawn.min(self.items - 1)
    }

    /// Draws an item in `[0, items)` of the current item count.
    pub fn next(&mut self, random: &mut Random) -> u64 {
        self.next_of(random, self.items)
    }
}

/// YCSB's `ScrambledZipfianGenerator` with θ = 0.99: a zipfian over 10¹⁰
/// items, each drawn rank FNV-hashed into `[0, items)`, so the popular
/// items are scattered over the key space. The hottest item is
/// `fnv_hash64(0) % items`.
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    items: u64,
    zipfian: Zipfian,
}

impl ScrambledZipfian {
    /// Over `[0, items)`, `items ≥ 1`.
    pub fn new(items: u64) -> ScrambledZipfian {
        ScrambledZipfian {
            items: items.max(1),
            zipfian: Zipfian::with_zetan(SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    /// The item the most popular rank lands on.
    pub fn hottest(&self) -> u64 {
        fnv_hash64(0) % self.items
    }

    /// Draws an item in `[0, items)`.
    pub fn next(&mut self, random: &mut Random) -> u64 {
        fnv_hash64(self.zipfian.next(random)) % self.items
    }
}

/// How keys are chosen for reads, updates, scans and read-modify-writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestDistribution {
    /// Scrambled zipfian, θ = 0.99, over the loaded records plus twice the
    /// expected inserts; keys not inserted yet are drawn again.
    Zipfian,
    /// YCSB's skewed latest: zipfian by recency over acknowledged inserts.
    Latest,
    /// Uniform over the loaded records.
    Uniform,
}

impl RequestDistribution {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            RequestDistribution::Zipfian => "zipfian",
            RequestDistribution::Latest => "latest",
            RequestDistribution::Uniform => "uniform",
        }
    }
}

/// One kind of YCSB operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: [Operation; 5] = [
        Operation::Read,
        Operation::Update,
        Operation::Insert,
        Operation::Scan,
        Operation::ReadModifyWrite,
    ];

    /// YCSB's series name (`READ`, `UPDATE`, `INSERT`, `SCAN`,
    /// `READ-MODIFY-WRITE`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Update => "UPDATE",
            Operation::Insert => "INSERT",
            Operation::Scan => "SCAN",
            Operation::ReadModifyWrite => "READ-MODIFY-WRITE",
        }
    }

    /// Index into [`Operation::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The proportions of each operation (they sum to 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperationMix {
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    pub read_modify_write: f64,
}

impl OperationMix {
    fn weights(&self) -> [f64; 5] {
        [
            self.read,
            self.update,
            self.insert,
            self.scan,
            self.read_modify_write,
        ]
    }

    /// The proportion of `operation`.
    pub fn proportion(&self, operation: Operation) -> f64 {
        self.weights()[operation.index()]
    }

    /// Draws an operation (YCSB's `DiscreteGenerator`).
    pub fn choose(&self, random: &mut Random) -> Operation {
        let weights = self.weights();
        let total: f64 = weights.iter().sum();
        let mut point = random.next_f64() * total;
        for (operation, weight) in Operation::ALL.iter().zip(weights) {
            if point < weight {
                return *operation;
            }
            point -= weight;
        }
        // Rounding left the point past the last bucket: the last operation
        // with a non-zero weight takes it.
        Operation::ALL
            .iter()
            .zip(weights)
            .rev()
            .find(|(_, weight)| *weight > 0.0)
            .map_or(Operation::Read, |(operation, _)| *operation)
    }
}

/// The named workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadName {
    A,
    B,
    C,
    D,
    E,
    F,
    /// Pegasus's YCSB profile: workload A's mix over one 500-byte field.
    Pegasus,
}

impl WorkloadName {
    /// Lower-case name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadName::A => "a",
            WorkloadName::B => "b",
            WorkloadName::C => "c",
            WorkloadName::D => "d",
            WorkloadName::E => "e",
            WorkloadName::F => "f",
            WorkloadName::Pegasus => "pegasus",
        }
    }

    /// Parses `a`..`f` or `pegasus` (case-insensitive).
    pub fn parse(text: &str) -> Result<WorkloadName, WorkloadError> {
        match text.to_ascii_lowercase().as_str() {
            "a" => Ok(WorkloadName::A),
            "b" => Ok(WorkloadName::B),
            "c" => Ok(WorkloadName::C),
            "d" => Ok(WorkloadName::D),
            "e" => Ok(WorkloadName::E),
            "f" => Ok(WorkloadName::F),
            "pegasus" => Ok(WorkloadName::Pegasus),
            _ => Err(WorkloadError::UnknownWorkload(text.to_string())),
        }
    }
}

/// A fully specified workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: WorkloadName,
    pub mix: OperationMix,
    pub distribution: RequestDistribution,
    /// Scan lengths are uniform in `1..=scan_length_max`.
    pub scan_length_max: u64,
    pub field_count: u32,
    pub field_bytes: u32,
    /// Records the load phase inserts (key numbers `0..record_count`).
    pub record_count: u64,
    /// Operations the run phase issues.
    pub operation_count: u64,
}

fn mix(read: f64, update: f64, insert: f64, scan: f64, read_modify_write: f64) -> OperationMix {
    OperationMix {
        read,
        update,
        insert,
        scan,
        read_modify_write,
    }
}

fn check_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), WorkloadError> {
    if value < min || value > max {
        return Err(WorkloadError::OutOfRange {
            name,
            value,
            min,
            max,
        });
    }
    Ok(())
}

impl Workload {
    /// Workload `name` as YCSB's `workloads/workload[a-f]` define it, with
    /// CoreWorkload's defaults of 10 fields × 100 bytes (Pegasus: 1 × 500).
    pub fn core(name: WorkloadName, record_count: u64, operation_count: u64) -> Workload {
        use RequestDistribution::{Latest, Zipfian};
        let (mix, distribution) = match name {
            WorkloadName::A | WorkloadName::Pegasus => (mix(0.5, 0.5, 0.0, 0.0, 0.0), Zipfian),
            WorkloadName::B => (mix(0.95, 0.05, 0.0, 0.0, 0.0), Zipfian),
            WorkloadName::C => (mix(1.0, 0.0, 0.0, 0.0, 0.0), Zipfian),
            WorkloadName::D => (mix(0.95, 0.0, 0.05, 0.0, 0.0), Latest),
            WorkloadName::E => (mix(0.0, 0.0, 0.05, 0.95, 0.0), Zipfian),
            WorkloadName::F => (mix(0.5, 0.0, 0.0, 0.0, 0.5), Zipfian),
        };
        let (field_count, field_bytes) = match name {
            WorkloadName::Pegasus => (1, 500),
            _ => (10, 100),
        };
        Workload {
            name,
            mix,
            distribution,
            scan_length_max: SCAN_LENGTH_MAX_E,
            field_count,
            field_bytes,
            record_count,
            operation_count,
        }
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        check_range("records", self.record_count, 1, RECORDS_MAX)?;
        check_range("operations", self.operation_count, 0, OPERATIONS_MAX)?;
        check_range("fields", self.field_count.into(), 1, FIELDS_MAX.into())?;
        check_range(
            "field_bytes",
            self.field_bytes.into(),
            1,
            FIELD_BYTES_MAX.into(),
        )?;
        check_range("scan_length_max", self.scan_length_max, 1, 1000)?;
        if u64::from(self.field_count) * u64::from(self.field_bytes) > RECORD_BYTES_MAX {
            return Err(WorkloadError::RecordTooLarge {
                fields: self.field_count,
                field_bytes: self.field_bytes,
            });
        }
        Ok(())
    }

    /// Bytes of one record's values.
    pub fn record_bytes(&self) -> u64 {
        u64::from(self.field_count) * u64::from(self.field_bytes)
    }

    /// YCSB's key space for the zipfian chooser: the records plus twice
    /// the inserts the run is expected to make.
    pub fn key_space(&self) -> u64 {
        let expected_inserts = (self.operation_count as f64 * self.mix.insert * 2.0) as u64;
        self.record_count.saturating_add(expected_inserts)
    }
}

/// The insert key sequence of a run (YCSB's
/// `AcknowledgedCounterGenerator`): inserts take increasing key numbers;
/// choosers only see key numbers below the first not yet acknowledged.
#[derive(Debug)]
pub struct InsertSequence {
    next: AtomicU64,
    acknowledged: Mutex<Acknowledged>,
    limit: AtomicU64,
}

#[derive(Debug)]
struct Acknowledged {
    /// Every key number below this one is acknowledged.
    limit: u64,
    /// Acknowledged key numbers above `limit`.
    pending: BTreeSet<u64>,
}

impl InsertSequence {
    /// Key numbers `0..first` exist already (the loaded records).
    pub fn new(first: u64) -> InsertSequence {
        InsertSequence {
            next: AtomicU64::new(first),
            acknowledged: Mutex::new(Acknowledged {
                limit: first,
                pending: BTreeSet::new(),
            }),
            limit: AtomicU64::new(first),
        }
    }

    /// The key number for the next insert.
    pub fn take(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks `keynum`'s insert complete (successful or not: YCSB
    /// acknowledges both, so the sequence never stalls).
    pub fn acknowledge(&self, keynum: u64) -> Result<(), WorkloadError> {
        let mut state = self
            .acknowledged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if keynum < state.limit {
            return Ok(());
        }
        if state.pending.len() >= INSERTS_PENDING_MAX {
            return Err(WorkloadError::InsertWindowFull);
        }
        state.pending.insert(keynum);
        while state.pending.first() == Some(&state.limit) {
            let limit = state.limit;
            state.pending.remove(&limit);
            state.limit += 1;
        }
        self.limit.store(state.limit, Ordering::Release);
        Ok(())
    }

    /// How many key numbers are visible to choosers: `0..count()` are all
    /// acknowledged.
    pub fn count(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }
}

/// A planned operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedOperation {
    pub operation: Operation,
    /// The record's key number (for a scan, the first record).
    pub keynum: u64,
    /// Records a scan covers (1 for other operations).
    pub scan_length: u64,
    /// The field an update or read-modify-write writes.
    pub field: u32,
}

#[derive(Clone, Debug)]
enum KeyChooser {
    Zipfian(ScrambledZipfian),
    Latest(Zipfian),
    Uniform { items: u64 },
}

/// Draws operations of one workload; one per worker, all sharing the run's
/// [`InsertSequence`].
#[derive(Clone, Debug)]
pub struct OperationGenerator {
    workload: Arc<Workload>,
    inserts: Arc<InsertSequence>,
    random: Random,
    chooser: KeyChooser,
}

/// Most redraws of a zipfian key past the inserted range before falling
/// back to a uniform pick among the inserted keys.
const REDRAWS_MAX: u32 = 1000;

impl OperationGenerator {
    /// A generator for `workload` seeded with `seed`.
    pub fn new(workload: Arc<Workload>, inserts: Arc<InsertSequence>, seed: u64) -> Self {
        let chooser = match workload.distribution {
            RequestDistribution::Zipfian => {
                KeyChooser::Zipfian(ScrambledZipfian::new(workload.key_space()))
            }
            RequestDistribution::Latest => {
                KeyChooser::Latest(Zipfian::new(inserts.count(), ZIPFIAN_CONSTANT))
            }
            RequestDistribution::Uniform => KeyChooser::Uniform {
                items: workload.record_count,
            },
        };
        OperationGenerator {
            workload,
            inserts,
            random: Random::new(seed),
            chooser,
        }
    }

    /// The shared insert sequence.
    pub fn inserts(&self) -> &Arc<InsertSequence> {
        &self.inserts
    }

    /// The random source (also used for values).
    pub fn random(&mut self) -> &mut Random {
        &mut self.random
    }

    /// The key number of an existing record (YCSB's `nextKeynum`).
    pub fn next_keynum(&mut self) -> u64 {
        let visible = self.inserts.count().max(1);
        match &mut self.chooser {
            KeyChooser::Zipfian(zipfian) => {
                for _ in 0..REDRAWS_MAX {
                    let keynum = zipfian.next(&mut self.random);
                    if keynum < visible {
                        return keynum;
                    }
                }
                self.random.below(visible)
            }
            KeyChooser::Latest(zipfian) => {
                // SkewedLatestGenerator: max - zipfian.nextLong(max), with
                // max the last acknowledged key number.
                let last = visible - 1;
                last - zipfian.next_of(&mut self.random, visible).min(last)
            }
            KeyChooser::Uniform { items } => self.random.below((*items).max(1)),
        }
    }

    /// Draws the next run-phase operation.
    pub fn next_operation(&mut self) -> PlannedOperation {
        let operation = self.workload.mix.choose(&mut self.random);
        let keynum = match operation {
            Operation::Insert => self.inserts.take(),
            _ => self.next_keynum(),
        };
        let scan_length = match operation {
            Operation::Scan => 1 + self.random.below(self.workload.scan_length_max),
            _ => 1,
        };
        let field = self
            .random
            .below(u64::from(self.workload.field_count.max(1))) as u32;
        PlannedOperation {
            operation,
            keynum,
            scan_length,
            field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(name: WorkloadName, seed: u64) -> OperationGenerator {
        let workload = Arc::new(Workload::core(name, 1000, 100_000));
        let inserts = Arc::new(InsertSequence::new(workload.record_count));
        OperationGenerator::new(workload, inserts, seed)
    }

    // Proves each workload's drawn mix over 100k draws is within 1 percentage
    // point of YCSB's proportions.
    #[test]
    fn mixes_match_ycsb_over_100k_draws() {
        let expected = [
            (WorkloadName::A, [0.5, 0.5, 0.0, 0.0, 0.0]),
            (WorkloadName::B, [0.95, 0.05, 0.0, 0.0, 0.0]),
            (WorkloadName::C, [1.0, 0.0, 0.0, 0.0, 0.0]),
            (WorkloadName::D, [0.95, 0.0, 0.05, 0.0, 0.0]),
            (WorkloadName::E, [0.0, 0.0, 0.05, 0.95, 0.0]),
            (WorkloadName::F, [0.5, 0.0, 0.0, 0.0, 0.5]),
            (WorkloadName::Pegasus, [0.5, 0.5, 0.0, 0.0, 0.0]),
        ];
        for (name, proportions) in expected {
            let mut generator = generator(name, 7);
            let mut counts = [0u64; 5];
            let draws = 100_000;
            for _ in 0..draws {
                let planned = generator.next_operation();
                counts[planned.operation.index()] += 1;
                if planned.operation == Operation::Insert {
                    generator.inserts().acknowledge(planned.keynum).unwrap();
                }
            }
            for (index, proportion) in proportions.iter().enumerate() {
                let observed = counts[index] as f64 / draws as f64;
                assert!(
                    (observed - proportion).abs() < 0.01,
                    "{name:?} {:?}: {observed} vs {proportion}",
                    Operation::ALL[index]
                );
                if *proportion == 0.0 {
                    assert_eq!(counts[index], 0, "{name:?} drew a zero-weight operation");
                }
            }
        }
    }

    // Proves the hottest scrambled-zipfian item gets 1/ζ(10¹⁰, 0.99) of the
    // draws (within 10 %) and that the distribution is heavy-tailed: the top
    // 1 % of items take far more than 1 % of draws, and many items are rare.
    #[test]
    fn scrambled_zipfian_hottest_item_and_heavy_tail() {
        let items = 10_000;
        let mut zipfian = ScrambledZipfian::new(items);
        let mut random = Random::new(1);
        let draws = 200_000;
        let mut counts = vec![0u64; items as usize];
        for _ in 0..draws {
            let item = zipfian.next(&mut random);
            assert!(item < items);
            counts[item as usize] += 1;
        }
        let expected = draws as f64 / SCRAMBLED_ZETAN;
        let hottest = counts[zipfian.hottest() as usize] as f64;
        assert!(
            (hottest - expected).abs() < expected * 0.1,
            "hottest {hottest} vs expected {expected}"
        );
        assert_eq!(
            counts.iter().max().copied(),
            Some(counts[zipfian.hottest() as usize])
        );
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top_percent: u64 = sorted[..(items as usize / 100)].iter().sum();
        assert!(
            top_percent as f64 > 0.2 * draws as f64,
            "top 1% got only {top_percent} of {draws}"
        );
        // Scrambling scatters the hot items: the hottest is not item 0.
        assert_ne!(zipfian.hottest(), 0);
    }

    // Proves the plain zipfian's rank frequencies follow 1/((i+1)^θ ζ(n, θ))
    // for the first ranks, within 10 %.
    #[test]
    fn zipfian_rank_frequencies_match_theory() {
        let items = 1000;
        let mut zipfian = Zipfian::new(items, ZIPFIAN_CONSTANT);
        let mut random = Random::new(2);
        let draws = 200_000;
        let mut counts = vec![0u64; items as usize];
        for _ in 0..draws {
            counts[zipfian.next(&mut random) as usize] += 1;
        }
        let zetan = zeta(items, ZIPFIAN_CONSTANT);
        for rank in 0..2u64 {
            let expected = draws as f64 / ((rank + 1) as f64).powf(ZIPFIAN_CONSTANT) / zetan;
            let observed = counts[rank as usize] as f64;
            assert!(
                (observed - expected).abs() < expected * 0.1,
                "rank {rank}: {observed} vs {expected}"
            );
        }
        // Counts decrease with rank over the head.
        assert!(counts[0] > counts[5] && counts[5] > counts[100]);
    }

    // Proves growing a zipfian's item count extends ζ exactly as computing
    // it from scratch does.
    #[test]
    fn zipfian_grows_incrementally() {
        let mut grown = Zipfian::new(100, ZIPFIAN_CONSTANT);
        let mut random = Random::new(3);
        grown.next_of(&mut random, 5000);
        let fresh = Zipfian::new(5000, ZIPFIAN_CONSTANT);
        assert!((grown.zetan() - fresh.zetan()).abs() < 1e-9);
    }

    // Proves the latest chooser favours the most recent acknowledged inserts
    // and follows new inserts as they are acknowledged.
    #[test]
    fn latest_favours_recent_inserts() {
        let mut generator = generator(WorkloadName::D, 4);
        let draws = 100_000;
        let mut recent = 0u64;
        for _ in 0..draws {
            let keynum = generator.next_keynum();
            assert!(keynum < 1000);
            if keynum >= 990 {
                recent += 1;
            }
        }
        // Uniform would give 1 %; the newest 1 % get a large share.
        assert!(recent as f64 > 0.3 * draws as f64, "recent {recent}");
        for _ in 0..10 {
            let keynum = generator.inserts().take();
            generator.inserts().acknowledge(keynum).unwrap();
        }
        let newest = (0..10_000)
            .filter(|_| generator.next_keynum() == 1009)
            .count();
        assert!(newest > 1000, "newest key drawn only {newest} times");
    }

    // Proves scan lengths are uniform over 1..=100 for workload E.
    #[test]
    fn scan_lengths_are_uniform_within_bounds() {
        let mut generator = generator(WorkloadName::E, 5);
        let mut counts = vec![0u64; 101];
        let mut scans = 0u64;
        for _ in 0..100_000 {
            let planned = generator.next_operation();
            if planned.operation == Operation::Scan {
                assert!((1..=SCAN_LENGTH_MAX_E).contains(&planned.scan_length));
                counts[planned.scan_length as usize] += 1;
                scans += 1;
            } else {
                generator.inserts().acknowledge(planned.keynum).unwrap();
            }
        }
        let expected = scans as f64 / 100.0;
        for (length, count) in counts.iter().enumerate().skip(1) {
            let observed = *count as f64;
            assert!(
                (observed - expected).abs() < expected * 0.2,
                "length {length}: {observed} vs {expected}"
            );
        }
    }

    // Proves uniform key choice stays within the loaded records and covers
    // them evenly.
    #[test]
    fn uniform_chooser_is_even() {
        let mut workload = Workload::core(WorkloadName::C, 100, 0);
        workload.distribution = RequestDistribution::Uniform;
        let inserts = Arc::new(InsertSequence::new(100));
        let mut generator = OperationGenerator::new(Arc::new(workload), inserts, 6);
        let mut counts = [0u64; 100];
        for _ in 0..100_000 {
            counts[generator.next_keynum() as usize] += 1;
        }
        assert!(counts.iter().all(|count| (800..1200).contains(count)));
    }

    // Proves out-of-order acknowledgements only advance the visible count
    // once the gap closes.
    #[test]
    fn insert_sequence_waits_for_gaps() {
        let sequence = InsertSequence::new(10);
        let first = sequence.take();
        let second = sequence.take();
        sequence.acknowledge(second).unwrap();
        assert_eq!(sequence.count(), 10);
        sequence.acknowledge(first).unwrap();
        assert_eq!(sequence.count(), 12);
    }

    // Proves YCSB's FNV hash and key names: FNV-1a of the number's bytes,
    // made non-negative, as "user" + decimal.
    #[test]
    fn fnv_keys_match_ycsb() {
        // FNV-1a 64 of eight zero bytes, computed independently.
        let mut hash = FNV_OFFSET_BASIS_64;
        for _ in 0..8 {
            hash = hash.wrapping_mul(FNV_PRIME_64);
        }
        assert_eq!(fnv_hash64(0), (hash as i64).wrapping_abs() as u64);
        assert!(fnv_hash64(12345) <= i64::MAX as u64);
        assert_eq!(key_name(0), format!("user{}", fnv_hash64(0)).into_bytes());
        assert_ne!(key_name(1), key_name(2));
        assert_eq!(field_name(3), b"field3".to_vec());
    }

    // Proves validation rejects out-of-range options and oversized records.
    #[test]
    fn validate_bounds() {
        let mut workload = Workload::core(WorkloadName::A, 0, 10);
        assert!(matches!(
            workload.validate(),
            Err(WorkloadError::OutOfRange {
                name: "records",
                ..
            })
        ));
        workload.record_count = 10;
        assert_eq!(workload.validate(), Ok(()));
        workload.field_bytes = FIELD_BYTES_MAX;
        assert!(matches!(
            workload.validate(),
            Err(WorkloadError::RecordTooLarge { .. })
        ));
        assert!(WorkloadName::parse("x").is_err());
        assert_eq!(WorkloadName::parse("Pegasus"), Ok(WorkloadName::Pegasus));
    }

    // Proves below() stays in range and printable fill stays printable.
    #[test]
    fn random_helpers_stay_in_range() {
        let mut random = Random::new(9);
        for bound in [1u64, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(random.below(bound) < bound);
            }
        }
        let mut buffer = [0u8; 37];
        random.fill_printable(&mut buffer);
        assert!(buffer.iter().all(|byte| (b' '..=b'~').contains(byte)));
    }
}

//! Mutation log benchmark: records per second and fdatasyncs per record with 1, 8, 64 and 512
//! concurrent writers (each looping append + wait_durable, 4 KiB payloads, sync on), against
//! one-fdatasync-per-write measured in the same run, on a quiet disk and with a competing
//! background writer on the same disk.
//!
//! Baselines: `one_sync_per_write/log` is the log itself with one writer and a zero window
//! (every record is its own write + fdatasync); `one_sync_per_write/raw_dma` is a bare DmaFile
//! write of one 4 KiB block + fdatasync per record, no log.
//!
//! The log directory is `$MARKAB_BENCH_LOG_DIR` or `/var/tmp/markab-bench-log` (a real disk,
//! not tmpfs). `MARKAB_BENCH_LOG_WINDOW_US` sets the group-commit window of the
//! `group_commit/*` benchmarks (default 200, the tuning default). `MARKAB_BENCH_LOG_QUIET_ONLY=1`
//! skips the busy-disk groups. At the end a markdown table of every figure is printed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::OpenOptions as StdOpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::io::DmaFile;
use markab_shards::log::{LogConfig, LogStats, MutationLog, RecordHeader, Recovery};

/// Payload of every record.
const PAYLOAD_BYTES: usize = 4096;
/// Concurrent writer counts of the group-commit benchmarks.
const WRITER_COUNTS: [usize; 4] = [1, 8, 64, 512];
/// Memory glommio registers for DMA buffers in the benchmark executors.
const IO_MEMORY_BYTES: usize = 4 << 20;
/// The background writer's file wraps at this size.
const BACKGROUND_FILE_BYTES: u64 = 2 << 30;
/// The background writer's write size.
const BACKGROUND_WRITE_BYTES: usize = 1 << 20;
/// The background writer syncs after this many bytes.
const BACKGROUND_SYNC_BYTES: u64 = 64 << 20;

fn bench_dir() -> PathBuf {
    std::env::var_os("MARKAB_BENCH_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/markab-bench-log"))
}

fn window() -> Duration {
    let micros = std::env::var("MARKAB_BENCH_LOG_WINDOW_US")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    Duration::from_micros(micros)
}

/// A fresh, empty directory for one measurement.
fn fresh_dir(path: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).expect("create bench dir");
    path.to_path_buf()
}

/// Runs `make()` on a fresh glommio executor.
fn on_executor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(IO_MEMORY_BYTES)
        .spawn(make)
        .expect("spawn executor")
        .join()
        .expect("executor")
}

/// Writes `records_per_writer` records from each of `writers` tasks (append + wait_durable in
/// a loop); returns the elapsed time and the log's stats.
fn run_log(
    dir: PathBuf,
    writers: usize,
    records_per_writer: u64,
    window: Duration,
) -> (Duration, LogStats) {
    on_executor(move || async move {
        let mut config = LogConfig::new(&dir);
        config.group_commit_window = window;
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .expect("open log");
        let payload = Rc::new(vec![0x5Au8; PAYLOAD_BYTES]);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(writers);
        for writer in 0..writers {
            let (log, payload) = (log.clone(), payload.clone());
            tasks.push(glommio::spawn_local(async move {
                for decree in 1..=records_per_writer as i64 {
                    let header = RecordHeader {
                        app_id: 1,
                        partition_index: writer as i32,
                        ballot: 1,
                        decree,
                    };
                    let end = log.append(&header, &payload).expect("append");
                    log.wait_durable(end).await.expect("durable");
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let elapsed = started.elapsed();
        log.close().await.expect("close log");
        (elapsed, log.stats())
    })
}

/// Writes `records` 4 KiB blocks to a bare DmaFile, each followed by fdatasync.
fn run_raw(dir: PathBuf, records: u64) -> Duration {
    on_executor(move || async move {
        let file = DmaFile::create(dir.join("raw.dat"))
            .await
            .expect("create raw file");
        let started = Instant::now();
        for record in 0..records {
            let mut buffer = file.alloc_dma_buffer(PAYLOAD_BYTES);
            buffer.as_bytes_mut().fill(0x5A);
            file.write_at(buffer, record * PAYLOAD_BYTES as u64)
                .await
                .expect("raw write");
            file.fdatasync().await.expect("raw fdatasync");
        }
        let elapsed = started.elapsed();
        file.close().await.expect("close raw file");
        elapsed
    })
}

/// Figures accumulated for one benchmark across criterion's samples.
#[derive(Default, Clone, Copy)]
struct Totals {
    records: u64,
    syncs: u64,
    elapsed: Duration,
}

impl Totals {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn syncs_per_record(&self) -> f64 {
        self.syncs as f64 / self.records as f64
    }
}

type Table = Rc<RefCell<BTreeMap<(String, usize, String), Totals>>>;

/// A thread writing 1 MiB O_DIRECT blocks over a 2 GiB file on the bench disk (fdatasync every
/// 64 MiB) until dropped; the file is deleted afterwards.
struct BackgroundWriter {
    stop: Arc<AtomicBool>,
    written_bytes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl BackgroundWriter {
    fn start(path: PathBuf) -> BackgroundWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let written_bytes = Arc::new(AtomicU64::new(0));
        let file = StdOpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .expect("open background file");
        let (thread_stop, thread_written) = (stop.clone(), written_bytes.clone());
        let thread = std::thread::spawn(move || {
            let layout =
                std::alloc::Layout::from_size_align(BACKGROUND_WRITE_BYTES, 4096).expect("layout");
            // SAFETY: the layout has a non-zero size; the buffer is freed below.
            let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!pointer.is_null());
            // SAFETY: `pointer` is a live, zeroed allocation of `layout.size()` bytes.
            let buffer = unsafe { std::slice::from_raw_parts(pointer, layout.size()) };
            let mut offset = 0u64;
            let mut since_sync = 0u64;
            while !thread_stop.load(Ordering::Relaxed) {
                file.write_all_at(buffer, offset).expect("background write");
                offset = (offset + BACKGROUND_WRITE_BYTES as u64) % BACKGROUND_FILE_BYTES;
                since_sync += BACKGROUND_WRITE_BYTES as u64;
                thread_written.fetch_add(BACKGROUND_WRITE_BYTES as u64, Ordering::Relaxed);
                if since_sync >= BACKGROUND_SYNC_BYTES {
                    file.sync_data().expect("background sync");
                    since_sync = 0;
                }
            }
            // SAFETY: allocated above with the same layout.
            unsafe { std::alloc::dealloc(pointer, layout) };
        });
        BackgroundWriter {
            stop,
            written_bytes,
            thread: Some(thread),
            path,
        }
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        eprintln!(
            "background writer wrote {} MiB",
            self.written_bytes.load(Ordering::Relaxed) >> 20
        );
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bench_condition(c: &mut Criterion, condition: &str, table: &Table) {
    let root = bench_dir();
    std::fs::create_dir_all(&root).expect("create bench root");
    let log_dir = root.join("log");
    let _background =
        (condition == "busy_disk").then(|| BackgroundWriter::start(root.join("markab-bench-dd")));
    let record = |name: &str, writers: usize, totals: Totals| {
        let mut table = table.borrow_mut();
        let entry = table
            .entry((condition.to_string(), writers, name.to_string()))
            .or_default();
        entry.records += totals.records;
        entry.syncs += totals.syncs;
        entry.elapsed += totals.elapsed;
    };

    let mut group = c.benchmark_group(format!("log/{condition}/one_sync_per_write"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_dma", |b| {
        b.iter_custom(|iters| {
            let elapsed = run_raw(fresh_dir(&log_dir), iters);
            record(
                "raw_dma",
                1,
                Totals {
                    records: iters,
                    syncs: iters,
                    elapsed,
                },
            );
            elapsed
        })
    });
    group.bench_function("log", |b| {
        b.iter_custom(|iters| {
            let (elapsed, stats) = run_log(fresh_dir(&log_dir), 1, iters, Duration::ZERO);
            record(
                "log_window_0",
                1,
                Totals {
                    records: stats.records,
                    syncs: stats.syncs,
                    elapsed,
                },
            );
            elapsed
        })
    });
    group.finish();

    let window = window();
    let mut group = c.benchmark_group(format!("log/{condition}/group_commit"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for writers in WRITER_COUNTS {
        group.bench_function(writers.to_string(), |b| {
            b.iter_custom(|iters| {
                let per_writer = iters.div_ceil(writers as u64).max(1);
                let (elapsed, stats) = run_log(fresh_dir(&log_dir), writers, per_writer, window);
                record(
                    "group_commit",
                    writers,
                    Totals {
                        records: stats.records,
                        syncs: stats.syncs,
                        elapsed,
                    },
                );
                // Scale to the iterations criterion asked for.
                elapsed.mul_f64(iters as f64 / stats.records as f64)
            })
        });
        let totals = table.borrow()[&(condition.to_string(), writers, "group_commit".to_string())];
        eprintln!(
            "log/{condition}/group_commit/{writers}: {:.0} records/s, {:.4} fdatasyncs/record",
            totals.records_per_second(),
            totals.syncs_per_record()
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&log_dir);
}

fn print_table(table: &Table) {
    let table = table.borrow();
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "\n| disk | benchmark | writers | records/s | fdatasyncs/record | × one-sync-per-write (log) | × raw DMA write+sync |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for condition in ["quiet_disk", "busy_disk"] {
        let get = |writers: usize, name: &str| {
            table
                .get(&(condition.to_string(), writers, name.to_string()))
                .copied()
        };
        let (Some(baseline), Some(raw)) = (get(1, "log_window_0"), get(1, "raw_dma")) else {
            continue;
        };
        let mut rows = vec![
            ("raw_dma (no log)", 1, raw),
            ("one_sync_per_write (log, window 0)", 1, baseline),
        ];
        for writers in WRITER_COUNTS {
            if let Some(totals) = get(writers, "group_commit") {
                rows.push(("group_commit", writers, totals));
            }
        }
        for (name, writers, totals) in rows {
            let _ = writeln!(
                out,
                "| {condition} | {name} | {writers} | {:.0} | {:.4} | {:.1} | {:.1} |",
                totals.records_per_second(),
                totals.syncs_per_record(),
                totals.records_per_second() / baseline.records_per_second(),
                totals.records_per_second() / raw.records_per_second(),
            );
        }
    }
}

fn benches(c: &mut Criterion) {
    let table: Table = Rc::default();
    bench_condition(c, "quiet_disk", &table);
    if std::env::var("MARKAB_BENCH_LOG_QUIET_ONLY").as_deref() != Ok("1") {
        bench_condition(c, "busy_disk", &table);
    }
    print_table(&table);
}

criterion_group!(log_benches, benches);
criterion_main!(log_benches);

//! The writer: appends land in a pending buffer; one group-commit task per log writes them with
//! glommio DMA (O_DIRECT over io_uring), fdatasyncs, and completes the waiters. Hot path:
//! `append` (encode into the pending buffer) and `wait_durable` (one oneshot per waiter).
//! Contract: `docs/log.md`, "Group commit".

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::channel::oneshot;
use glommio::io::{Directory, DmaFile, OpenOptions};
use glommio::Task;

use super::record::{
    encode_record, encode_segment_header, record_bytes, LogPosition, RecordHeader, SegmentHeader,
    RECORD_OVERHEAD_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use super::recovery::Recovery;
use super::{segment_path, sync_dir, LogConfig, LogError, SegmentInfo};

/// Pending (appended, not yet written) bytes are bounded by this many times `batch_bytes_max`;
/// beyond it `append` answers [`LogError::Busy`].
pub const PENDING_BATCHES_MAX: usize = 8;

/// Unit of every DMA write: offsets and lengths are multiples of it. Equal to the segment
/// header, so records start on a block boundary.
const BLOCK_BYTES: u64 = 4096;

const _: () = assert!(SEGMENT_HEADER_BYTES == BLOCK_BYTES);

/// Most emptied batch buffers kept for reuse.
const SPARE_BUFFERS_MAX: usize = PENDING_BATCHES_MAX + 1;

/// Counters of one log since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended.
    pub records: u64,
    /// Record bytes appended.
    pub bytes: u64,
    /// Flushes (one DMA write of a batch, plus its fdatasync when `sync`).
    pub flushes: u64,
    /// fdatasync calls of any kind: per flush, segment headers, seals and close.
    pub syncs: u64,
    /// Most records written by one flush.
    pub batch_records_max: u64,
    /// Most record bytes written by one flush.
    pub batch_bytes_max: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files removed by [`MutationLog::remove_segments`].
    pub segments_removed: u64,
    /// Flushes that waited out (part of) the group-commit window for more
    /// appends; zero while writes are not concurrent.
    pub window_waits: u64,
}

/// One flush of the group-commit task, as reported to a flush observer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushSample {
    /// Records the flush wrote.
    pub records: u64,
    /// Record bytes the flush wrote.
    pub bytes: u64,
    /// Microseconds the DMA write took.
    pub write_us: u64,
    /// Microseconds the fdatasync took (0 when `sync` is off).
    pub sync_us: u64,
}

/// Called on the log's executor after every flush (metrics).
pub type FlushObserver = Box<dyn Fn(&FlushSample)>;

/// A wake-up flag for the group-commit task: `ring` sets it and wakes the task; `wait`
/// resolves once it is set and clears it.
#[derive(Default)]
struct Doorbell {
    rung: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|context| {
            if self.rung.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Encoded records of one segment waiting to be written.
struct Pending {
    segment_index: u64,
    /// File offset of `bytes[0]`.
    file_offset: u64,
    /// Position of `bytes[0]`.
    start: LogPosition,
    bytes: Vec<u8>,
}

/// One flush's worth of records, taken from the front of the pending queue.
struct Batch {
    segment_index: u64,
    file_offset: u64,
    end: LogPosition,
    bytes: Vec<u8>,
    records: u64,
}

type Waiter = oneshot::Sender<Result<(), LogError>>;

struct State {
    config: LogConfig,
    /// Largest payload one record may carry in this log.
    payload_bytes_max: usize,
    /// Sealed segments, the open one and any the appends already started, in index order.
    segments: VecDeque<SegmentInfo>,
    /// Index of the segment whose file the group-commit task has open; lower ones are sealed.
    open_index: u64,
    /// File offset in the last segment where the next appended record goes.
    assigned_offset: u64,
    appended: LogPosition,
    durable: LogPosition,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    waiters: BTreeMap<LogPosition, Vec<Waiter>>,
    /// Emptied batch buffers kept for reuse (at most `SPARE_BUFFERS_MAX`), so appends do not
    /// allocate once the log is warm.
    spare_buffers: Vec<Vec<u8>>,
    failed: Option<String>,
    closing: bool,
    stats: LogStats,
    /// Records of the last flush: the window is only worth waiting when
    /// writes are concurrent (the last flush carried more than one).
    last_batch_records: u64,
}

struct Shared {
    state: RefCell<State>,
    /// Rung when something becomes pending or the log starts closing.
    work: Doorbell,
    /// Rung when pending bytes reach `batch_bytes_max` (ends the window early).
    full: Doorbell,
    /// Told about every flush (see [`MutationLog::set_flush_observer`]).
    observer: RefCell<Option<FlushObserver>>,
}

impl Shared {
    /// Marks the log failed: every waiter and every later append gets `Failed`.
    fn fail(&self, error: &LogError) {
        let message = error.to_string();
        tracing::error!(%message, "mutation log failed");
        let waiters = {
            let mut state = self.state.borrow_mut();
            state.failed = Some(message.clone());
            state.pending.clear();
            state.pending_bytes = 0;
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters.into_values().flatten() {
            let _ = waiter.send(Err(LogError::Failed(message.clone())));
        }
    }

    /// Takes up to `batch_bytes_max` bytes of whole records (at least one) from the front of
    /// the pending queue.
    fn take_batch(&self) -> Option<Batch> {
        let mut state = self.state.borrow_mut();
        let batch_bytes_max = state.config.batch_bytes_max;
        let front = state.pending.front_mut()?;
        let mut taken = 0usize;
        let mut records = 0u64;
        while taken < front.bytes.len() {
            let length = u32::from_le_bytes(
                front.bytes[taken..taken + 4]
                    .try_into()
                    .expect("4-byte length field"),
            ) as usize;
            let bytes = RECORD_OVERHEAD_BYTES - super::record::RECORD_ID_BYTES + length;
            if records > 0 && taken + bytes > batch_bytes_max {
                break;
            }
            taken += bytes;
            records += 1;
        }
        let segment_index = front.segment_index;
        let file_offset = front.file_offset;
        let end = LogPosition(front.start.0 + taken as u64);
        let bytes = if taken == front.bytes.len() {
            let whole = state.pending.pop_front().expect("front exists");
            whole.bytes
        } else {
            let rest = front.bytes.split_off(taken);
            let head = std::mem::replace(&mut front.bytes, rest);
            front.file_offset += taken as u64;
            front.start = end;
            head
        };
        state.pending_bytes -= taken;
        Some(Batch {
            segment_index,
            file_offset,
            end,
            bytes,
            records,
        })
    }

    /// Advances `durable` to `end` and completes every waiter at or before it.
    fn complete(&self, end: LogPosition) {
        let done = {
            let mut state = self.state.borrow_mut();
            assert!(end >= state.durable, "durable position moved backwards");
            assert!(end <= state.appended, "durable position beyond appended");
            state.durable = end;
            let later = state.waiters.split_off(&LogPosition(end.0 + 1));
            std::mem::replace(&mut state.waiters, later)
        };
        for waiter in done.into_values().flatten() {
            let _ = waiter.send(Ok(()));
        }
    }
}

/// The open segment file and the partial block at its write frontier.
struct OpenSegment {
    index: u64,
    file: DmaFile,
    path: std::path::PathBuf,
    /// File offset up to which records are written.
    written: u64,
    /// Bytes from the last block boundary up to `written` (shorter than a block); rewritten
    /// in front of the next batch because O_DIRECT writes whole blocks.
    tail: Vec<u8>,
}

fn glommio_error(path: &Path, operation: &'static str, error: impl std::fmt::Display) -> LogError {
    LogError::io(path, operation, error)
}

/// Creates segment `index` starting at `start`: header written and synced, directory synced.
async fn create_segment(
    dir: &Path,
    index: u64,
    start: LogPosition,
    stats: &mut LogStats,
) -> Result<OpenSegment, LogError> {
    let path = segment_path(dir, index);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .dma_open(&path)
        .await
        .map_err(|error| glommio_error(&path, "create segment", error))?;
    let alignment = file.alignment();
    if alignment == 0 || alignment > BLOCK_BYTES || !BLOCK_BYTES.is_multiple_of(alignment) {
        return Err(LogError::io(
            &path,
            "check alignment",
            format!("O_DIRECT alignment {alignment} does not divide {BLOCK_BYTES}"),
        ));
    }
    let header = encode_segment_header(&SegmentHeader { index, start });
    let mut buffer = file.alloc_dma_buffer(header.len());
    buffer.as_bytes_mut().copy_from_slice(&header);
    let written = file
        .write_at(buffer, 0)
        .await
        .map_err(|error| glommio_error(&path, "write segment header", error))?;
    if written != header.len() {
        return Err(LogError::io(
            &path,
            "write segment header",
            format!("short write of {written} bytes"),
        ));
    }
    file.fdatasync()
        .await
        .map_err(|error| glommio_error(&path, "fdatasync segment header", error))?;
    // Makes the new directory entry durable (io_uring fsync of the directory).
    let directory = Directory::open(dir)
        .await
        .map_err(|error| glommio_error(dir, "open log directory", error))?;
    directory
        .sync()
        .await
        .map_err(|error| glommio_error(dir, "sync log directory", error))?;
    directory
        .close()
        .await
        .map_err(|error| glommio_error(dir, "close log directory", error))?;
    stats.syncs += 1;
    stats.segments_created += 1;
    Ok(OpenSegment {
        index,
        file,
        path,
        written: SEGMENT_HEADER_BYTES,
        tail: Vec::new(),
    })
}

/// Writes `bytes` at the segment's frontier: one aligned DMA write covering the rewritten
/// partial block, the new records and zero padding up to the next block.
async fn write_batch(segment: &mut OpenSegment, bytes: &[u8]) -> Result<(), LogError> {
    let aligned_start = segment.written - segment.tail.len() as u64;
    assert!(aligned_start.is_multiple_of(BLOCK_BYTES));
    let end = segment.written + bytes.len() as u64;
    let aligned_end = end.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    let mut buffer = segment
        .file
        .alloc_dma_buffer((aligned_end - aligned_start) as usize);
    {
        let out = buffer.as_bytes_mut();
        let tail_bytes = segment.tail.len();
        out[..tail_bytes].copy_from_slice(&segment.tail);
        out[tail_bytes..tail_bytes + bytes.len()].copy_from_slice(bytes);
        out[tail_bytes + bytes.len()..].fill(0);
    }
    let new_tail_start = (end / BLOCK_BYTES * BLOCK_BYTES - aligned_start) as usize;
    let new_tail_end = (end - aligned_start) as usize;
    let buffer = Rc::new(buffer);
    let mut done = 0u64;
    let total = aligned_end - aligned_start;
    while done < total {
        let written = if done == 0 {
            segment
                .file
                .write_rc_at(buffer.clone(), aligned_start)
                .await
        } else {
            // A short write: copy the rest into a fresh aligned buffer.
            let mut rest = segment.file.alloc_dma_buffer((total - done) as usize);
            rest.as_bytes_mut()
                .copy_from_slice(&buffer.as_bytes()[done as usize..]);
            segment.file.write_at(rest, aligned_start + done).await
        }
        .map_err(|error| glommio_error(&segment.path, "write records", error))?;
        if written == 0 || !(written as u64).is_multiple_of(BLOCK_BYTES) {
            return Err(LogError::io(
                &segment.path,
                "write records",
                format!(
                    "unaligned short write of {written} bytes at offset {}",
                    aligned_start + done
                ),
            ));
        }
        done += written as u64;
    }
    segment.tail.clear();
    segment
        .tail
        .extend_from_slice(&buffer.as_bytes()[new_tail_start..new_tail_end]);
    segment.written = end;
    Ok(())
}

/// The group-commit loop; returns when the log is closed and everything pending is written.
async fn group_commit(shared: Rc<Shared>, mut segment: OpenSegment) -> Result<(), LogError> {
    loop {
        // Wait until something is pending (or the log closes with nothing pending).
        loop {
            let (empty, closing) = {
                let state = shared.state.borrow();
                (state.pending.is_empty(), state.closing)
            };
            if !empty {
                break;
            }
            if closing {
                segment
                    .file
                    .fdatasync()
                    .await
                    .map_err(|error| glommio_error(&segment.path, "fdatasync at close", error))?;
                shared.state.borrow_mut().stats.syncs += 1;
                segment
                    .file
                    .close()
                    .await
                    .map_err(|error| glommio_error(&segment.path, "close", error))?;
                return Ok(());
            }
            shared.work.wait().await;
        }
        // Gather: wait up to the window unless the batch is already full or
        // writes are not concurrent (the last flush carried one record: a lone
        // writer would only wait for nobody). Appends during an in-flight
        // flush join the next one either way.
        let (window, gather) = {
            let state = shared.state.borrow();
            let window = state.config.group_commit_window;
            let gather = !window.is_zero()
                && !state.closing
                && state.last_batch_records > 1
                && state.pending_bytes < state.config.batch_bytes_max;
            (window, gather)
        };
        if gather {
            shared.state.borrow_mut().stats.window_waits += 1;
            shared.full.rung.set(false);
            let sleep = std::pin::pin!(glommio::timer::sleep(window));
            let full = std::pin::pin!(shared.full.wait());
            futures::future::select(sleep, full).await;
        }
        let Some(batch) = shared.take_batch() else {
            continue;
        };
        if batch.segment_index != segment.index {
            assert_eq!(
                batch.segment_index,
                segment.index + 1,
                "segments roll one by one"
            );
            // Seal: the sealed file is durable whatever `sync` says, so only the last segment
            // can have a torn tail.
            segment
                .file
                .fdatasync()
                .await
                .map_err(|error| glommio_error(&segment.path, "fdatasync at seal", error))?;
            segment
                .file
                .close()
                .await
                .map_err(|error| glommio_error(&segment.path, "close sealed segment", error))?;
            let (dir, start, mut stats) = {
                let state = shared.state.borrow();
                let start = state
                    .segments
                    .iter()
                    .find(|info| info.index == batch.segment_index)
                    .map(|info| info.start)
                    .expect("appended segment is listed");
                (state.config.dir.clone(), start, state.stats)
            };
            stats.syncs += 1;
            let created = create_segment(&dir, batch.segment_index, start, &mut stats).await;
            {
                let mut state = shared.state.borrow_mut();
                state.stats.syncs = stats.syncs;
                state.stats.segments_created = stats.segments_created;
            }
            segment = created?;
            shared.state.borrow_mut().open_index = segment.index;
        }
        assert_eq!(
            batch.file_offset, segment.written,
            "batch starts at the write frontier"
        );
        let write_started = std::time::Instant::now();
        write_batch(&mut segment, &batch.bytes).await?;
        let write_us = write_started.elapsed().as_micros() as u64;
        let sync = shared.state.borrow().config.sync;
        let sync_started = std::time::Instant::now();
        if sync {
            segment
                .file
                .fdatasync()
                .await
                .map_err(|error| glommio_error(&segment.path, "fdatasync", error))?;
        }
        let sample = FlushSample {
            records: batch.records,
            bytes: batch.bytes.len() as u64,
            write_us,
            sync_us: if sync {
                sync_started.elapsed().as_micros() as u64
            } else {
                0
            },
        };
        if let Some(observer) = shared.observer.borrow().as_ref() {
            observer(&sample);
        }
        {
            let mut state = shared.state.borrow_mut();
            let stats = &mut state.stats;
            stats.flushes += 1;
            stats.syncs += u64::from(sync);
            stats.batch_records_max = stats.batch_records_max.max(batch.records);
            stats.batch_bytes_max = stats.batch_bytes_max.max(batch.bytes.len() as u64);
            state.last_batch_records = batch.records;
            let keep = state.spare_buffers.len() < SPARE_BUFFERS_MAX
                && batch.bytes.capacity() <= 2 * state.config.batch_bytes_max;
            if keep {
                let mut buffer = batch.bytes;
                buffer.clear();
                state.spare_buffers.push(buffer);
            }
        }
        shared.complete(batch.end);
    }
}

/// A shard's mutation log. Lives on one glommio executor (`!Send`); share it with `Rc`.
///
/// ```no_run
/// use markab_shards::log::{recover, LogConfig, MutationLog, RecordHeader};
///
/// glommio::LocalExecutorBuilder::default()
///     .spawn(|| async move {
///         let dir = std::path::Path::new("/var/lib/markab/shard-0/log");
///         let recovery = recover(dir, &mut |_header, _payload, _location| {})?;
///         let log = MutationLog::open(LogConfig::new(dir), &recovery).await?;
///         let header = RecordHeader { app_id: 1, partition_index: 0, ballot: 1, decree: 1 };
///         let end = log.append(&header, b"mutation")?;
///         log.wait_durable(end).await?;
///         log.close().await
///     })?
///     .join()??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MutationLog {
    shared: Rc<Shared>,
    task: RefCell<Option<Task<Result<(), LogError>>>>,
}

impl MutationLog {
    /// Opens the log for writing after `recovery` (from [`super::recover`] on the same
    /// directory): creates a NEW segment after the last recovered one (never appends into a
    /// recovered file) and spawns the group-commit task on the current executor. Must run
    /// inside a glommio executor.
    pub async fn open(config: LogConfig, recovery: &Recovery) -> Result<Rc<MutationLog>, LogError> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir)
            .map_err(|error| LogError::io(&config.dir, "create log directory", error))?;
        let mut stats = LogStats::default();
        let index = recovery.next_segment_index();
        let segment = create_segment(&config.dir, index, recovery.end, &mut stats).await?;
        let mut segments: VecDeque<SegmentInfo> = recovery.segments.iter().cloned().collect();
        segments.push_back(SegmentInfo {
            index,
            path: segment.path.clone(),
            start: recovery.end,
            end: recovery.end,
            records: 0,
            decree_max: Default::default(),
        });
        let payload_bytes_max = RECORD_PAYLOAD_BYTES_MAX
            .min((config.segment_bytes - SEGMENT_HEADER_BYTES) as usize - RECORD_OVERHEAD_BYTES);
        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                config,
                payload_bytes_max,
                segments,
                open_index: index,
                assigned_offset: SEGMENT_HEADER_BYTES,
                appended: recovery.end,
                durable: recovery.end,
                pending: VecDeque::new(),
                pending_bytes: 0,
                waiters: BTreeMap::new(),
                spare_buffers: Vec::new(),
                failed: None,
                closing: false,
                last_batch_records: 0,
                stats,
            }),
            work: Doorbell::default(),
            full: Doorbell::default(),
            observer: RefCell::new(None),
        });
        let task_shared = shared.clone();
        let task = glommio::spawn_local(async move {
            let result = group_commit(task_shared.clone(), segment).await;
            if let Err(error) = &result {
                task_shared.fail(error);
            }
            result
        });
        Ok(Rc::new(MutationLog {
            shared,
            task: RefCell::new(Some(task)),
        }))
    }

    /// Encodes the record into the pending buffer and returns its END position; pass it to
    /// [`MutationLog::wait_durable`] before acknowledging. Does not wait.
    ///
    /// Errors: `Busy` when more than `PENDING_BATCHES_MAX × batch_bytes_max` bytes are pending,
    /// `RecordTooLarge` for a payload above `RECORD_PAYLOAD_BYTES_MAX` or the segment's room,
    /// `Failed` after a fatal I/O error, `Closed` once closing started.
    pub fn append(&self, header: &RecordHeader, payload: &[u8]) -> Result<LogPosition, LogError> {
        let mut state = self.shared.state.borrow_mut();
        if let Some(message) = &state.failed {
            return Err(LogError::Failed(message.clone()));
        }
        if state.closing {
            return Err(LogError::Closed);
        }
        if payload.len() > state.payload_bytes_max {
            return Err(LogError::RecordTooLarge {
                payload_bytes: payload.len(),
                payload_bytes_max: state.payload_bytes_max,
            });
        }
        let bytes = record_bytes(payload.len());
        let pending_bytes_max = PENDING_BATCHES_MAX * state.config.batch_bytes_max;
        if state.pending_bytes > 0 && state.pending_bytes + bytes > pending_bytes_max {
            return Err(LogError::Busy {
                pending_bytes: state.pending_bytes,
                pending_bytes_max,
            });
        }
        let state = &mut *state;
        if state.assigned_offset + bytes as u64 > state.config.segment_bytes {
            let index = state.segments.back().expect("open segment listed").index + 1;
            state.segments.push_back(SegmentInfo {
                index,
                path: segment_path(&state.config.dir, index),
                start: state.appended,
                end: state.appended,
                records: 0,
                decree_max: Default::default(),
            });
            state.assigned_offset = SEGMENT_HEADER_BYTES;
        }
        let segment_index = state.segments.back().expect("segment listed").index;
        let start = state.appended;
        let end = LogPosition(start.0 + bytes as u64);
        let joins_back = state
            .pending
            .back()
            .is_some_and(|pending| pending.segment_index == segment_index);
        if !joins_back {
            state.pending.push_back(Pending {
                segment_index,
                file_offset: state.assigned_offset,
                start,
                bytes: state.spare_buffers.pop().unwrap_or_default(),
            });
        }
        let pending = state.pending.back_mut().expect("pending pushed");
        encode_record(header, payload, &mut pending.bytes);
        state.assigned_offset += bytes as u64;
        state.appended = end;
        state.pending_bytes += bytes;
        state
            .segments
            .back_mut()
            .expect("segment listed")
            .note_record(header, end);
        state.stats.records += 1;
        state.stats.bytes += bytes as u64;
        let full = state.pending_bytes >= state.config.batch_bytes_max;
        self.shared.work.ring();
        if full {
            self.shared.full.ring();
        }
        Ok(end)
    }

    /// Resolves once every byte before `position` is written (and fdatasync'ed when `sync`).
    /// Errors: `Failed` after a fatal I/O error; `Config` for a position never appended.
    pub async fn wait_durable(&self, position: LogPosition) -> Result<(), LogError> {
        let receiver = {
            let mut state = self.shared.state.borrow_mut();
            if position <= state.durable {
                return Ok(());
            }
            if let Some(message) = &state.failed {
                return Err(LogError::Failed(message.clone()));
            }
            if position > state.appended {
                return Err(LogError::Config(format!(
                    "wait_durable({position}) beyond the appended end {}",
                    state.appended
                )));
            }
            let (sender, receiver) = oneshot::channel();
            state.waiters.entry(position).or_default().push(sender);
            receiver
        };
        receiver.await.unwrap_or(Err(LogError::Closed))
    }

    /// The largest payload one record may carry in this log (bounded by
    /// [`RECORD_PAYLOAD_BYTES_MAX`] and by a segment's room).
    pub fn payload_bytes_max(&self) -> usize {
        self.shared.state.borrow().payload_bytes_max
    }

    /// Position up to which everything is durable.
    pub fn durable(&self) -> LogPosition {
        self.shared.state.borrow().durable
    }

    /// Position just past the last appended record.
    pub fn appended(&self) -> LogPosition {
        self.shared.state.borrow().appended
    }

    /// Every segment: sealed, the open one, and any the appends already started (its file is
    /// created when its first batch is written), with records and `decree_max` per stream.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .state
            .borrow()
            .segments
            .iter()
            .cloned()
            .collect()
    }

    /// Bytes of all segments (headers plus records).
    pub fn total_bytes(&self) -> u64 {
        self.shared
            .state
            .borrow()
            .segments
            .iter()
            .map(SegmentInfo::bytes)
            .sum()
    }

    /// Deletes sealed segments from the oldest while `keep` returns `false`; never the open
    /// segment or a later one. Returns how many were deleted. Blocking file removal plus one
    /// directory sync; run it off the hot path (for example after a checkpoint).
    pub fn remove_segments(&self, keep: &dyn Fn(&SegmentInfo) -> bool) -> Result<usize, LogError> {
        let sealed: Vec<SegmentInfo> = {
            let state = self.shared.state.borrow();
            state
                .segments
                .iter()
                .take_while(|info| info.index < state.open_index)
                .cloned()
                .collect()
        };
        let doomed = sealed.iter().take_while(|info| !keep(info)).count();
        let dir = self.shared.state.borrow().config.dir.clone();
        let mut removed = 0;
        let mut result = Ok(());
        for info in &sealed[..doomed] {
            match std::fs::remove_file(&info.path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => removed += 1,
                Err(error) => {
                    result = Err(LogError::io(&info.path, "remove segment", error));
                    break;
                }
            }
        }
        {
            let mut state = self.shared.state.borrow_mut();
            state.segments.drain(..removed);
            state.stats.segments_removed += removed as u64;
        }
        if removed > 0 {
            sync_dir(&dir)?;
        }
        result.map(|()| removed)
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.shared.state.borrow().stats
    }

    /// Calls `observer` after every flush with its size and timings (for
    /// metrics); replaces any earlier observer.
    pub fn set_flush_observer(&self, observer: FlushObserver) {
        *self.shared.observer.borrow_mut() = Some(observer);
    }

    /// Writes and syncs everything pending, closes the file and stops the group-commit task.
    /// Later appends answer `Closed`. Calling it again does nothing.
    pub async fn close(&self) -> Result<(), LogError> {
        let Some(task) = self.task.borrow_mut().take() else {
            return Ok(());
        };
        self.shared.state.borrow_mut().closing = true;
        self.shared.work.ring();
        self.shared.full.ring();
        task.await
    }
}

impl Drop for MutationLog {
    fn drop(&mut self) {
        // Dropping the task cancels it; pending waiters then see `Closed`.
        self.task.get_mut().take();
    }
}

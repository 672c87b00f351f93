//! Prometheus metrics of nodes and meta, served as text on `/metrics`.
//!
//! Hot path: each shard resolves its labelled series once at start
//! ([`ShardMetrics`]) and then only increments atomics it alone writes
//! (per-shard series), so counting a request costs a few uncontended atomic
//! adds and one histogram observation. The HTTP endpoint runs on its own
//! thread (`tiny_http`), never on a shard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use markab_shards::log::FlushSample;
use markab_wire::{ErrorCode, Request};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 20 µs … 10 s.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
    0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Records-per-flush buckets of the group commit.
const BATCH_RECORDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Operation names in a fixed order, so shards index their series by
/// position instead of looking labels up per request.
pub const OPERATIONS: &[&str] = &[
    "get",
    "set",
    "del",
    "exist",
    "ttl",
    "multi_get",
    "multi_set",
    "multi_del",
    "sortkey_count",
    "incr",
    "check_and_set",
    "check_and_mutate",
    "batch_get",
    "get_scanner",
    "scan",
    "clear_scanner",
    "query_route",
    "other",
];

/// The index of `request`'s operation in [`OPERATIONS`].
pub fn operation_index(request: &Request) -> usize {
    let name = request.name();
    OPERATIONS
        .iter()
        .position(|operation| *operation == name)
        .unwrap_or(OPERATIONS.len() - 1)
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure is a programming error.
    result.expect("valid metric definition")
}

/// A node's metrics: one registry, series labelled by shard.
pub struct NodeMetrics {
    pub registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGaugeVec,
    log_flush_records: HistogramVec,
    log_sync_seconds: HistogramVec,
    log_bytes: IntGaugeVec,
    log_segments: IntGaugeVec,
    block_cache_bytes: IntGaugeVec,
    record_cache_bytes: IntGaugeVec,
    record_cache_lookups: IntCounterVec,
    write_buffer_bytes: IntGaugeVec,
    replicas: IntGaugeVec,
    backup_jobs: IntCounterVec,
    backup_bytes: IntCounterVec,
}

impl NodeMetrics {
    pub fn new() -> Arc<NodeMetrics> {
        let registry = Registry::new_custom(Some("markab".into()), None).expect("registry");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(vec.clone())));
            vec
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(vec.clone())));
            vec
        };
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let vec = must(HistogramVec::new(opts, labels));
            must(registry.register(Box::new(vec.clone())));
            vec
        };
        let metrics = NodeMetrics {
            requests: counter(
                "requests_total",
                "Requests served, by shard and operation.",
                &["shard", "op"],
            ),
            errors: counter(
                "request_errors_total",
                "Requests answered with an error, by shard, operation and error code.",
                &["shard", "op", "code"],
            ),
            latency: histogram(
                "request_latency_seconds",
                "Time from decoding a request to queueing its reply, by shard and operation.",
                LATENCY_BUCKETS_S,
                &["shard", "op"],
            ),
            in_flight: gauge(
                "shard_requests_in_flight",
                "Requests a shard is working on (writes waiting for their log sync, forwards).",
                &["shard"],
            ),
            log_flush_records: histogram(
                "log_flush_records",
                "Records written per group-commit flush of the shard's mutation log.",
                BATCH_RECORDS_BUCKETS,
                &["shard"],
            ),
            log_sync_seconds: histogram(
                "log_fsync_seconds",
                "Latency of the mutation log's fdatasync per flush.",
                LATENCY_BUCKETS_S,
                &["shard"],
            ),
            log_bytes: gauge(
                "log_bytes",
                "Bytes of the shard's mutation log segments on disk.",
                &["shard"],
            ),
            log_segments: gauge(
                "log_segments",
                "Segment files of the shard's mutation log.",
                &["shard"],
            ),
            block_cache_bytes: gauge(
                "rocksdb_block_cache_bytes",
                "Bytes held by the shard's RocksDB block cache.",
                &["shard"],
            ),
            record_cache_bytes: gauge(
                "record_cache_bytes",
                "Bytes held by the shard's record cache (whole hash keys read recently).",
                &["shard"],
            ),
            record_cache_lookups: counter(
                "record_cache_lookups_total",
                "Whole-hash-key reads looked up in the shard's record cache, by result (hit, miss).",
                &["shard", "result"],
            ),
            write_buffer_bytes: gauge(
                "rocksdb_write_buffer_bytes",
                "Bytes of memtables under the shard's write-buffer manager.",
                &["shard"],
            ),
            replicas: gauge(
                "replicas",
                "Partition replicas hosted, by shard and role.",
                &["shard", "role"],
            ),
            backup_jobs: counter(
                "backup_jobs_total",
                "Partition backups and restores the node finished, by kind (backup, restore) and result (done, failed).",
                &["kind", "result"],
            ),
            backup_bytes: counter(
                "backup_bytes_total",
                "Bytes of checkpoint files moved by the node's backup jobs, by direction (upload, download).",
                &["direction"],
            ),
            registry: registry.clone(),
        };
        Arc::new(metrics)
    }

    /// The series of one shard, resolved once.
    pub fn shard(self: &Arc<NodeMetrics>, shard: usize) -> ShardMetrics {
        let label = shard.to_string();
        let per_op = |vec: &IntCounterVec| {
            OPERATIONS
                .iter()
                .map(|op| vec.with_label_values(&[label.as_str(), op]))
                .collect()
        };
        ShardMetrics {
            requests: per_op(&self.requests),
            latency: OPERATIONS
                .iter()
                .map(|op| self.latency.with_label_values(&[label.as_str(), op]))
                .collect(),
            in_flight: self.in_flight.with_label_values(&[label.as_str()]),
            log_flush_records: self.log_flush_records.with_label_values(&[label.as_str()]),
            log_sync_seconds: self.log_sync_seconds.with_label_values(&[label.as_str()]),
            log_bytes: self.log_bytes.with_label_values(&[label.as_str()]),
            log_segments: self.log_segments.with_label_values(&[label.as_str()]),
            block_cache_bytes: self.block_cache_bytes.with_label_values(&[label.as_str()]),
            record_cache_bytes: self.record_cache_bytes.with_label_values(&[label.as_str()]),
            record_cache_hits: self
                .record_cache_lookups
                .with_label_values(&[label.as_str(), "hit"]),
            record_cache_misses: self
                .record_cache_lookups
                .with_label_values(&[label.as_str(), "miss"]),
            write_buffer_bytes: self.write_buffer_bytes.with_label_values(&[label.as_str()]),
            replicas_by_role: ["primary", "secondary", "learner", "inactive"]
                .map(|role| self.replicas.with_label_values(&[label.as_str(), role])),
            errors: self.errors.clone(),
            shard_label: label,
        }
    }
}

/// One shard's series. Not shared between shards.
pub struct ShardMetrics {
    requests: Vec<IntCounter>,
    latency: Vec<Histogram>,
    pub in_flight: IntGauge,
    log_flush_records: Histogram,
    log_sync_seconds: Histogram,
    pub log_bytes: IntGauge,
    pub log_segments: IntGauge,
    pub block_cache_bytes: IntGauge,
    pub record_cache_bytes: IntGauge,
    record_cache_hits: IntCounter,
    record_cache_misses: IntCounter,
    pub write_buffer_bytes: IntGauge,
    /// Replicas by role, indexed by `ReplicaRole as usize` (primary,
    /// secondary, learner, inactive).
    pub replicas_by_role: [IntGauge; 4],
    errors: IntCounterVec,
    shard_label: String,
}

impl ShardMetrics {
    /// Counts one served request of operation `op` (see [`operation_index`]).
    pub fn observe(&self, op: usize, elapsed: Duration, error: Option<ErrorCode>) {
        self.requests[op].inc();
        self.latency[op].observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            // Errors are rare; the label lookup is off the common path.
            self.errors
                .with_label_values(&[self.shard_label.as_str(), OPERATIONS[op], code.name()])
                .inc();
        }
    }

    /// Brings the record cache's lookup counters up to the cache's own
    /// cumulative `(hits, misses)`.
    pub fn set_record_cache_lookups(&self, hits: u64, misses: u64) {
        for (counter, total) in [
            (&self.record_cache_hits, hits),
            (&self.record_cache_misses, misses),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Records one group-commit flush of the shard's log.
    pub fn observe_flush(&self, sample: &FlushSample) {
        self.log_flush_records.observe(sample.records as f64);
        if sample.sync_us > 0 {
            self.log_sync_seconds
                .observe(Duration::from_micros(sample.sync_us).as_secs_f64());
        }
    }
}

/// Meta's metrics (one per process).
pub struct MetaMetrics {
    pub registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    tables: IntGauge,
    partitions: IntGauge,
    /// Replicas and primaries per node, and per node and shard.
    node_replicas: IntGaugeVec,
    node_primaries: IntGaugeVec,
    shard_replicas: IntGaugeVec,
    shard_primaries: IntGaugeVec,
    moves: IntCounterVec,
    moves_in_progress: IntGauge,
    backups: IntGaugeVec,
    backup_policies: IntGauge,
    dups: IntGaugeVec,
    /// Per duplicated partition (labels dup_id, table, partition).
    dup_partition: [IntGaugeVec; 6],
    /// 1 while this meta serves as its group's leader (a sole meta always).
    leader: IntGauge,
    /// The epoch of this meta's current term (0 for a sole meta; -1 none).
    epoch: IntGauge,
    /// Terms this meta started (each loads the state from the store).
    terms: IntGauge,
    /// The group's metas, as the campaign last saw them.
    members: IntGauge,
}

/// The per-partition duplication gauges, in the order of
/// `MetaMetrics::dup_partition`.
const DUP_PARTITION_GAUGES: [(&str, &str); 6] = [
    ("dup_confirmed_decree", "The last decree the remote cluster confirmed, per duplicated partition (-1: none yet)."),
    ("dup_lag_decrees", "Committed decrees not yet confirmed by the remote cluster, per duplicated partition."),
    ("dup_lag_ms", "How long the confirmed decree has been behind the committed one, in ms, per duplicated partition."),
    ("dup_shipped_records", "Records the partition's primary shipped since it became primary."),
    ("dup_shipped_bytes", "Payload bytes the partition's primary shipped since it became primary."),
    ("dup_errors", "Failed shipping attempts of the partition's primary since it became primary."),
];

/// The process's meta metrics, created on first use.
pub fn meta_metrics() -> &'static MetaMetrics {
    static METRICS: std::sync::OnceLock<MetaMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new_custom(Some("markab_meta".into()), None).expect("registry");
        let requests = must(IntCounterVec::new(
            Opts::new("requests_total", "Meta requests served, by type."),
            &["op"],
        ));
        let errors = must(IntCounterVec::new(
            Opts::new(
                "request_errors_total",
                "Meta requests answered with an error.",
            ),
            &["op", "code"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "request_latency_seconds",
                "Meta request latency, store write included.",
            )
            .buckets(LATENCY_BUCKETS_S.to_vec()),
            &["op"],
        ));
        let tables = must(IntGauge::new(
            "tables",
            "Tables meta holds (dropped ones included).",
        ));
        let partitions = must(IntGauge::new("partitions", "Partitions of those tables."));
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let gauge = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(gauge.clone())));
            gauge
        };
        let node_replicas = gauge(
            "node_replicas",
            "Replicas of available tables placed on each node.",
            &["node"],
        );
        let node_primaries = gauge(
            "node_primaries",
            "Primaries of available tables placed on each node.",
            &["node"],
        );
        let shard_replicas = gauge(
            "shard_replicas",
            "Replicas placed on each shard of each node.",
            &["node", "shard"],
        );
        let shard_primaries = gauge(
            "shard_primaries",
            "Primaries placed on each shard of each node.",
            &["node", "shard"],
        );
        let backups = gauge(
            "backups",
            "Backups meta records, by status (running, complete, deleting, failed).",
            &["status"],
        );
        let backup_policies = must(IntGauge::new(
            "backup_policies",
            "Backup policies, enabled or not.",
        ));
        let dups = gauge(
            "dups",
            "Duplications to other clusters, by status (running, paused, failed).",
            &["status"],
        );
        let dup_partition = DUP_PARTITION_GAUGES
            .map(|(name, help)| gauge(name, help, &["dup_id", "table", "partition"]));
        must(registry.register(Box::new(backup_policies.clone())));
        let moves = must(IntCounterVec::new(
            Opts::new(
                "balancer_moves_total",
                "Balancer moves finished, by kind and result (ok, cancelled, timed_out).",
            ),
            &["kind", "result"],
        ));
        let moves_in_progress = must(IntGauge::new(
            "balancer_moves_in_progress",
            "Balancer moves in progress.",
        ));
        let leader = must(IntGauge::new(
            "leader",
            "1 while this meta serves as its group's leader (a sole meta always), else 0.",
        ));
        let epoch = must(IntGauge::new(
            "epoch",
            "The epoch of this meta's current term: the leader key's creation revision in etcd, 0 for a sole meta, -1 without a term.",
        ));
        let terms = must(IntGauge::new(
            "terms_started",
            "Terms this meta started as leader (each loads the state from the store).",
        ));
        let members = must(IntGauge::new(
            "group_members",
            "Metas of this meta's group, as its campaign last saw them in etcd (1 for a sole meta).",
        ));
        for gauge in [&leader, &epoch, &terms, &members] {
            must(registry.register(Box::new(gauge.clone())));
        }
        epoch.set(-1);
        must(registry.register(Box::new(moves.clone())));
        must(registry.register(Box::new(moves_in_progress.clone())));
        must(registry.register(Box::new(requests.clone())));
        must(registry.register(Box::new(errors.clone())));
        must(registry.register(Box::new(latency.clone())));
        must(registry.register(Box::new(tables.clone())));
        must(registry.register(Box::new(partitions.clone())));
        MetaMetrics {
            registry,
            requests,
            errors,
            latency,
            tables,
            partitions,
            node_replicas,
            node_primaries,
            shard_replicas,
            shard_primaries,
            moves,
            moves_in_progress,
            backups,
            backup_policies,
            dups,
            dup_partition,
            leader,
            epoch,
            terms,
            members,
        }
    })
}

impl NodeMetrics {
    /// Counts one finished backup (`restore` false) or restore job and
    /// the bytes it moved.
    pub fn observe_backup_job(&self, restore: bool, done: bool, bytes: u64) {
        let kind = if restore { "restore" } else { "backup" };
        let result = if done { "done" } else { "failed" };
        self.backup_jobs.with_label_values(&[kind, result]).inc();
        let direction = if restore { "download" } else { "upload" };
        self.backup_bytes
            .with_label_values(&[direction])
            .inc_by(bytes);
    }
}

impl MetaMetrics {
    /// Brings the leadership gauges up to `gate` at `now_ms`.
    pub fn observe_leadership(&self, gate: &markab_core::meta::leader::LeaderGate, now_ms: u64) {
        let serving = gate.leadership().serving(now_ms).is_some();
        self.leader.set(i64::from(serving));
        self.epoch.set(gate.epoch().unwrap_or(-1));
        self.terms.set(gate.terms_started() as i64);
        self.members.set(gate.members().len() as i64);
    }

    /// Counts one meta request and refreshes the table gauges.
    pub fn observe(
        &self,
        request: &Request,
        elapsed: Duration,
        response: &markab_wire::Response,
        data: &crate::meta::state::MetaData,
    ) {
        let op = request.name();
        self.requests.with_label_values(&[op]).inc();
        self.latency
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        if let Err(error) = response {
            self.errors
                .with_label_values(&[op, error.code.name()])
                .inc();
        }
        self.tables.set(data.tables.len() as i64);
        let partitions: i64 = data
            .tables
            .values()
            .map(|table| i64::from(table.partition_count))
            .sum();
        self.partitions.set(partitions);
    }
}

impl MetaMetrics {
    /// Brings the placement gauges and the balancer's counters up to
    /// `state` at `now_ms` (meta's actor calls it once a second: the
    /// counts walk every partition).
    pub fn observe_placement(&self, state: &crate::meta::state::MetaState, now_ms: u64) {
        for gauge in [
            &self.node_replicas,
            &self.node_primaries,
            &self.shard_replicas,
            &self.shard_primaries,
        ] {
            gauge.reset();
        }
        for info in state.node_infos(now_ms) {
            let node = info.node.as_str();
            self.node_replicas
                .with_label_values(&[node])
                .set(i64::from(info.replica_count));
            self.node_primaries
                .with_label_values(&[node])
                .set(i64::from(info.primary_count));
            for (shard, (replicas, primaries)) in info
                .shard_replica_counts
                .iter()
                .zip(&info.shard_primary_counts)
                .enumerate()
            {
                let shard = shard.to_string();
                self.shard_replicas
                    .with_label_values(&[node, shard.as_str()])
                    .set(i64::from(*replicas));
                self.shard_primaries
                    .with_label_values(&[node, shard.as_str()])
                    .set(i64::from(*primaries));
            }
        }
        for ((kind, result), total) in state.finished_moves() {
            let counter = self.moves.with_label_values(&[kind, result]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.moves_in_progress.set(state.moves().len() as i64);
        let data = state.data();
        for status in ["running", "complete", "deleting", "failed"] {
            let count = data
                .backups
                .values()
                .filter(|backup| {
                    let shown = if backup.expired {
                        "deleting"
                    } else {
                        backup.status.name()
                    };
                    shown == status
                })
                .count();
            self.backups.with_label_values(&[status]).set(count as i64);
        }
        self.backup_policies.set(data.backup_policies.len() as i64);
        self.observe_dups(state);
    }

    /// The duplication gauges, from what meta holds and heard.
    fn observe_dups(&self, state: &crate::meta::state::MetaState) {
        for status in ["running", "paused", "failed"] {
            let count = state
                .data()
                .dups
                .values()
                .filter(|dup| dup.status.name() == status)
                .count();
            self.dups.with_label_values(&[status]).set(count as i64);
        }
        for gauge in &self.dup_partition {
            gauge.reset();
        }
        for progress in state.dup_progress() {
            let labels = [
                progress.dup_id.to_string(),
                progress.table.clone(),
                progress.partition_index.to_string(),
            ];
            let labels = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
            let report = progress.report.unwrap_or_default();
            let values = [
                progress.confirmed,
                (report.committed_decree - progress.confirmed.max(0)).max(0),
                report.lag_ms as i64,
                report.shipped_records as i64,
                report.shipped_bytes as i64,
                report.errors as i64,
            ];
            for (gauge, value) in self.dup_partition.iter().zip(values) {
                gauge.with_label_values(&labels).set(value);
            }
        }
    }
}

/// Renders a registry in Prometheus's text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("text encoding of gathered metrics");
    text
}

/// Serves `GET /metrics` for `registry` on `address` from a thread of its
/// own; returns the bound address (useful with port 0).
pub fn serve(registry: Registry, address: SocketAddr) -> anyhow::Result<SocketAddr> {
    let server = tiny_http::Server::http(address)
        .map_err(|error| anyhow::anyhow!("cannot serve metrics on {address}: {error}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("metrics listener has no IP address"))?;
    std::thread::Builder::new()
        .name("markab-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4"[..],
                    )
                    .expect("static header");
                    tiny_http::Response::from_data(render(&registry)).with_header(header)
                } else {
                    tiny_http::Response::from_data(b"see /metrics\n".to_vec()).with_status_code(404)
                };
                // A client that went away is not our problem.
                let _ = request.respond(response);
            }
        })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Observed requests, errors and flushes show up in the rendered text
    // with their shard and operation labels.
    #[test]
    fn observations_render_with_labels() {
        let metrics = NodeMetrics::new();
        let shard = metrics.shard(1);
        let get = operation_index(&Request::Get(markab_wire::Key::new("h", "s")));
        assert_eq!(OPERATIONS[get], "get");
        shard.observe(get, Duration::from_micros(150), None);
        shard.observe(get, Duration::from_micros(300), Some(ErrorCode::NotFound));
        shard.observe_flush(&FlushSample {
            records: 12,
            bytes: 4096,
            write_us: 40,
            sync_us: 250,
        });
        shard.in_flight.set(3);
        let text = String::from_utf8(render(&metrics.registry)).unwrap();
        assert!(
            text.contains("markab_requests_total{op=\"get\",shard=\"1\"} 2"),
            "{text}"
        );
        assert!(text
            .contains("markab_request_errors_total{code=\"NOT_FOUND\",op=\"get\",shard=\"1\"} 1"));
        assert!(text.contains("markab_request_latency_seconds_count{op=\"get\",shard=\"1\"} 2"));
        assert!(text.contains("markab_log_flush_records_sum{shard=\"1\"} 12"));
        assert!(text.contains("markab_log_fsync_seconds_count{shard=\"1\"} 1"));
        assert!(text.contains("markab_shard_requests_in_flight{shard=\"1\"} 3"));
    }

    // The endpoint answers /metrics over real HTTP and 404 elsewhere.
    #[test]
    fn serves_metrics_over_http() {
        use std::io::{Read, Write};
        let metrics = NodeMetrics::new();
        metrics.shard(0).in_flight.set(7);
        let address = serve(metrics.registry.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let fetch = |path: &str| {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        };
        let answer = fetch("/metrics");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
        assert!(answer.contains("markab_shard_requests_in_flight{shard=\"0\"} 7"));
        assert!(fetch("/nope").contains(" 404 "));
    }
}

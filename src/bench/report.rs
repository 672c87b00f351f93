//! What a run prints: the environment header, the per-operation table, the
//! interval series, and one JSON line per phase (docs/bench.md, "Output").

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::driver::{OpStats, PhaseResult};
use super::workload::{Operation, Workload};

/// The prefix of the JSON line on stdout.
pub const JSON_PREFIX: &str = "BENCH_JSON ";
/// The percentiles reported, as quantiles and their labels.
pub const PERCENTILES: [(f64, &str); 5] = [
    (0.50, "p50"),
    (0.90, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
];

/// Where and how a run ran; compare runs only when these match.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Environment {
    /// `git rev-parse --short HEAD` of the working directory, or the
    /// build-time `MARKAB_GIT_COMMIT`, or `unknown`.
    pub commit: String,
    /// `release` or `debug`.
    pub build_profile: String,
    pub cpu_model: String,
    pub cpu_count: usize,
    pub kernel: String,
    /// The target URL.
    pub target: String,
    pub table: String,
    /// Shards per node (Markab only), e.g. `[2, 2, 2]`.
    pub shards_per_node: Vec<usize>,
    pub replicas: Option<u32>,
    pub partitions: Option<u32>,
    pub workload: String,
    pub distribution: String,
    pub fields: u32,
    pub field_bytes: u32,
    /// Bytes of one record's values.
    pub value_bytes: u64,
    pub records: u64,
    pub connections: usize,
    pub in_flight: usize,
    /// Open-loop rate, ops/s; `None` in closed loop.
    pub target_rate_ops_s: Option<f64>,
}

fn git_commit() -> String {
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty());
    from_git
        .or_else(|| option_env!("MARKAB_GIT_COMMIT").map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Environment {
    /// The local facts (commit, profile, CPU, kernel) and the workload's;
    /// cluster facts are filled in by the caller.
    pub fn detect(workload: &Workload) -> Environment {
        Environment {
            commit: git_commit(),
            build_profile: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
            cpu_model: cpu_model(),
            cpu_count: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            workload: workload.name.name().into(),
            distribution: workload.distribution.name().into(),
            fields: workload.field_count,
            field_bytes: workload.field_bytes,
            value_bytes: workload.record_bytes(),
            records: workload.record_count,
            ..Environment::default()
        }
    }

    /// The header printed before a run.
    pub fn header_text(&self) -> String {
        let optional = |value: Option<u32>| value.map_or("-".to_string(), |v| v.to_string());
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# markab bench  commit {}  build {}  cpu {} x {}  kernel {}",
            self.commit, self.build_profile, self.cpu_count, self.cpu_model, self.kernel
        );
        let _ = writeln!(
            text,
            "# target {}  table {}  shards/node {:?}  replicas {}  partitions {}",
            self.target,
            self.table,
            self.shards_per_node,
            optional(self.replicas),
            optional(self.partitions)
        );
        let _ = writeln!(
            text,
            "# workload {}  distribution {}  records {}  fields {} x {} B (value {} B)  \
             connections {} x in-flight {}  rate {}",
            self.workload,
            self.distribution,
            self.records,
            self.fields,
            self.field_bytes,
            self.value_bytes,
            self.connections,
            self.in_flight,
            self.target_rate_ops_s
                .map_or("closed loop".to_string(), |rate| format!("{rate:.0} ops/s"))
        );
        text
    }
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    let mut object = serde_json::Map::new();
    let empty = histogram.is_empty();
    object.insert("min".into(), json!(if empty { 0 } else { histogram.min() }));
    object.insert(
        "mean".into(),
        json!(if empty { 0.0 } else { histogram.mean() }),
    );
    for (quantile, label) in PERCENTILES {
        object.insert(label.into(), json!(histogram.value_at_quantile(quantile)));
    }
    object.insert("max".into(), json!(histogram.max()));
    Value::Object(object)
}

fn stats_json(stats: &OpStats, runtime_s: f64) -> Value {
    json!({
        "count": stats.count,
        "ops_per_s": if runtime_s > 0.0 { stats.count as f64 / runtime_s } else { 0.0 },
        "errors": stats.errors,
        "service_us": latency_json(&stats.service_us),
        "response_us": latency_json(&stats.response_us),
    })
}

/// The JSON object of one phase (printed on one line).
pub fn phase_json(environment: &Environment, result: &PhaseResult) -> Value {
    let runtime_s = result.runtime.as_secs_f64();
    let mut operations = serde_json::Map::new();
    for operation in Operation::ALL {
        let stats = result.of(operation);
        if stats.count > 0 {
            operations.insert(operation.name().into(), stats_json(stats, runtime_s));
        }
    }
    json!({
        "phase": result.phase.name(),
        "mode": result.mode.name(),
        "environment": environment,
        "runtime_ms": result.runtime.as_millis() as u64,
        "throughput_ops_s": result.throughput_ops_s(),
        "overall": stats_json(&result.overall, runtime_s),
        "operations": operations,
        "intervals": result.intervals,
    })
}

fn table_row(text: &mut String, name: &str, series: &str, stats: &OpStats, runtime_s: f64) {
    let histogram = if series == "service" {
        &stats.service_us
    } else {
        &stats.response_us
    };
    let empty = histogram.is_empty();
    let _ = write!(
        text,
        "{:<18} {:<8} {:>10} {:>11.0} {:>8} {:>9.0}",
        name,
        series,
        stats.count,
        if runtime_s > 0.0 {
            stats.count as f64 / runtime_s
        } else {
            0.0
        },
        if empty { 0 } else { histogram.min() },
        if empty { 0.0 } else { histogram.mean() },
    );
    for (quantile, _) in PERCENTILES {
        let _ = write!(text, " {:>8}", histogram.value_at_quantile(quantile));
    }
    let _ = writeln!(text, " {:>9}", histogram.max());
}

/// The human-readable summary of one phase: per operation and overall,
/// service and response time rows (µs), then errors by code.
pub fn phase_text(result: &PhaseResult) -> String {
    let runtime_s = result.runtime.as_secs_f64();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "[{}] {} loop: {} ops in {:.3} s = {:.0} ops/s, {} errors",
        result.phase.name(),
        result.mode.name(),
        result.overall.count,
        runtime_s,
        result.throughput_ops_s(),
        result.overall.error_count()
    );
    let _ = write!(
        text,
        "{:<18} {:<8} {:>10} {:>11} {:>8} {:>9}",
        "operation", "latency", "count", "ops/s", "min_us", "mean_us"
    );
    for (_, label) in PERCENTILES {
        let _ = write!(text, " {label:>8}");
    }
    let _ = writeln!(text, " {:>9}", "max_us");
    let mut rows: Vec<(&str, &OpStats)> = Operation::ALL
        .iter()
        .map(|operation| (operation.name(), result.of(*operation)))
        .filter(|(_, stats)| stats.count > 0)
        .collect();
    rows.push(("OVERALL", &result.overall));
    for (name, stats) in &rows {
        table_row(&mut text, name, "service", stats, runtime_s);
        table_row(&mut text, name, "response", stats, runtime_s);
    }
    for (name, stats) in &rows {
        for (code, count) in &stats.errors {
            let _ = writeln!(text, "errors {name} {code}: {count}");
        }
    }
    text
}

/// The one-second series as text lines.
pub fn intervals_text(result: &PhaseResult) -> String {
    let mut text =
        String::from("second      count     ops/s  mean_us   p50_us   p99_us   max_us errors\n");
    for sample in &result.intervals {
        let _ = writeln!(
            text,
            "{:>6} {:>10} {:>9.0} {:>8.0} {:>8} {:>8} {:>8} {:>6}",
            sample.second,
            sample.count,
            sample.ops_per_s,
            sample.response_us_mean,
            sample.response_us_p50,
            sample.response_us_p99,
            sample.response_us_max,
            sample.errors
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::driver::{LoopMode, Phase};
    use crate::bench::workload::WorkloadName;
    use std::time::Duration;

    fn result() -> PhaseResult {
        let mut operations: [OpStats; 5] = Default::default();
        let mut overall = OpStats::new();
        for value in 1..=100u64 {
            let latency = Duration::from_micros(value * 10);
            let error = (value % 50 == 0).then_some("TIMEOUT");
            operations[Operation::Read.index()].record(latency, latency, error);
            overall.record(latency, latency, error);
        }
        PhaseResult {
            phase: Phase::Run,
            mode: LoopMode::Closed,
            operations,
            overall,
            runtime: Duration::from_secs(2),
            intervals: Vec::new(),
        }
    }

    // Proves the JSON line carries counts, throughput, percentiles and
    // errors exactly as recorded, and only for operations that ran.
    #[test]
    fn json_reports_recorded_values() {
        let environment = Environment::detect(&Workload::core(WorkloadName::C, 10, 100));
        let value = phase_json(&environment, &result());
        let line = value.to_string();
        assert!(!line.contains('\n'));
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["overall"]["count"], 100);
        assert_eq!(parsed["throughput_ops_s"], 50.0);
        assert_eq!(parsed["operations"]["READ"]["service_us"]["min"], 10);
        assert_eq!(parsed["operations"]["READ"]["service_us"]["max"], 1000);
        assert_eq!(parsed["operations"]["READ"]["service_us"]["p50"], 500);
        assert_eq!(parsed["operations"]["READ"]["errors"]["TIMEOUT"], 2);
        assert!(parsed["operations"].get("UPDATE").is_none());
        assert_eq!(parsed["environment"]["workload"], "c");
        assert_eq!(parsed["environment"]["fields"], 10);
    }

    // Proves the text table has a row pair per operation that ran plus
    // OVERALL, and lists errors by code.
    #[test]
    fn text_table_lists_rows_and_errors() {
        let text = phase_text(&result());
        assert!(text.contains("READ "));
        assert!(text.contains("OVERALL"));
        assert!(!text.contains("UPDATE"));
        assert!(text.contains("errors READ TIMEOUT: 2"));
        assert_eq!(
            text.lines()
                .filter(|line| line.contains("response"))
                .count(),
            2
        );
        let header =
            Environment::detect(&Workload::core(WorkloadName::Pegasus, 10, 100)).header_text();
        assert!(header.contains("fields 1 x 500 B"));
        assert!(header.contains("build release") || header.contains("build debug"));
    }
}

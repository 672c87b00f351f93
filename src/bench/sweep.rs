//! Throughput sweep: a closed-loop run finds the peak, then open-loop runs
//! at 10 %, 20 %, … 100 % of it measure p99 response time at each rate.
//! Every run's JSON line goes to `<out>.json`; the p99-versus-throughput
//! plot to `<out>.svg`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plotters::prelude::*;

use super::driver::{run_phase, DriverConfig, DriverError, LoopMode, Phase, PhaseResult};
use super::report::{phase_json, phase_text, Environment, JSON_PREFIX};
use super::target::Target;
use super::workload::{InsertSequence, Workload};

/// The sweep's steps, in percent of the measured peak.
pub const SWEEP_PERCENTS: [u32; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
/// How long each open-loop step runs when `--duration-s` is not given.
pub const STEP_DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// Plot size in pixels.
pub const PLOT_SIZE: (u32, u32) = (900, 560);

/// Why a sweep failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("the peak run completed no operations")]
    NoPeak,
}

/// One point of the sweep.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SweepPoint {
    /// Percent of the peak this step aimed at.
    pub percent: u32,
    pub target_rate_ops_s: f64,
    /// What the step achieved.
    pub throughput_ops_s: f64,
    pub response_us_p99: u64,
    pub service_us_p99: u64,
    pub errors: u64,
}

/// `<out>.json` and `<out>.svg`.
pub fn output_paths(out: &Path) -> (PathBuf, PathBuf) {
    let mut json = out.as_os_str().to_owned();
    json.push(".json");
    let mut svg = out.as_os_str().to_owned();
    svg.push(".svg");
    (PathBuf::from(json), PathBuf::from(svg))
}

/// Runs the sweep over already-loaded data. `base` gives in-flight depth,
/// seed, progress and the operation bound of each step; its mode and phase
/// are overridden. Prints each step's table and JSON line to stdout.
pub async fn run_sweep(
    targets: &[Arc<dyn Target>],
    workload: Arc<Workload>,
    inserts: Arc<InsertSequence>,
    base: &DriverConfig,
    environment: &Environment,
    out: &Path,
) -> Result<Vec<SweepPoint>, SweepError> {
    let (json_path, svg_path) = output_paths(out);
    let io_error = |source| SweepError::Io {
        path: json_path.clone(),
        source,
    };
    let mut json_file = std::fs::File::create(&json_path).map_err(io_error)?;
    let step_duration = base.duration.unwrap_or(STEP_DURATION_DEFAULT);
    let mut emit = |environment: &Environment, result: &PhaseResult| -> Result<(), SweepError> {
        let line = phase_json(environment, result).to_string();
        print!("{}", phase_text(result));
        println!("{JSON_PREFIX}{line}");
        writeln!(json_file, "{line}").map_err(io_error)
    };
    let peak_config = DriverConfig {
        phase: Phase::Run,
        mode: LoopMode::Closed,
        duration: Some(step_duration),
        ..base.clone()
    };
    let peak = run_phase(targets, workload.clone(), inserts.clone(), &peak_config).await?;
    emit(environment, &peak)?;
    let peak_ops_s = peak.throughput_ops_s();
    if peak.overall.count == 0 || peak_ops_s <= 0.0 {
        return Err(SweepError::NoPeak);
    }
    let mut points = Vec::with_capacity(SWEEP_PERCENTS.len());
    for percent in SWEEP_PERCENTS {
        let rate_ops_s = peak_ops_s * f64::from(percent) / 100.0;
        let operations =
            ((rate_ops_s * step_duration.as_secs_f64()) as u64).clamp(1, base.operations.max(1));
        let config = DriverConfig {
            phase: Phase::Run,
            mode: LoopMode::Open { rate_ops_s },
            operations,
            // An overloaded step still ends: twice its planned length.
            duration: Some(step_duration * 2),
            ..base.clone()
        };
        let result = run_phase(targets, workload.clone(), inserts.clone(), &config).await?;
        let step_environment = Environment {
            target_rate_ops_s: Some(rate_ops_s),
            ..environment.clone()
        };
        emit(&step_environment, &result)?;
        points.push(SweepPoint {
            percent,
            target_rate_ops_s: rate_ops_s,
            throughput_ops_s: result.throughput_ops_s(),
            response_us_p99: result.overall.response_us.value_at_quantile(0.99),
            service_us_p99: result.overall.service_us.value_at_quantile(0.99),
            errors: result.overall.error_count(),
        });
    }
    write_plot(&svg_path, environment, &points)?;
    Ok(points)
}

/// Draws p99 response and service time (µs) against achieved throughput.
pub fn write_plot(
    path: &Path,
    environment: &Environment,
    points: &[SweepPoint],
) -> Result<(), SweepError> {
    let plot_error = |error: &dyn std::fmt::Display| SweepError::Plot {
        path: path.to_owned(),
        message: error.to_string(),
    };
    let x_max = points
        .iter()
        .map(|point| point.throughput_ops_s)
        .fold(1.0, f64::max)
        * 1.05;
    let y_max = points
        .iter()
        .map(|point| point.response_us_p99.max(point.service_us_p99) as f64)
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| plot_error(&error))?;
    let caption = format!(
        "markab bench {} workload {} ({} x {} B): p99 vs throughput",
        environment.target, environment.workload, environment.fields, environment.field_bytes
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|error| plot_error(&error))?;
    chart
        .configure_mesh()
        .x_desc("throughput (ops/s)")
        .y_desc("p99 latency (us)")
        .draw()
        .map_err(|error| plot_error(&error))?;
    let response: Vec<(f64, f64)> = points
        .iter()
        .map(|point| (point.throughput_ops_s, point.response_us_p99 as f64))
        .collect();
    let service: Vec<(f64, f64)> = points
        .iter()
        .map(|point| (point.throughput_ops_s, point.service_us_p99 as f64))
        .collect();
    chart
        .draw_series(LineSeries::new(response, RED.stroke_width(2)))
        .map_err(|error| plot_error(&error))?
        .label("p99 response time (from intended send)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(service, BLUE.stroke_width(2)))
        .map_err(|error| plot_error(&error))?
        .label("p99 service time")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| plot_error(&error))?;
    root.present().map_err(|error| plot_error(&error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the plot is written as an SVG holding both series' labels.
    #[test]
    fn writes_svg_plot() {
        let dir = tempfile::tempdir().unwrap();
        let (json_path, svg_path) = output_paths(&dir.path().join("sweep"));
        assert!(json_path.ends_with("sweep.json"));
        let points: Vec<SweepPoint> = SWEEP_PERCENTS
            .iter()
            .map(|&percent| SweepPoint {
                percent,
                target_rate_ops_s: f64::from(percent) * 100.0,
                throughput_ops_s: f64::from(percent) * 99.0,
                response_us_p99: 100 + u64::from(percent * percent),
                service_us_p99: 100 + u64::from(percent),
                errors: 0,
            })
            .collect();
        write_plot(&svg_path, &Environment::default(), &points).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("p99 service time"));
        assert!(svg.contains("polyline") || svg.contains("path"));
    }
}

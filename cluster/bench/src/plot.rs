//! SVG plots of a sweep: `throughput.svg` (ops/s against clients, both
//! axes logarithmic) and
//! `latency.svg` (p50, p99 and p99.9 against clients), one panel per
//! operation and value size, EventStore in blue, etcd in red, the baseline
//! (EventStore's health check) in grey.
//!
//! plotters draws with its SVG backend only. It measures text with a font
//! registered here (DejaVu Sans, embedded by the `dejavu` crate, through
//! plotters' pure-Rust `ab_glyph` feature), so no font or system library is
//! read at run time; the SVG itself names the family (`sans-serif`) and its
//! viewer draws the text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plan::{Op, System};
use crate::report::{size_label, Report};

const FONT: &str = "sans-serif";
const ES_COLOR: RGBColor = RGBColor(31, 100, 200);
const ETCD_COLOR: RGBColor = RGBColor(210, 40, 40);
const BASE_COLOR: RGBColor = RGBColor(120, 120, 120);
const PANEL_W: u32 = 420;
const PANEL_H: u32 = 320;
const TITLE_H: u32 = 50;

fn register_font() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ensure!(loaded, "the embedded DejaVu Sans font could not be parsed");
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// A latency axis label: `0.25`, `2.5`, `40`.
fn ms_label(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn color(system: System) -> RGBColor {
    match system {
        System::Eventstore => ES_COLOR,
        System::Etcd => ETCD_COLOR,
    }
}

/// The operations and value sizes that have cells, in sweep order.
fn panels(report: &Report) -> (Vec<Op>, Vec<usize>) {
    let ops: Vec<Op> = [Op::Save, Op::Load, Op::Delete]
        .into_iter()
        .filter(|op| report.cells.iter().any(|c| c.op == *op))
        .collect();
    (ops, report.settings.value_sizes.clone())
}

/// (clients, y) for `system`'s cells of `op` at `size` that succeeded at
/// least once, sorted by clients.
fn series(
    report: &Report,
    system: System,
    op: Op,
    size: usize,
    y: impl Fn(&crate::report::CellReport) -> f64,
) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = report
        .cells
        .iter()
        .filter(|c| c.system == system && c.op == op && c.value_bytes == size && c.ok > 0)
        .map(|c| (c.clients as f64, y(c)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn x_range(report: &Report) -> std::ops::Range<f64> {
    let lo = report
        .settings
        .clients
        .iter()
        .copied()
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let hi = report
        .settings
        .clients
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    (lo * 0.7)..(hi * 1.4)
}

/// Draws both plots into `dir`; returns their paths.
pub fn write_plots(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let (ops, sizes) = panels(report);
    if ops.is_empty() || sizes.is_empty() {
        return Ok(Vec::new());
    }
    let w = PANEL_W * sizes.len() as u32;
    let h = TITLE_H + PANEL_H * ops.len() as u32;
    let throughput = dir.join("throughput.svg");
    {
        let root = SVGBackend::new(&throughput, (w, h)).into_drawing_area();
        draw_throughput(report, &root, &ops, &sizes)
            .with_context(|| format!("drawing {}", throughput.display()))?;
        root.present().map_err(plot_err)?;
    }
    let latency = dir.join("latency.svg");
    {
        let root = SVGBackend::new(&latency, (w, h)).into_drawing_area();
        draw_latency(report, &root, &ops, &sizes)
            .with_context(|| format!("drawing {}", latency.display()))?;
        root.present().map_err(plot_err)?;
    }
    Ok(vec![throughput, latency])
}

fn draw_throughput(
    report: &Report,
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    ops: &[Op],
    sizes: &[usize],
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let body = root
        .titled(
            "ops/s (log scale) against closed-loop clients (3 nodes each; grey: EventStore health check)",
            (FONT, 20),
        )
        .map_err(plot_err)?;
    let panels = body.split_evenly((ops.len(), sizes.len()));
    let base: Vec<(f64, f64)> = {
        let mut b: Vec<(f64, f64)> = report
            .cells
            .iter()
            .filter(|c| c.op == Op::Baseline && c.ok > 0)
            .map(|c| (c.clients as f64, c.ops_per_sec))
            .collect();
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
        b
    };
    for (i, area) in panels.iter().enumerate() {
        let (op, size) = (ops[i / sizes.len()], sizes[i % sizes.len()]);
        let lines: Vec<(System, Vec<(f64, f64)>)> = [System::Eventstore, System::Etcd]
            .into_iter()
            .map(|s| (s, series(report, s, op, size, |c| c.ops_per_sec)))
            .collect();
        let ys = || {
            lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|p| p.1))
                .chain(base.iter().map(|p| p.1))
        };
        let lowest = ys().fold(f64::INFINITY, f64::min);
        let y_min = if lowest.is_finite() {
            lowest.max(1.0)
        } else {
            1.0
        };
        let y_max = ys().fold(0.0_f64, f64::max).max(y_min * 2.0);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} {}", op.label(), size_label(size)), (FONT, 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(
                x_range(report).log_scale(),
                ((y_min * 0.7)..(y_max * 1.5)).log_scale(),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc("ops/s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 11))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(base.clone(), BASE_COLOR.stroke_width(1)))
            .map_err(plot_err)?
            .label("baseline")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BASE_COLOR));
        for (system, pts) in lines {
            let c = color(system);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(plot_err)?
                .label(system.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 11))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

fn draw_latency(
    report: &Report,
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    ops: &[Op],
    sizes: &[usize],
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let body = root
        .titled(
            "latency (ms, log scale) against clients: p50 solid, p99 dashed, p99.9 dotted",
            (FONT, 20),
        )
        .map_err(plot_err)?;
    let panels = body.split_evenly((ops.len(), sizes.len()));
    type Pick = fn(&crate::report::CellReport) -> f64;
    let quantiles: [(&str, Pick); 3] = [
        ("p50", |c| c.p50_ms),
        ("p99", |c| c.p99_ms),
        ("p99.9", |c| c.p999_ms),
    ];
    for (i, area) in panels.iter().enumerate() {
        let (op, size) = (ops[i / sizes.len()], sizes[i % sizes.len()]);
        let mut lines = Vec::new();
        for system in [System::Eventstore, System::Etcd] {
            for (q, (name, pick)) in quantiles.iter().enumerate() {
                lines.push((system, q, *name, series(report, system, op, size, pick)));
            }
        }
        let ys = || lines.iter().flat_map(|l| l.3.iter().map(|p| p.1));
        let lowest = ys().fold(f64::INFINITY, f64::min);
        let y_min = if lowest.is_finite() {
            lowest.max(0.01)
        } else {
            0.01
        };
        let y_max = ys().fold(0.0_f64, f64::max).max(y_min * 2.0);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} {}", op.label(), size_label(size)), (FONT, 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(
                x_range(report).log_scale(),
                ((y_min * 0.7)..(y_max * 1.5)).log_scale(),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc("ms")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| ms_label(*y))
            .label_style((FONT, 11))
            .draw()
            .map_err(plot_err)?;
        for (system, q, name, pts) in lines {
            let c = color(system);
            let style = c.stroke_width(if q == 0 { 2 } else { 1 });
            let label = format!("{} {name}", system.label());
            let drawn = match q {
                0 => chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(plot_err)?,
                1 => chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                    .map_err(plot_err)?,
                _ => chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 2, 3, style))
                    .map_err(plot_err)?,
            };
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 2, c.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 10))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsync::FsyncStats;
    use crate::report::{CellReport, Settings};

    fn cell(system: System, op: Op, clients: usize, value_bytes: usize, ops: f64) -> CellReport {
        CellReport {
            system,
            op,
            clients,
            value_bytes,
            seconds: 1.0,
            ok: ops as u64,
            errors: 0,
            errors_by_code: Default::default(),
            ops_per_sec: ops,
            p50_ms: 100.0 / ops,
            p99_ms: 400.0 / ops,
            p999_ms: 800.0 / ops,
            max_ms: 900.0 / ops,
        }
    }

    #[test]
    fn both_plots_have_a_panel_per_op_and_size_and_a_line_per_series() {
        let mut cells = Vec::new();
        for c in [1, 16, 64] {
            cells.push(cell(System::Eventstore, Op::Baseline, c, 0, 9000.0));
            for size in [128, 65536] {
                cells.push(cell(
                    System::Eventstore,
                    Op::Save,
                    c,
                    size,
                    100.0 * c as f64,
                ));
                cells.push(cell(System::Etcd, Op::Save, c, size, 50.0 * c as f64));
            }
        }
        let report = Report {
            settings: Settings {
                duration_s: 1.0,
                warmup_s: 0.0,
                clients: vec![1, 16, 64],
                value_sizes: vec![128, 65536],
                keys: 10,
                ttl_s: 600,
                eventstore: vec![],
                etcd: vec![],
                cpus: 2,
                note: String::new(),
            },
            fsync: FsyncStats {
                dir: String::new(),
                write_bytes: 4096,
                count: 1,
                per_sec: 1.0,
                p50_ms: 1.0,
                p99_ms: 1.0,
                p999_ms: 1.0,
                max_ms: 1.0,
            },
            cells,
        };
        let dir = tempfile::tempdir().unwrap();
        let paths = write_plots(&report, dir.path()).unwrap();
        assert_eq!(paths.len(), 2);
        let t = std::fs::read_to_string(&paths[0]).unwrap();
        for caption in [
            "save 128 B",
            "save 64 KiB",
            "EventStore",
            "etcd",
            "baseline",
        ] {
            assert!(t.contains(caption), "throughput.svg lacks {caption:?}");
        }
        assert!(!t.contains("load 128 B"), "no Load cells, so no Load panel");
        // In each of the two panels, one line of 3 points (1, 16, 64
        // clients) per series: baseline, EventStore, etcd.
        let three_point_lines = |color: &str| {
            t.lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(color))
                .filter(|l| {
                    let pts = l.split("points=\"").nth(1).unwrap_or("");
                    pts.trim_end_matches("\"/>").split_whitespace().count() == 3
                })
                .count()
        };
        assert_eq!(three_point_lines("#1F64C8"), 2, "EventStore");
        assert_eq!(three_point_lines("#D22828"), 2, "etcd");
        assert_eq!(three_point_lines("#787878"), 2, "baseline");
        let l = std::fs::read_to_string(&paths[1]).unwrap();
        for label in ["EventStore p99.9", "etcd p50"] {
            assert!(l.contains(label), "latency.svg lacks {label:?}");
        }
    }
}

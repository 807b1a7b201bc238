//! The sweep's results: the JSON report (every cell) and the Markdown
//! table with the ratios EventStore/etcd and EventStore/baseline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cell::CellResult;
use crate::fsync::FsyncStats;
use crate::plan::{Op, System};

/// Failed requests of one code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorCount {
    /// How many.
    pub count: u64,
    /// One message.
    pub sample: String,
}

/// One measured cell in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellReport {
    /// The system measured.
    pub system: System,
    /// The operation.
    pub op: Op,
    /// Closed-loop clients.
    pub clients: usize,
    /// Value size in bytes (0: the baseline).
    pub value_bytes: usize,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Successful requests in the window.
    pub ok: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Failed requests by code (gRPC code names, or TRANSPORT, CLIENT,
    /// WRONG_VALUE).
    pub errors_by_code: BTreeMap<String, ErrorCount>,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Median latency of successful requests, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

impl From<&CellResult> for CellReport {
    fn from(r: &CellResult) -> Self {
        CellReport {
            system: r.spec.system,
            op: r.spec.op,
            clients: r.spec.clients,
            value_bytes: r.spec.value_bytes,
            seconds: r.elapsed.as_secs_f64(),
            ok: r.ok,
            errors: r.errors(),
            errors_by_code: r
                .failures
                .iter()
                .map(|(code, (n, sample))| {
                    (
                        code.clone(),
                        ErrorCount {
                            count: *n,
                            sample: sample.clone(),
                        },
                    )
                })
                .collect(),
            ops_per_sec: r.ops_per_sec(),
            p50_ms: r.quantile_ms(0.5),
            p99_ms: r.quantile_ms(0.99),
            p999_ms: r.quantile_ms(0.999),
            max_ms: r.latency_us.max() as f64 / 1000.0,
        }
    }
}

/// How the sweep ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Measured window per cell, seconds.
    pub duration_s: f64,
    /// Warm-up per cell (not measured), seconds.
    pub warmup_s: f64,
    /// Client counts swept.
    pub clients: Vec<usize>,
    /// Value sizes swept, bytes.
    pub value_sizes: Vec<usize>,
    /// Distinct keys.
    pub keys: usize,
    /// TTL of every Save (etcd: of the shared lease), seconds.
    pub ttl_s: i32,
    /// EventStore client ports.
    pub eventstore: Vec<String>,
    /// etcd client URLs' `HOST:PORT`.
    pub etcd: Vec<String>,
    /// CPUs the machine shows.
    pub cpus: usize,
    /// Free text from `--note`, e.g. what else ran on the machine.
    pub note: String,
}

/// The whole report, as written to `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// How the sweep ran.
    pub settings: Settings,
    /// The disk's fsync latency, measured before the sweep.
    pub fsync: FsyncStats,
    /// Every cell, in the order they ran.
    pub cells: Vec<CellReport>,
}

/// `128 B`, `1 KiB`, `64 KiB`.
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Parses `128`, `128B`, `1KiB`, `64k`, `1MiB` into bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 128, 1KiB, 64KiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use B, KiB or MiB)")),
    };
    Ok(n * mult)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn latencies(c: Option<&CellReport>) -> String {
    match c {
        Some(c) if c.ok > 0 => format!("{:.2} / {:.2} / {:.2}", c.p50_ms, c.p99_ms, c.p999_ms),
        _ => "-".into(),
    }
}

fn ops(c: Option<&CellReport>) -> String {
    c.map(|c| format!("{:.0}", c.ops_per_sec))
        .unwrap_or_else(|| "-".into())
}

fn errors(c: Option<&CellReport>) -> String {
    c.map(|c| c.errors.to_string())
        .unwrap_or_else(|| "-".into())
}

impl Report {
    /// The cell of `system`, `op`, `clients`, `value_bytes`, if measured.
    pub fn cell(
        &self,
        system: System,
        op: Op,
        clients: usize,
        value_bytes: usize,
    ) -> Option<&CellReport> {
        self.cells.iter().find(|c| {
            c.system == system && c.op == op && c.clients == clients && c.value_bytes == value_bytes
        })
    }

    /// The Markdown table: one row per operation, value size and client
    /// count, with both systems' ops/s and p50 / p99 / p99.9, the ratios
    /// EventStore/etcd (ops/s and p99) and EventStore/baseline (ops/s),
    /// and the failed requests of each; the baseline's rows first.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| op | value | clients | EventStore ops/s | etcd ops/s | ES/etcd ops/s | ES/baseline ops/s \
             | EventStore p50 / p99 / p99.9 ms | etcd p50 / p99 / p99.9 ms | ES/etcd p99 | errors ES / etcd |\n",
        );
        out.push_str(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let s = &self.settings;
        for &c in &s.clients {
            if let Some(b) = self.cell(System::Eventstore, Op::Baseline, c, 0) {
                out.push_str(&format!(
                    "| baseline | - | {c} | {} | - | - | 1.00 | {} | - | - | {} / - |\n",
                    ops(Some(b)),
                    latencies(Some(b)),
                    b.errors
                ));
            }
        }
        for op in [Op::Save, Op::Load, Op::Delete] {
            for &size in &s.value_sizes {
                for &c in &s.clients {
                    let es = self.cell(System::Eventstore, op, c, size);
                    let etcd = self.cell(System::Etcd, op, c, size);
                    if es.is_none() && etcd.is_none() {
                        continue;
                    }
                    let base = self.cell(System::Eventstore, Op::Baseline, c, 0);
                    let es_ops = es.map_or(0.0, |x| x.ops_per_sec);
                    let p99 =
                        |x: Option<&CellReport>| x.filter(|x| x.ok > 0).map_or(0.0, |x| x.p99_ms);
                    out.push_str(&format!(
                        "| {} | {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
                        op.label(),
                        size_label(size),
                        ops(es),
                        ops(etcd),
                        ratio(es_ops, etcd.map_or(0.0, |x| x.ops_per_sec)),
                        ratio(es_ops, base.map_or(0.0, |x| x.ops_per_sec)),
                        latencies(es),
                        latencies(etcd),
                        ratio(p99(es), p99(etcd)),
                        errors(es),
                        errors(etcd),
                    ));
                }
            }
        }
        out
    }

    /// The lines above the table: the disk's fsync latency and how the
    /// sweep ran.
    pub fn preamble(&self) -> String {
        let s = &self.settings;
        let f = &self.fsync;
        let mut out = format!(
            "fsync ({} B write + fdatasync, {} rounds in {}): p50 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms ({:.0}/s)\n\n",
            f.write_bytes, f.count, f.dir, f.p50_ms, f.p99_ms, f.p999_ms, f.max_ms, f.per_sec
        );
        out.push_str(&format!(
            "{} s measured per cell after {} s of warm-up; {} keys; TTL {} s; one connection per \
             client, client i to node/member i mod {}; {} CPUs",
            s.duration_s,
            s.warmup_s,
            s.keys,
            s.ttl_s,
            s.eventstore.len().max(s.etcd.len()),
            s.cpus
        ));
        if !s.note.is_empty() {
            out.push_str(&format!("; {}", s.note));
        }
        out.push_str(".\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(system: System, op: Op, clients: usize, value_bytes: usize, ops: f64) -> CellReport {
        CellReport {
            system,
            op,
            clients,
            value_bytes,
            seconds: 2.0,
            ok: (ops * 2.0) as u64,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            ops_per_sec: ops,
            p50_ms: 1000.0 / ops,
            p99_ms: 4000.0 / ops,
            p999_ms: 8000.0 / ops,
            max_ms: 9000.0 / ops,
        }
    }

    fn report(cells: Vec<CellReport>) -> Report {
        Report {
            settings: Settings {
                duration_s: 2.0,
                warmup_s: 1.0,
                clients: vec![1, 16],
                value_sizes: vec![128, 1024],
                keys: 100,
                ttl_s: 600,
                eventstore: vec!["a".into(), "b".into(), "c".into()],
                etcd: vec!["d".into(), "e".into(), "f".into()],
                cpus: 2,
                note: "shared".into(),
            },
            fsync: FsyncStats {
                dir: "/tmp/x".into(),
                write_bytes: 4096,
                count: 10,
                per_sec: 5.0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                p999_ms: 3.0,
                max_ms: 4.0,
            },
            cells,
        }
    }

    fn row<'a>(table: &'a str, start: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{table}"));
        line.trim_matches('|').split('|').map(str::trim).collect()
    }

    #[test]
    fn the_table_divides_eventstore_by_etcd_and_by_the_baseline_of_its_client_count() {
        let r = report(vec![
            cell(System::Eventstore, Op::Baseline, 1, 0, 4000.0),
            cell(System::Eventstore, Op::Baseline, 16, 0, 10000.0),
            cell(System::Eventstore, Op::Save, 16, 1024, 1500.0),
            cell(System::Etcd, Op::Save, 16, 1024, 500.0),
            cell(System::Eventstore, Op::Load, 1, 128, 1000.0),
        ]);
        let t = r.markdown();
        let save = row(&t, "| save | 1 KiB | 16 |");
        assert_eq!(save[3], "1500");
        assert_eq!(save[4], "500");
        assert_eq!(save[5], "3.00", "ES/etcd: {save:?}");
        assert_eq!(save[6], "0.15", "ES/baseline at 16 clients: {save:?}");
        // p99 is 4000/ops: ES 2.67 ms, etcd 8 ms.
        assert_eq!(save[9], "0.33", "{save:?}");
        assert_eq!(save[7], "0.67 / 2.67 / 5.33");
        let load = row(&t, "| load | 128 B | 1 |");
        assert_eq!(load[4], "-", "no etcd cell: {load:?}");
        assert_eq!(load[5], "-");
        assert_eq!(load[6], "0.25", "ES/baseline at 1 client: {load:?}");
        assert_eq!(load[10], "0 / -");
        let base = row(&t, "| baseline | - | 16 |");
        assert_eq!(base[3], "10000");
        // Every measured cell has a row, and no other rows exist.
        assert_eq!(t.lines().count(), 2 + 4);
    }

    #[test]
    fn the_preamble_gives_the_fsync_latency_and_the_note() {
        let p = report(vec![]).preamble();
        assert!(p.contains("p50 1.00 ms, p99 2.00 ms"), "{p}");
        assert!(p.contains("shared"), "{p}");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("128").unwrap(), 128);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert!(parse_size("12x").unwrap_err().contains("unknown unit"));
        assert!(parse_size("KiB").is_err());
        assert_eq!(size_label(128), "128 B");
        assert_eq!(size_label(65536), "64 KiB");
        assert_eq!(size_label(1000), "1000 B");
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let r = report(vec![cell(System::Etcd, Op::Delete, 1, 128, 10.0)]);
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"system\":\"etcd\""), "{j}");
        assert!(j.contains("\"op\":\"delete\""), "{j}");
        let back: Report = serde_json::from_str(&j).unwrap();
        assert_eq!(back.cells, r.cells);
    }
}

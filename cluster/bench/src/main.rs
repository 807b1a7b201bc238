//! `eventstore-compare`: runs the same closed-loop workloads against a
//! running three-node EventStore cluster and a running three-member etcd,
//! alternating between them cell by cell, and writes `results.json`,
//! `table.md`, `throughput.svg` and `latency.svg`. `scripts/bench.sh`
//! starts both clusters and calls it; see the README's Benchmarks section.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use eventstore::cli::client::parse_duration;
use eventstore_bench::cell::{preload, run_cell, CellConfig, CellResult};
use eventstore_bench::driver::{connect_etcd, connect_eventstore, Conn, LeaseKeeper};
use eventstore_bench::plan::{plan, Op, Step, System};
use eventstore_bench::report::{parse_size, size_label, CellReport, Report, Settings};
use eventstore_bench::{fsync, plot};
use indicatif::{ProgressBar, ProgressStyle};

/// Side-by-side benchmark of EventStore and etcd: Save (etcd: Put with a
/// shared lease of the same TTL), Load (linearizable Get) and Delete, over
/// a sweep of client counts and value sizes, with EventStore's health
/// check as the baseline and the disk's fsync latency, all in one run.
#[derive(Debug, Parser)]
#[command(name = "eventstore-compare", version)]
struct Args {
    /// EventStore client ports, HOST:PORT, comma-separated (client i uses
    /// the (i mod n)-th).
    #[arg(long, value_delimiter = ',', required_unless_present = "replot")]
    eventstore: Vec<String>,
    /// etcd client endpoints, HOST:PORT, comma-separated (client i uses the
    /// (i mod n)-th).
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Measure the disk's fsync latency in this directory (put it on the
    /// filesystem of the data directories).
    #[arg(long, required_unless_present = "replot")]
    fsync_dir: Option<PathBuf>,
    /// How long the fsync probe runs.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    fsync_duration: Duration,
    /// Where results.json, table.md and the SVG plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Measured time per cell [default: 3s; --quick: 1s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Unmeasured warm-up per cell, same load [default: 1s; --quick: 0.5s].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Client counts [default: 1,16,64,256; --quick: 1,16].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Value sizes: 128, 1KiB, 64KiB... [default: 128,1KiB,64KiB; --quick: 128,1KiB].
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    value_sizes: Option<Vec<usize>>,
    /// Distinct keys [default: 1000; --quick: 200].
    #[arg(long)]
    keys: Option<usize>,
    /// Operations to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["baseline", "save", "load", "delete"])]
    ops: Vec<Op>,
    /// Systems to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["eventstore", "etcd"])]
    systems: Vec<System>,
    /// TTL of every Save in seconds (etcd: the shared lease's TTL).
    #[arg(long, default_value_t = 600)]
    ttl: i32,
    /// A short sweep for a quick look (defaults marked --quick above).
    #[arg(long)]
    quick: bool,
    /// Free text for the report, e.g. what else ran on the machine.
    #[arg(long, default_value = "")]
    note: String,
    /// Measure nothing: read a results.json written earlier and write its
    /// table.md and plots into --out again.
    #[arg(long, value_name = "RESULTS_JSON")]
    replot: Option<PathBuf>,
}

/// One pool of connections per system; a cell of c clients uses the first c.
struct Pools {
    eventstore: Vec<Conn>,
    etcd: Vec<Conn>,
}

impl Pools {
    fn take(&mut self, system: System) -> &mut Vec<Conn> {
        match system {
            System::Eventstore => &mut self.eventstore,
            System::Etcd => &mut self.etcd,
        }
    }
}

fn summary(r: &CellResult) -> String {
    let s = r.spec;
    let mut line = format!(
        "{:<10} {:>9} {:>4} clients {:<8} {:>8.0} ops/s  p50 {:>7.2}  p99 {:>7.2}  p99.9 {:>7.2} ms",
        s.op.label(),
        if s.op == Op::Baseline {
            "-".to_string()
        } else {
            size_label(s.value_bytes)
        },
        s.clients,
        s.system.label(),
        r.ops_per_sec(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.quantile_ms(0.999),
    );
    for (code, (n, sample)) in &r.failures {
        line.push_str(&format!("\n    {code} x{n}, e.g.: {sample}"));
    }
    line
}

/// Writes `table.md` and the plots of `report` into `out`; prints the table.
fn write_outputs(report: &Report, out: &std::path::Path) -> Result<()> {
    let table = format!("{}\n{}", report.preamble(), report.markdown());
    let md = out.join("table.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    let plots = plot::write_plots(report, out)?;
    println!("{table}");
    eprintln!("bench: wrote {}", md.display());
    for p in plots {
        eprintln!("bench: wrote {}", p.display());
    }
    Ok(())
}

/// `--replot`: redraws the table and plots of an earlier run.
fn replot(json: &std::path::Path, out: &std::path::Path) -> Result<i32> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let report: Report = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a results.json of eventstore-compare",
            json.display()
        )
    })?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating the output directory {}", out.display()))?;
    write_outputs(&report, out)?;
    Ok(0)
}

async fn run(args: Args) -> Result<i32> {
    if let Some(json) = &args.replot {
        return replot(json, &args.out);
    }
    let duration = args.duration.unwrap_or(if args.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    });
    let warmup = args.warmup.unwrap_or(if args.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(1)
    });
    let clients = args.clients.clone().unwrap_or(if args.quick {
        vec![1, 16]
    } else {
        vec![1, 16, 64, 256]
    });
    let value_sizes = args.value_sizes.clone().unwrap_or(if args.quick {
        vec![128, 1024]
    } else {
        vec![128, 1024, 65536]
    });
    let keys = args.keys.unwrap_or(if args.quick { 200 } else { 1000 });
    if clients.is_empty() || clients.contains(&0) {
        bail!("--clients needs one or more counts above 0, got {clients:?}");
    }
    if keys == 0 {
        bail!("--keys must be above 0");
    }
    if args.ttl <= 0 {
        bail!(
            "--ttl must be a positive number of seconds, got {}",
            args.ttl
        );
    }
    let with_etcd = args.systems.contains(&System::Etcd);
    let with_es = args.systems.contains(&System::Eventstore);
    if with_etcd && args.etcd.is_empty() {
        bail!("--etcd is required to measure etcd (or pass --systems eventstore)");
    }

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;

    let dir = args
        .fsync_dir
        .clone()
        .context("--fsync-dir is required to measure")?;
    let fsync_duration = args.fsync_duration;
    let fsync = tokio::task::spawn_blocking(move || fsync::measure(&dir, fsync_duration))
        .await
        .context("the fsync probe panicked")??;
    eprintln!(
        "bench: fsync ({} B + fdatasync in {}): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({:.0}/s)",
        fsync.write_bytes, fsync.dir, fsync.p50_ms, fsync.p99_ms, fsync.p999_ms, fsync.per_sec
    );

    let max_clients = *clients.iter().max().expect("clients is not empty");
    let run_id = eventstore::random::nonzero_u64();
    let mut pools = Pools {
        eventstore: Vec::new(),
        etcd: Vec::new(),
    };
    eprintln!("bench: opening {max_clients} connections to each system...");
    if with_es {
        for i in 0..max_clients {
            let addr = &args.eventstore[i % args.eventstore.len()];
            pools
                .eventstore
                .push(connect_eventstore(addr, format!("cmp{run_id:016x}-{i}")).await?);
        }
    }
    let lease = if with_etcd {
        let keeper = LeaseKeeper::start(&args.etcd[0], i64::from(args.ttl)).await?;
        for i in 0..max_clients {
            let addr = &args.etcd[i % args.etcd.len()];
            pools.etcd.push(connect_etcd(addr, keeper.current()).await?);
        }
        Some(keeper)
    } else {
        None
    };

    let cfg = CellConfig {
        warmup,
        duration,
        keys,
        ttl: args.ttl,
    };
    let steps = plan(&clients, &value_sizes, &args.ops, &args.systems);
    let n_cells = steps.iter().filter(|s| matches!(s, Step::Cell(_))).count();
    let bar = ProgressBar::new(n_cells as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} cells, about {eta} left: {msg}",
        )
        .context("the progress bar template")?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let mut results: Vec<CellReport> = Vec::new();
    let mut no_success = Vec::new();
    for step in steps {
        match step {
            Step::Preload { value_bytes } => {
                for system in [System::Eventstore, System::Etcd] {
                    let pool = pools.take(system);
                    if pool.is_empty() {
                        continue;
                    }
                    bar.set_message(format!(
                        "preloading {keys} keys of {} on {}",
                        size_label(value_bytes),
                        system.label()
                    ));
                    let rest = pool.split_off(pool.len().min(32));
                    let used = preload(std::mem::take(pool), keys, value_bytes, args.ttl).await?;
                    *pool = used;
                    pool.extend(rest);
                }
            }
            Step::Cell(spec) => {
                bar.set_message(format!(
                    "{} {} {} clients on {}",
                    spec.op.label(),
                    size_label(spec.value_bytes),
                    spec.clients,
                    spec.system.label()
                ));
                let pool = pools.take(spec.system);
                let rest = pool.split_off(spec.clients);
                let (result, used) = run_cell(spec, std::mem::take(pool), cfg).await?;
                *pool = used;
                pool.extend(rest);
                bar.println(summary(&result));
                if result.ok == 0 {
                    no_success.push(spec);
                }
                results.push(CellReport::from(&result));
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    drop(lease);

    let report = Report {
        settings: Settings {
            duration_s: duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            clients,
            value_sizes,
            keys,
            ttl_s: args.ttl,
            eventstore: args.eventstore.clone(),
            etcd: args.etcd.clone(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            note: args.note.clone(),
        },
        fsync,
        cells: results,
    };
    let json = args.out.join("results.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).context("encoding the report")? + "\n",
    )
    .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("bench: wrote {}", json.display());
    write_outputs(&report, &args.out)?;
    if !no_success.is_empty() {
        eprintln!("error: these cells completed no request (see the errors above): {no_success:?}");
        return Ok(1);
    }
    Ok(0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

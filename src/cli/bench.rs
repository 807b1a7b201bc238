//! `eventstore bench`: a load generator that measures Save and Load against
//! a running node, and the same transport without Raft or storage (the gRPC
//! health check) as a baseline measured in the same run.
//!
//! Machines are shared and noisy, so absolute numbers mean little from one
//! run to the next; the ratios to the baseline are what to compare.
//!
//! The table has the README's columns (setup, phase, ops/s, p50 ms, p99 ms,
//! ops/s vs baseline, p50 vs baseline); `--json` adds the counts, p99.9 and
//! the maximum. Failed requests are counted by gRPC code, and each code is
//! printed with a sample message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::parse_duration;
use super::connect::{connect, Connected, Port, TlsArgs};
use crate::client::describe_status;
use crate::proto::protob::event_store_client::EventStoreClient;
use crate::proto::protob::{LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType};

/// Flags of `eventstore bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A node's client port: `host:port`, `http://host:port`,
    /// `https://host:port`, `dns:///host:port`, or a host alone for port 8080.
    #[arg(long, env = "EVENTSTORE_SERVER", default_value = "127.0.0.1:8080")]
    pub server: String,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// What the setup column says (default: the server address).
    #[arg(long)]
    pub setup: Option<String>,
    /// How long each phase runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Size of each saved value in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Number of distinct keys (Bridge scope `bench`).
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// TTL in seconds of the saved values.
    #[arg(long, default_value_t = 600)]
    pub ttl: i32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Which phases to run, in order (the baseline always runs first).
    #[arg(long, value_delimiter = ',', default_values = ["save", "load"])]
    pub phases: Vec<PhaseArg>,
}

/// A measured phase besides the baseline.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum PhaseArg {
    /// Save values.
    Save,
    /// Load values (run `save` first, or they are not found).
    Load,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Baseline,
    Save,
    Load,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline (health check)",
            Phase::Save => "save",
            Phase::Load => "load",
        }
    }

    /// The name in the table.
    fn short_name(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Save => "save",
            Phase::Load => "load",
        }
    }
}

/// Failed requests of one gRPC code: how many, and one message.
type Failures = BTreeMap<i32, (u64, String)>;

/// What one phase measured.
struct Measured {
    phase: Phase,
    ok: u64,
    errors: u64,
    failures: Failures,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

/// A gRPC code's name as the gRPC docs write it: `DeadlineExceeded` →
/// `DEADLINE_EXCEEDED`.
fn code_name(code: i32) -> String {
    let name = format!("{:?}", tonic::Code::from_i32(code));
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

fn location(key: usize) -> LocationType {
    LocationType {
        scope: Some(ScopeType {
            r#type: ScopeChoice::Bridge as i32,
            bridge: "bench".into(),
            instance: String::new(),
        }),
        key: format!("k{key}"),
    }
}

async fn run_phase(phase: Phase, channel: &Channel, addr: &str, args: &BenchArgs) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![0x5a_u8; args.value_bytes];
    let mut workers = Vec::new();
    let start = Instant::now();
    for w in 0..args.concurrency {
        let channel = channel.clone();
        let stop = stop.clone();
        let value = value.clone();
        let keys = args.keys.max(1);
        let ttl = args.ttl.max(0);
        let addr = addr.to_string();
        workers.push(tokio::spawn(async move {
            let mut store = EventStoreClient::new(channel.clone());
            let mut health = HealthClient::new(channel);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut failures = Failures::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let key = i % keys;
                i += 7919;
                let t = Instant::now();
                let res = match phase {
                    Phase::Baseline => health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map(|_| ()),
                    Phase::Save => store
                        .save(SaveRequest {
                            location: Some(location(key)),
                            ttl,
                            value: value.clone().into(),
                        })
                        .await
                        .map(|_| ()),
                    Phase::Load => store
                        .load(LoadRequest {
                            location: Some(location(key)),
                        })
                        .await
                        .map(|_| ()),
                };
                match res {
                    Ok(()) => {
                        ok += 1;
                        let us = t.elapsed().as_micros().max(1) as u64;
                        let _ = hist.record(us.min(60_000_000));
                    }
                    Err(s) => {
                        errors += 1;
                        let entry = failures
                            .entry(s.code() as i32)
                            .or_insert_with(|| (0, describe_status(&s, &addr)));
                        entry.0 += 1;
                    }
                }
            }
            (ok, errors, failures, hist)
        }));
    }
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Measured {
        phase,
        ok: 0,
        errors: 0,
        failures: Failures::new(),
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
    };
    for w in workers {
        if let Ok((ok, errors, failures, hist)) = w.await {
            total.ok += ok;
            total.errors += errors;
            for (code, (n, sample)) in failures {
                total.failures.entry(code).or_insert((0, sample)).0 += n;
            }
            let _ = total.latency_us.add(&hist);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let conn: Connected = match connect(
        &args.server,
        Port::Client,
        Duration::from_secs(5),
        &args.tls.files(),
    )
    .await
    {
        Ok(c) => c,
        Err(f) => {
            eprintln!("error: {}", f.message);
            return f.code;
        }
    };
    let setup = args.setup.clone().unwrap_or_else(|| conn.addr.clone());
    let phases = std::iter::once(Phase::Baseline).chain(args.phases.iter().map(|p| match p {
        PhaseArg::Save => Phase::Save,
        PhaseArg::Load => Phase::Load,
    }));
    let mut results = Vec::new();
    for phase in phases {
        eprintln!("bench: {} for {:?}...", phase.name(), args.duration);
        results.push(run_phase(phase, &conn.channel, &conn.addr, &args).await);
    }
    let base = &results[0];
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|m| {
                let failures: serde_json::Map<String, serde_json::Value> = m
                    .failures
                    .iter()
                    .map(|(code, (n, sample))| {
                        (
                            code_name(*code),
                            serde_json::json!({ "count": n, "sample": sample }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "setup": setup,
                    "phase": m.phase.name(),
                    "ok": m.ok,
                    "errors": m.errors,
                    "failures": failures,
                    "ops_per_sec": m.per_sec(),
                    "p50_ms": m.quantile_ms(0.5),
                    "p99_ms": m.quantile_ms(0.99),
                    "p999_ms": m.quantile_ms(0.999),
                    "max_ms": m.latency_us.max() as f64 / 1000.0,
                    "throughput_vs_baseline": ratio(m.per_sec(), base.per_sec()),
                    "p50_vs_baseline": ratio(m.quantile_ms(0.5), base.quantile_ms(0.5)),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "concurrency": args.concurrency,
                "value_bytes": args.value_bytes,
                "duration_s": args.duration.as_secs_f64(),
                "phases": rows,
            })
        );
    } else {
        println!(
            "concurrency {}, value {} B, {:?} per phase",
            args.concurrency, args.value_bytes, args.duration
        );
        println!(
            "| setup | phase | ops/s | p50 ms | p99 ms | ops/s vs baseline | p50 vs baseline |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        for m in &results {
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                setup,
                m.phase.short_name(),
                m.per_sec(),
                m.quantile_ms(0.5),
                m.quantile_ms(0.99),
                ratio(m.per_sec(), base.per_sec()),
                ratio(m.quantile_ms(0.5), base.quantile_ms(0.5)),
            );
        }
    }
    for m in &results {
        if m.errors == 0 {
            continue;
        }
        eprintln!(
            "bench: {}: {} of {} requests failed",
            m.phase.name(),
            m.errors,
            m.ok + m.errors
        );
        for (code, (n, sample)) in &m.failures {
            eprintln!("  {} x{n}, e.g.: {sample}", code_name(*code));
        }
    }
    if let Some(unimplemented) = results.iter().find(|m| {
        m.ok == 0
            && m.failures
                .contains_key(&(tonic::Code::Unimplemented as i32))
    }) {
        let f = conn
            .explain(
                &tonic::Status::unimplemented(""),
                unimplemented.phase.name(),
            )
            .await;
        eprintln!("error: {}", f.message);
        return 1;
    }
    if results.iter().skip(1).any(|m| m.ok == 0) {
        eprintln!("error: a phase completed no request (see the errors above)");
        return 1;
    }
    0
}

//! `eventstore bench`: a load generator that measures Save and Load against
//! a running node, and the same transport without Raft or storage (the gRPC
//! health check) as a baseline measured in the same run.
//!
//! Machines are shared and noisy, so absolute numbers mean little from one
//! run to the next; the ratios to the baseline are what to compare.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::parse_duration;
use crate::client::server_uri;
use crate::proto::protob::event_store_client::EventStoreClient;
use crate::proto::protob::{LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType};

/// Flags of `eventstore bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server: `host:port`, `http://host:port` or `dns:///host:port`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: String,
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
}

/// What one phase measured.
struct Measured {
    phase: Phase,
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
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

async fn run_phase(phase: Phase, channel: &Channel, args: &BenchArgs) -> Measured {
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
        workers.push(tokio::spawn(async move {
            let mut store = EventStoreClient::new(channel.clone());
            let mut health = HealthClient::new(channel);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
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
                    Err(_) => errors += 1,
                }
            }
            (ok, errors, hist)
        }));
    }
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Measured {
        phase,
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
    };
    for w in workers {
        if let Ok((ok, errors, hist)) = w.await {
            total.ok += ok;
            total.errors += errors;
            let _ = total.latency_us.add(&hist);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let uri = match server_uri(&args.server) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let channel = match Endpoint::from_shared(uri) {
        Ok(e) => match e.tcp_nodelay(true).connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: connecting to {}: {e}", args.server);
                return 5;
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let phases = std::iter::once(Phase::Baseline).chain(args.phases.iter().map(|p| match p {
        PhaseArg::Save => Phase::Save,
        PhaseArg::Load => Phase::Load,
    }));
    let mut results = Vec::new();
    for phase in phases {
        eprintln!("bench: {} for {:?}...", phase.name(), args.duration);
        results.push(run_phase(phase, &channel, &args).await);
    }
    let base = &results[0];
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "phase": m.phase.name(),
                    "ok": m.ok,
                    "errors": m.errors,
                    "ops_per_sec": m.per_sec(),
                    "p50_ms": m.quantile_ms(0.5),
                    "p99_ms": m.quantile_ms(0.99),
                    "p999_ms": m.quantile_ms(0.999),
                    "max_ms": m.latency_us.max() as f64 / 1000.0,
                    "throughput_vs_baseline": m.per_sec() / base.per_sec().max(f64::MIN_POSITIVE),
                    "p50_vs_baseline": m.quantile_ms(0.5) / base.quantile_ms(0.5).max(f64::MIN_POSITIVE),
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
            "{:<24} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9}",
            "phase",
            "ok",
            "errors",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p99.9",
            "max ms",
            "ops/s ratio",
            "p50 ratio"
        );
        for m in &results {
            println!(
                "{:<24} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>11.3} {:>9.2}",
                m.phase.name(),
                m.ok,
                m.errors,
                m.per_sec(),
                m.quantile_ms(0.5),
                m.quantile_ms(0.99),
                m.quantile_ms(0.999),
                m.latency_us.max() as f64 / 1000.0,
                m.per_sec() / base.per_sec().max(f64::MIN_POSITIVE),
                m.quantile_ms(0.5) / base.quantile_ms(0.5).max(f64::MIN_POSITIVE),
            );
        }
    }
    if results.iter().skip(1).any(|m| m.ok == 0) {
        eprintln!("error: a phase completed no request");
        return 1;
    }
    0
}

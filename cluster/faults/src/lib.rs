//! The fault-injection suite of EventStore's local cluster: test machinery
//! that users never run, kept out of the `eventstore` product crate.
//!
//! The runner (`eventstore-faults`, driven by `cluster/faults.sh`): runs a concurrent client workload against the
//! local compose cluster while injecting faults (kills, pauses, network
//! partitions, a rolling restart), records every operation, checks the
//! history ([`crate::check`]), and writes a table, a JSON report, the
//! history and a timeline plot (SVG and PNG).
//!
//! - [`cluster`]: containers, docker actions, status, leader and health;
//! - [`workload`]: the clients and the recorder;
//! - [`scenario`]: the fault scenarios;
//! - [`monitor`]: status polls that show when leaders change;
//! - [`report`]: numbers, table and plot;
//! - [`check`]: the history checker (linearizability, expiry, durability).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod cluster;
pub mod monitor;
pub mod report;
pub mod scenario;
pub mod workload;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::check::{Anomaly, Kind, Op, Outcome, Timing};
use cluster::{lazy_channel, Cluster};
use report::Row;
use scenario::{ScenarioRun, Timings};
use workload::{KeyGroup, Phase, Recorder, Settings, Target, Workload};

/// Phase name of the closing reads.
pub const FINAL_PHASE: &str = "final";
/// Phase name of the short-TTL workload.
pub const TTL_PHASE: &str = "short-ttl";

/// Command-line flags of `eventstore-faults`.
#[derive(Debug, Parser)]
#[command(
    name = "eventstore-faults",
    about = "Fault injection with a linearizability check against the local compose cluster (see cluster/faults.sh)"
)]
pub struct Args {
    /// Compose project of the cluster.
    #[arg(long, default_value = "eventstore")]
    pub project: String,
    /// Where report.json, history.jsonl, timeline.svg and timeline.png go.
    #[arg(long, default_value = "target/faults")]
    pub out: PathBuf,
    /// Scenarios to run, comma-separated (default: all, in order).
    #[arg(long, value_delimiter = ',', default_values_t = scenario::ALL.iter().map(|s| s.to_string()))]
    pub scenarios: Vec<String>,
    /// Concurrent clients (client i uses node i mod 3).
    #[arg(long, default_value_t = 6)]
    pub clients: u32,
    /// Keys per scenario (each scenario has its own keys, Global scope).
    #[arg(long, default_value_t = 5)]
    pub keys: u32,
    /// Short-TTL keys per scenario (TTL 1-3 s, so that values expire during
    /// the fault), besides the `--keys` ones.
    #[arg(long, default_value_t = 4)]
    pub ttl_keys: u32,
    /// Share of each scenario's operations on its short-TTL keys, in percent.
    #[arg(long, default_value_t = 30)]
    pub ttl_share_pct: u32,
    /// Deadline of each operation, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub op_timeout_ms: u64,
    /// Pause after each successful operation, in milliseconds (keeps the
    /// two-core machine from saturating and the history a manageable size).
    #[arg(long, default_value_t = 10)]
    pub think_ms: u64,
    /// TTL of the Saves of the fault scenarios, in seconds (must outlast the run).
    #[arg(long, default_value_t = 900)]
    pub ttl_secs: u32,
    /// Length of the short-TTL phase (Saves with TTL 1-2 s), in seconds; 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub ttl_phase_secs: u64,
    /// Clock-skew allowance for the expiry checks, in milliseconds: 0 when
    /// the nodes and this runner read one host's clock (the local compose
    /// cluster); set it for nodes on other machines.
    #[arg(long, default_value_t = 0)]
    pub skew_ms: u64,
    /// Workload before each fault, in seconds.
    #[arg(long, default_value_t = 3)]
    pub baseline_secs: u64,
    /// How long a node stays killed or partitioned, in seconds.
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,
    /// How long the leader stays paused, in seconds: longer than a
    /// failover takes (about 4 s measured), so that the followers elect a
    /// new leader and the old one wakes up deposed.
    #[arg(long, default_value_t = 6)]
    pub pause_secs: u64,
    /// How many times to run the list of scenarios (later rounds hit other
    /// followers, and whichever node leads by then).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Workload after the cluster is healthy again, in seconds.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// Treat every UNAVAILABLE answer to a Save/Delete as indeterminate,
    /// instead of as "not applied" unless it says "outcome unknown".
    #[arg(long)]
    pub distrust_unavailable: bool,
    /// Each scenario needs at least this many acknowledged Saves invoked
    /// after its heal (and the short-TTL phase in all).
    #[arg(long, default_value_t = report::MIN_SAVES_AFTER_HEAL)]
    pub min_saves_after_heal: usize,
    /// Each scenario needs at least this many acknowledged Loads invoked
    /// after its heal (and the short-TTL phase in all).
    #[arg(long, default_value_t = report::MIN_LOADS_AFTER_HEAL)]
    pub min_loads_after_heal: usize,
    /// Largest share of a phase's operations with an unknown outcome
    /// (indeterminate or unexpected), in percent.
    #[arg(long, default_value_t = report::MAX_UNKNOWN_PCT)]
    pub max_unknown_pct: f64,
    /// Each phase needs at least this many Loads that saw a short-TTL
    /// value gone after its TTL.
    #[arg(long, default_value_t = report::MIN_EXPIRED_READS)]
    pub min_expired_reads: usize,
    /// Stop everything (and fail) after this many seconds.
    #[arg(long, default_value_t = 720)]
    pub max_run_secs: u64,
    /// Random seed of the workload (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Only check a recorded history (a history.jsonl) and print the verdicts.
    #[arg(long, value_name = "HISTORY")]
    pub check_only: Option<PathBuf>,
}

/// The JSON report (`report.json`).
#[derive(Debug, Serialize)]
struct Report {
    passed: bool,
    scenarios_passed: usize,
    scenarios_failed: usize,
    run_secs: f64,
    seed: u64,
    settings: ReportSettings,
    rows: Vec<Row>,
    convergence: Convergence,
    final_reads: FinalReads,
}

#[derive(Debug, Serialize)]
struct ReportSettings {
    clients: u32,
    keys_per_scenario: u32,
    op_timeout_ms: u64,
    ttl_secs: u32,
    short_ttl_secs: (u32, u32),
    short_ttl_keys: u32,
    scenario_ttl_keys: u32,
    scenario_ttl_secs: (u32, u32),
    scenario_ttl_share_pct: u32,
    skew_ms: u64,
    trust_unavailable: bool,
    timings: Timings,
    unavailability: &'static str,
}

#[derive(Debug, Default, Serialize)]
struct Convergence {
    converged: bool,
    waited_secs: f64,
    /// Per node: (applied index, digest).
    nodes: Vec<(Option<u64>, String)>,
    detail: String,
}

#[derive(Debug, Default, Serialize)]
struct FinalReads {
    keys: usize,
    attempts: usize,
    missing: Vec<String>,
}

/// Entry point of `eventstore-faults`; returns the process exit code:
/// 0 when every scenario passed, 1 when any failed, 2 on a setup error.
pub fn main() -> i32 {
    let args = Args::parse();
    if let Some(path) = &args.check_only {
        return match check_only(path, &args) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return 2;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

fn check_config(args: &Args) -> check::Config {
    check::Config {
        timing: Timing {
            skew_ns: args.skew_ms * 1_000_000,
        },
        ..check::Config::default()
    }
}

fn check_only(path: &std::path::Path, args: &Args) -> Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ops: Vec<Op> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing the history")?;
    let rep = check::check_all(&ops, &check_config(args), FINAL_PHASE, 2);
    for k in &rep.keys {
        println!(
            "{:<50} ops {:>6} searched {:>6} states {:>8} {:>8.1} ms  {:?}",
            k.key, k.ops, k.searched_ops, k.states, k.millis, k.verdict
        );
    }
    for a in &rep.anomalies {
        println!("ANOMALY {} {}: {}", a.kind, a.key, a.detail);
    }
    println!(
        "{} operations, {} anomalies",
        ops.len(),
        rep.anomalies.len()
    );
    Ok(rep.anomalies.is_empty())
}

/// A key group on keys `{tag}/{name}/{prefix}0..`, with `save_pct`%
/// Saves, `delete_pct`% Deletes and the rest Loads, getting `weight` of
/// the phase's operations.
#[allow(clippy::too_many_arguments)]
fn group(
    name: &str,
    tag: &str,
    prefix: &str,
    keys: u32,
    ttl: (u32, u32),
    save_pct: u32,
    delete_pct: u32,
    weight: u32,
) -> KeyGroup {
    KeyGroup {
        keys: (0..keys)
            .map(|k| format!("{tag}/{name}/{prefix}{k}"))
            .collect(),
        ttl_secs: ttl,
        save_pct,
        delete_pct,
        weight,
    }
}

/// TTL range of the short-TTL keys of the fault scenarios, in seconds.
pub const SCENARIO_TTL_SECS: (u32, u32) = (1, 3);

/// The requirements of a phase: `kind` is the scenario (`None` for the
/// short-TTL phase, whose 4 % of Saves need only reach half the number).
fn requirements(args: &Args, kind: Option<&str>) -> report::Requirements {
    report::Requirements {
        min_saves_after_heal: if kind.is_some() {
            args.min_saves_after_heal
        } else {
            args.min_saves_after_heal / 2
        },
        min_loads_after_heal: args.min_loads_after_heal,
        max_unknown_share: args.max_unknown_pct / 100.0,
        min_expired_reads: args.min_expired_reads,
        election: kind.is_some_and(scenario::replaces_leader),
    }
}

async fn run(args: Args) -> Result<bool> {
    for s in &args.scenarios {
        if !scenario::ALL.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}; known: {}",
                scenario::ALL.join(", ")
            );
        }
    }
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be positive");
    }
    if args.ttl_share_pct > 100 {
        bail!("--ttl-share-pct must be at most 100");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let cluster = Cluster::discover(&args.project, 18080, 19090).await?;
    eprintln!(
        "cluster: {} on network {}",
        cluster
            .nodes
            .iter()
            .map(|n| format!(
                "n{}={} ({}, admin {})",
                n.id, n.container, n.client_addr, n.admin_addr
            ))
            .collect::<Vec<_>>()
            .join(", "),
        cluster.network
    );
    cluster
        .wait_healthy(Duration::from_secs(60))
        .await
        .context("the cluster is not healthy before the run")?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let tag = format!("faults-{seed:x}");
    let timings = Timings {
        baseline: Duration::from_secs(args.baseline_secs),
        hold: Duration::from_secs(args.hold_secs),
        pause: Duration::from_secs(args.pause_secs),
        settle: Duration::from_secs(args.settle_secs),
        recover_timeout: Duration::from_secs(90),
    };
    let settings = Settings {
        clients: args.clients,
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        error_backoff: Duration::from_millis(50),
        think: Duration::from_millis(args.think_ms),
        trust_unavailable: !args.distrust_unavailable,
        seed,
    };
    let rec = Recorder::new();
    let max_run = Duration::from_secs(args.max_run_secs);

    // Phases: the short-TTL phase first, then one per scenario.
    let mut phases: Vec<Phase> = Vec::new();
    if args.ttl_phase_secs > 0 {
        // Few writes over more keys, so that most values outlive their
        // TTL while the key is read every few tens of milliseconds.
        phases.push(Phase {
            name: TTL_PHASE.into(),
            groups: vec![group(TTL_PHASE, &tag, "k", 4 * args.keys, (1, 2), 4, 1, 1)],
        });
    }
    // Phase name -> (scenario kind, round).
    let mut kinds: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for round in 0..args.rounds {
        for s in &args.scenarios {
            let name = if args.rounds > 1 {
                format!("{s}#{}", round + 1)
            } else {
                s.clone()
            };
            kinds.insert(name.clone(), (s.clone(), round));
            let mut groups = vec![group(
                &name,
                &tag,
                "k",
                args.keys,
                (args.ttl_secs, args.ttl_secs),
                40,
                10,
                100 - args.ttl_share_pct,
            )];
            if args.ttl_keys > 0 && args.ttl_share_pct > 0 {
                // Values with TTLs of 1-3 s that expire during the fault:
                // few writes, so that most values outlive their TTL while
                // their key is read.
                groups.push(group(
                    &name,
                    &tag,
                    "t",
                    args.ttl_keys,
                    SCENARIO_TTL_SECS,
                    2,
                    1,
                    args.ttl_share_pct,
                ));
            }
            phases.push(Phase { name, groups });
        }
    }
    let first = phases
        .first()
        .cloned()
        .context("nothing to run (no scenario and no short-TTL phase)")?;

    let monitor = monitor::Monitor::start(&cluster, rec.clone(), Duration::from_millis(200));
    let workload = Workload::start(&cluster, &settings, rec.clone(), first)?;
    let mut runs: Vec<ScenarioRun> = Vec::new();
    let driven = tokio::time::timeout(max_run, async {
        for p in &phases {
            workload.set_phase(p.clone());
            if p.name == TTL_PHASE {
                eprintln!(
                    "[{:7.2}s] {TTL_PHASE}: TTL 1-2 s, no faults",
                    rec.now_ns() as f64 / 1e9
                );
                let start_ns = rec.now_ns();
                tokio::time::sleep(Duration::from_secs(args.ttl_phase_secs)).await;
                runs.push(ScenarioRun {
                    name: TTL_PHASE.into(),
                    start_ns,
                    end_ns: rec.now_ns(),
                    events: vec![],
                    leader_before: None,
                    leader_after: None,
                    recovery_secs: None,
                    error: None,
                });
            } else {
                eprintln!("[{:7.2}s] {}: start", rec.now_ns() as f64 / 1e9, p.name);
                let (kind, round) = kinds[&p.name].clone();
                let r = scenario::run(&kind, &p.name, round, &cluster, &rec, &timings).await;
                eprintln!(
                    "[{:7.2}s] {}: done (leader n{} -> n{})",
                    rec.now_ns() as f64 / 1e9,
                    p.name,
                    r.leader_before.map(|l| l.to_string()).unwrap_or("?".into()),
                    r.leader_after.map(|l| l.to_string()).unwrap_or("?".into())
                );
                runs.push(r);
            }
        }
    })
    .await;
    workload.stop().await;
    let run_end_ns = rec.now_ns();
    let samples = monitor.stop().await;
    let changes = monitor::leader_changes(&samples, 1_000_000_000);
    if driven.is_err() {
        eprintln!(
            "the run exceeded --max-run-secs {}; stopping",
            args.max_run_secs
        );
    }

    // Heal whatever a failed scenario left behind, then read every key
    // through every node and compare the replicas.
    cluster.heal_all().await;
    let healthy = cluster.wait_healthy(timings.recover_timeout).await;
    if let Err(e) = &healthy {
        eprintln!("after the workload: {e:#}");
    }
    let all_keys: Vec<String> = phases.iter().flat_map(|p| p.keys().cloned()).collect();
    let final_reads = final_reads(&cluster, &settings, &rec, &all_keys).await?;
    let convergence = convergence(&cluster, Duration::from_secs(30)).await;
    let total_ns = rec.now_ns();

    // Check.
    let ops = rec.snapshot();
    eprintln!(
        "checking {} operations on {} keys ...",
        ops.len(),
        all_keys.len()
    );
    let cfg = check_config(&args);
    let checked = {
        let ops = ops.clone();
        tokio::task::spawn_blocking(move || check::check_all(&ops, &cfg, FINAL_PHASE, 2)).await?
    };

    // Rows.
    let key_phase: BTreeMap<String, String> = phases
        .iter()
        .flat_map(|p| p.keys().map(|k| (k.clone(), p.name.clone())))
        .collect();
    let by_phase = report::anomalies_by_phase(&checked.anomalies, &key_phase);
    let unavailable_applied: Vec<&Op> = checked
        .unavailable_but_applied
        .iter()
        .map(|&i| &ops[i])
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    for r in &runs {
        let keys: Vec<_> = checked
            .keys
            .iter()
            .filter(|k| key_phase.get(&k.key) == Some(&r.name))
            .collect();
        let mut anomalies = by_phase.get(&r.name).cloned().unwrap_or_default();
        for k in &final_reads.missing {
            if key_phase.get(k) == Some(&r.name) {
                anomalies.push(Anomaly {
                    key: k.clone(),
                    kind: "final-read-failed".into(),
                    detail: "no node answered the final read".into(),
                    ops: vec![],
                });
            }
        }
        let ua = unavailable_applied
            .iter()
            .filter(|o| o.phase == r.name)
            .count();
        let mut row = report::row(r, &ops, &keys, &changes, anomalies, ua);
        let kind = kinds.get(&r.name).map(|(k, _)| k.as_str());
        report::judge(&mut row, &requirements(&args, kind));
        rows.push(row);
    }
    let mut conv_anomalies = Vec::new();
    if !convergence.converged {
        conv_anomalies.push(Anomaly {
            key: String::new(),
            kind: "divergence".into(),
            detail: convergence.detail.clone(),
            ops: vec![],
        });
    }
    if let Err(e) = &healthy {
        conv_anomalies.push(Anomaly {
            key: String::new(),
            kind: "not-recovered".into(),
            detail: format!("{e:#}"),
            ops: vec![],
        });
    }
    if driven.is_err() {
        conv_anomalies.push(Anomaly {
            key: String::new(),
            kind: "timeout".into(),
            detail: format!("the run exceeded {} s", args.max_run_secs),
            ops: vec![],
        });
    }
    let conv_run = ScenarioRun {
        name: "convergence".into(),
        start_ns: run_end_ns,
        end_ns: total_ns,
        events: vec![],
        leader_before: None,
        leader_after: None,
        recovery_secs: None,
        error: None,
    };
    let mut conv_row = report::row(&conv_run, &[], &[], &[], conv_anomalies, 0);
    conv_row.unavailability = Default::default();
    rows.push(conv_row);

    let passed_n = rows.iter().filter(|r| r.passed).count();
    let failed_n = rows.len() - passed_n;
    let report = Report {
        passed: failed_n == 0,
        scenarios_passed: passed_n,
        scenarios_failed: failed_n,
        run_secs: total_ns as f64 / 1e9,
        seed,
        settings: ReportSettings {
            clients: args.clients,
            keys_per_scenario: args.keys,
            op_timeout_ms: args.op_timeout_ms,
            ttl_secs: args.ttl_secs,
            short_ttl_secs: (1, 2),
            short_ttl_keys: 4 * args.keys,
            scenario_ttl_keys: args.ttl_keys,
            scenario_ttl_secs: SCENARIO_TTL_SECS,
            scenario_ttl_share_pct: args.ttl_share_pct,
            skew_ms: args.skew_ms,
            trust_unavailable: !args.distrust_unavailable,
            timings: timings.clone(),
            unavailability:
                "longest gap between successful completions within the scenario window; \
                             cluster = all clients, per_node = the clients pinned to that node",
        },
        rows,
        convergence,
        final_reads,
    };

    // Outputs.
    let json_path = args.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let hist_path = args.out.join("history.jsonl");
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&hist_path)
                .with_context(|| format!("writing {}", hist_path.display()))?,
        );
        for op in &ops {
            serde_json::to_writer(&mut f, op)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    report::write_timeline(&args.out, &ops, &runs, &changes, run_end_ns, 250)?;
    std::fs::write(
        args.out.join("summary.txt"),
        format!("{passed_n} {failed_n}\n"),
    )?;

    println!();
    print!("{}", report::table(&report.rows));
    for r in &report.rows {
        for a in r.anomalies.iter().take(10) {
            println!("ANOMALY [{}] {} {}: {}", r.name, a.kind, a.key, a.detail);
        }
        if r.anomalies.len() > 10 {
            println!(
                "ANOMALY [{}] ... and {} more",
                r.name,
                r.anomalies.len() - 10
            );
        }
        if let Some(e) = &r.error {
            println!("ERROR [{}] {e}", r.name);
        }
        for u in &r.unmet {
            println!("UNMET [{}] {u}", r.name);
        }
    }
    for r in &report.rows {
        if let Some(p) = &r.ttl_probe {
            println!(
                "expiry [{}]: {} acknowledged short-TTL Saves; {} Loads saw a value gone after its TTL \
                 ({} of them expired during the fault), {} read a value in the last 10% of its TTL \
                 (oldest read at {:.0}% of its TTL)",
                r.name,
                p.saves,
                p.absent_after_expiry,
                p.expired_during_fault,
                p.reads_near_deadline,
                100.0 * p.max_read_age_ratio
            );
        }
    }
    if !unavailable_applied.is_empty() {
        println!(
            "note: {} Save(s) answered UNAVAILABLE with an unknown outcome took effect (allowed), e.g. {}",
            unavailable_applied.len(),
            check::history::describe(unavailable_applied[0])
        );
    }
    let ops_total = ops.iter().filter(|o| o.phase != FINAL_PHASE).count();
    println!(
        "{} operations in {:.0} s ({} clients, seed {seed}); convergence: {}; report: {}, plot: {} (and .svg)",
        ops_total,
        report.run_secs,
        args.clients,
        if report.convergence.converged {
            "ok"
        } else {
            "FAILED"
        },
        json_path.display(),
        args.out.join("timeline.png").display()
    );
    Ok(report.passed)
}

/// Reads every key through every node (after the workload stopped and the
/// cluster healed), retrying failed attempts; every attempt is recorded in
/// phase [`FINAL_PHASE`].
async fn final_reads(
    cluster: &Cluster,
    settings: &Settings,
    rec: &Recorder,
    keys: &[String],
) -> Result<FinalReads> {
    use eventstore::proto::protob::event_store_client::EventStoreClient;
    let mut clients = Vec::new();
    for n in &cluster.nodes {
        clients.push(EventStoreClient::new(lazy_channel(&n.client_addr)?));
    }
    let mut out = FinalReads {
        keys: keys.len(),
        ..Default::default()
    };
    for key in keys {
        for (i, n) in cluster.nodes.iter().enumerate() {
            let mut done = false;
            for _attempt in 0..20 {
                out.attempts += 1;
                let op = workload::execute(
                    &mut clients[i],
                    settings,
                    rec,
                    Target {
                        client: 1000 + n.id,
                        node: n.id,
                        phase: FINAL_PHASE,
                        key,
                    },
                    Kind::Load,
                    None,
                    0,
                )
                .await;
                let ok = op.outcome == Outcome::Ok;
                rec.push(op);
                if ok {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if !done {
                out.missing.push(key.clone());
            }
        }
    }
    Ok(out)
}

/// Waits until all nodes report the same applied index with nothing left
/// to apply, then compares their state digests. A mismatch must persist
/// over three polls at the same applied index to count as divergence.
async fn convergence(cluster: &Cluster, timeout: Duration) -> Convergence {
    let started = tokio::time::Instant::now();
    let mut mismatches = 0;
    loop {
        let mut st = Vec::new();
        for n in &cluster.nodes {
            if let Ok(s) = cluster.status(n.id, Duration::from_secs(1)).await {
                st.push(s);
            }
        }
        let last = st
            .iter()
            .map(|s| (s.applied, s.digest.clone()))
            .collect::<Vec<_>>();
        let settled = st.len() == cluster.nodes.len()
            && st
                .iter()
                .all(|s| s.applied.is_some() && s.applied == st[0].applied)
            && st.iter().all(|s| s.last_log_index == s.applied);
        if settled {
            if st.iter().all(|s| s.digest == st[0].digest) {
                return Convergence {
                    converged: true,
                    waited_secs: started.elapsed().as_secs_f64(),
                    nodes: last,
                    detail: format!(
                        "all nodes at applied index {} with digest {}",
                        st[0].applied.unwrap_or(0),
                        st[0].digest
                    ),
                };
            }
            mismatches += 1;
            if mismatches >= 3 {
                return Convergence {
                    converged: false,
                    waited_secs: started.elapsed().as_secs_f64(),
                    detail: format!("digests differ at the same applied index: {last:?}"),
                    nodes: last,
                };
            }
        } else {
            mismatches = 0;
        }
        if started.elapsed() >= timeout {
            return Convergence {
                converged: false,
                waited_secs: started.elapsed().as_secs_f64(),
                detail: format!(
                    "replicas did not reach the same applied index within {timeout:?}: {last:?}"
                ),
                nodes: last,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

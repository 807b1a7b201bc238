//! Per-scenario numbers (operation counts, unavailability windows,
//! latencies from an HDR histogram, checker cost and anomalies), the
//! console table, and the timeline plot, drawn with plotters as
//! `timeline.svg` and `timeline.png`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use super::monitor::LeaderChange;
use super::scenario::{Event, ScenarioRun};
use crate::check::{Anomaly, KeyResult, Kind, Op, Outcome};

/// Operation counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// All operations.
    pub total: usize,
    /// Acknowledged (including Loads answered NOT_FOUND).
    pub ok: usize,
    /// Definitely not applied.
    pub failed: usize,
    /// Outcome unknown.
    pub indeterminate: usize,
    /// Answers the contract never gives (each also an anomaly).
    pub unexpected: usize,
    /// Saves.
    pub saves: usize,
    /// Acknowledged Saves.
    pub saves_ok: usize,
    /// Loads.
    pub loads: usize,
    /// Acknowledged Loads (a value or NOT_FOUND).
    pub loads_ok: usize,
    /// Deletes.
    pub deletes: usize,
}

impl Counts {
    /// Counts `ops`.
    pub fn of<'a>(ops: impl Iterator<Item = &'a Op>) -> Counts {
        let mut c = Counts::default();
        for op in ops {
            c.total += 1;
            match op.outcome {
                Outcome::Ok => c.ok += 1,
                Outcome::Failed => c.failed += 1,
                Outcome::Indeterminate => c.indeterminate += 1,
                Outcome::Unexpected => c.unexpected += 1,
            }
            let ok = usize::from(op.outcome == Outcome::Ok);
            match op.kind {
                Kind::Save => {
                    c.saves += 1;
                    c.saves_ok += ok;
                }
                Kind::Load => {
                    c.loads += 1;
                    c.loads_ok += ok;
                }
                Kind::Delete => c.deletes += 1,
            }
        }
        c
    }

    /// The share of operations whose outcome is unknown (indeterminate or
    /// unexpected); 0 without operations.
    pub fn unknown_share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.indeterminate + self.unexpected) as f64 / self.total as f64
        }
    }
}

/// The longest stretch without a successful operation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Gap {
    /// Its length, in seconds.
    pub secs: f64,
    /// Where it starts (seconds since the run started).
    pub from_s: f64,
    /// Where it ends.
    pub to_s: f64,
}

/// Unavailability of a scenario: the longest gap between two successful
/// completions inside the scenario's time window (its start and end count
/// as completions), over all clients (`cluster`) and over the clients of
/// each node (`per_node`; a node that is down or cut off shows its whole
/// outage there).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Unavailability {
    /// Over all clients.
    pub cluster: Gap,
    /// Over the clients of node 0, 1, 2.
    pub per_node: Vec<Gap>,
}

/// Latency of the acknowledged operations of a row, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    /// Percentiles of the acknowledged operations among `ops`, from an HDR
    /// histogram of their latencies in microseconds (3 significant digits:
    /// a value is off by at most 0.1 %). All zero when none was acknowledged.
    pub fn of<'a>(ops: impl Iterator<Item = &'a Op>) -> Latency {
        // From 1 µs to an hour: far beyond any operation deadline; a longer
        // value would be recorded as an hour.
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid");
        for o in ops.filter(|o| o.outcome == Outcome::Ok) {
            h.saturating_record(o.complete_ns.saturating_sub(o.invoke_ns) / 1_000);
        }
        let ms = |us: u64| us as f64 / 1e3;
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// The checker's work on a row's keys.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckCost {
    /// Keys checked.
    pub keys: usize,
    /// Operations on those keys (final reads included).
    pub ops: usize,
    /// Operations the search had to place.
    pub searched_ops: usize,
    /// (linearized set, state) pairs visited.
    pub states: usize,
    /// Search time, summed over keys, in milliseconds.
    pub millis: f64,
}

/// One line of the table: a workload phase, a fault scenario, or the
/// convergence check.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Name.
    pub name: String,
    /// Start, seconds since the run started.
    pub start_s: f64,
    /// End.
    pub end_s: f64,
    /// Operations of this phase (not counting the final reads).
    pub counts: Counts,
    /// Those invoked after the (last) heal had completed; all of them in a
    /// phase without faults.
    pub after_heal: Counts,
    /// Unavailability windows.
    pub unavailability: Unavailability,
    /// Latency of acknowledged operations.
    pub latency_ms: Latency,
    /// Checker cost.
    pub check: CheckCost,
    /// Saves answered UNAVAILABLE (by the server) whose value was read
    /// later. The checks treat them as indeterminate; listed because the
    /// server documents UNAVAILABLE as "not applied".
    pub unavailable_but_applied: usize,
    /// Fault actions.
    pub events: Vec<Event>,
    /// Leader before the fault.
    pub leader_before: Option<u32>,
    /// Leader afterwards.
    pub leader_after: Option<u32>,
    /// Seconds from the last heal until every node was SERVING.
    pub recovery_secs: Option<f64>,
    /// Seconds from the first fault action until the status polls showed
    /// a leader with a higher term than before it (none: no election).
    pub new_leader_secs: Option<f64>,
    /// Leader changes seen by the status polls during the scenario, as
    /// (seconds since the run started, leader, term).
    pub leader_changes: Vec<(f64, Option<u32>, u64)>,
    /// Why the scenario could not be carried out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Anomalies found (must be empty).
    pub anomalies: Vec<Anomaly>,
    /// How closely the reads probed TTL expiry (the short-TTL Saves:
    /// TTL of at most [`SHORT_TTL_MS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_probe: Option<TtlProbe>,
    /// What the phase had to show (see [`judge`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    /// The requirements it did not meet, explained (must be empty).
    pub unmet: Vec<String>,
    /// No anomaly, no error, every requirement met.
    pub passed: bool,
}

/// Saves with a TTL up to this are the short-TTL ones the probe follows.
pub const SHORT_TTL_MS: u64 = 10_000;

/// Default of [`Requirements::min_saves_after_heal`].
pub const MIN_SAVES_AFTER_HEAL: usize = 100;
/// Default of [`Requirements::min_loads_after_heal`].
pub const MIN_LOADS_AFTER_HEAL: usize = 200;
/// Default of [`Requirements::max_unknown_share`], in percent.
pub const MAX_UNKNOWN_PCT: f64 = 5.0;
/// Default of [`Requirements::min_expired_reads`].
pub const MIN_EXPIRED_READS: usize = 5;

/// What a phase must show to count as having tested something: a history
/// in which (almost) nothing was acknowledged, no leader was replaced or
/// no value expired passes every check without proving anything.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Requirements {
    /// Acknowledged Saves invoked after the heal, at least.
    pub min_saves_after_heal: usize,
    /// Acknowledged Loads invoked after the heal, at least.
    pub min_loads_after_heal: usize,
    /// Share of the phase's operations with an unknown outcome
    /// (indeterminate or unexpected), at most.
    pub max_unknown_share: f64,
    /// Loads that saw a short-TTL value gone after its TTL, at least.
    pub min_expired_reads: usize,
    /// The fault must replace the leader: the status polls must show a
    /// leader with a higher term after the first fault action.
    pub election: bool,
}

/// Checks `row` against `req`: the list of unmet requirements, each a
/// sentence with the numbers (empty when all are met).
pub fn unmet(row: &Row, req: &Requirements) -> Vec<String> {
    let mut out = Vec::new();
    let after = if row.events.iter().any(|e| e.kind == "heal") {
        "after the heal"
    } else {
        "in the phase"
    };
    if row.after_heal.saves_ok < req.min_saves_after_heal {
        out.push(format!(
            "{} acknowledged Saves {after} ({} sent), fewer than the {} required",
            row.after_heal.saves_ok, row.after_heal.saves, req.min_saves_after_heal
        ));
    }
    if row.after_heal.loads_ok < req.min_loads_after_heal {
        out.push(format!(
            "{} acknowledged Loads {after} ({} sent), fewer than the {} required",
            row.after_heal.loads_ok, row.after_heal.loads, req.min_loads_after_heal
        ));
    }
    let share = row.counts.unknown_share();
    if share > req.max_unknown_share {
        out.push(format!(
            "{:.1}% of the operations have an unknown outcome ({} indeterminate, {} unexpected, \
             of {}), more than the {:.1}% allowed",
            100.0 * share,
            row.counts.indeterminate,
            row.counts.unexpected,
            row.counts.total,
            100.0 * req.max_unknown_share
        ));
    }
    let expired = row
        .ttl_probe
        .as_ref()
        .map(|p| p.absent_after_expiry)
        .unwrap_or(0);
    if expired < req.min_expired_reads {
        out.push(format!(
            "{expired} Loads saw a short-TTL value gone after its TTL, fewer than the {} required",
            req.min_expired_reads
        ));
    }
    if req.election && row.new_leader_secs.is_none() {
        out.push(format!(
            "no election: the status polls showed no leader with a higher term after the fault \
             (leader before n{}, after n{})",
            row.leader_before
                .map(|l| l.to_string())
                .unwrap_or("?".into()),
            row.leader_after
                .map(|l| l.to_string())
                .unwrap_or("?".into())
        ));
    }
    out
}

/// Applies `req` to `row`: records the requirements and what is unmet,
/// and fails the row when anything is.
pub fn judge(row: &mut Row, req: &Requirements) {
    row.unmet = unmet(row, req);
    row.requirements = Some(req.clone());
    row.passed = row.anomalies.is_empty() && row.error.is_none() && row.unmet.is_empty();
}

/// Evidence that a phase exercised expiry, from its short-TTL Saves (TTL
/// of at most [`SHORT_TTL_MS`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TtlProbe {
    /// Acknowledged short-TTL Saves.
    pub saves: usize,
    /// Loads answered "absent" whose latest preceding acknowledged write
    /// on the key was a short-TTL Save, invoked once that Save's TTL had
    /// passed (so the value had expired).
    pub absent_after_expiry: usize,
    /// Of those, the ones whose value expired while the fault was in
    /// effect (from the first fault action to the end of the last heal).
    pub expired_during_fault: usize,
    /// Loads that returned a value, invoked at least 90% of its TTL after
    /// the Save was invoked (reads close to the deadline).
    pub reads_near_deadline: usize,
    /// The oldest value read, as a fraction of its TTL (age from the
    /// Save's invocation to the Load's invocation).
    pub max_read_age_ratio: f64,
}

/// Measures how the Loads of `phase` probed the expiry of its short-TTL
/// values; `fault` is the window (ns) in which the fault was in effect.
pub fn ttl_probe(ops: &[Op], phase: &str, fault: Option<(u64, u64)>) -> TtlProbe {
    use std::collections::HashMap;
    let short = |o: &Op| o.kind == Kind::Save && o.ttl_ms > 0 && o.ttl_ms <= SHORT_TTL_MS;
    let mine: Vec<&Op> = ops.iter().filter(|o| o.phase == phase).collect();
    let mut saves: HashMap<(&str, &str), &Op> = HashMap::new();
    let mut p = TtlProbe::default();
    for o in mine.iter().filter(|o| short(o)) {
        if let Some(v) = &o.value {
            saves.insert((o.key.as_str(), v.as_str()), o);
        }
        if o.outcome == Outcome::Ok {
            p.saves += 1;
        }
    }
    // Acknowledged writes per key, by completion time.
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in mine
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok)
    {
        writes.entry(o.key.as_str()).or_default().push(o);
    }
    for w in writes.values_mut() {
        w.sort_by_key(|o| o.complete_ns);
    }
    for r in mine
        .iter()
        .filter(|o| o.kind == Kind::Load && o.outcome == Outcome::Ok)
    {
        match &r.value {
            Some(v) => {
                if let Some(w) = saves.get(&(r.key.as_str(), v.as_str())) {
                    let age = r.invoke_ns.saturating_sub(w.invoke_ns) as f64;
                    let ratio = age / (w.ttl_ms as f64 * 1e6);
                    p.max_read_age_ratio = p.max_read_age_ratio.max(ratio);
                    if ratio >= 0.9 {
                        p.reads_near_deadline += 1;
                    }
                }
            }
            None => {
                let last = writes.get(r.key.as_str()).and_then(|ws| {
                    ws.iter()
                        .rev()
                        .find(|w| w.complete_ns < r.invoke_ns)
                        .copied()
                });
                if let Some(w) = last.filter(|w| short(w)) {
                    let expiry = w.invoke_ns + w.ttl_ms * 1_000_000;
                    if r.invoke_ns >= expiry {
                        p.absent_after_expiry += 1;
                        if fault.is_some_and(|(a, b)| (a..=b).contains(&expiry)) {
                            p.expired_during_fault += 1;
                        }
                    }
                }
            }
        }
    }
    p
}

fn s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Longest gap between successful completions within `[a, b]`.
fn longest_gap<'a>(ops: impl Iterator<Item = &'a Op>, a: u64, b: u64) -> Gap {
    let mut t: Vec<u64> = ops
        .filter(|o| o.outcome == Outcome::Ok && o.complete_ns >= a && o.complete_ns <= b)
        .map(|o| o.complete_ns)
        .collect();
    t.push(a);
    t.push(b);
    t.sort_unstable();
    let mut g = Gap::default();
    for w in t.windows(2) {
        let d = s(w[1] - w[0]);
        if d > g.secs {
            g = Gap {
                secs: d,
                from_s: s(w[0]),
                to_s: s(w[1]),
            };
        }
    }
    g
}

/// Builds the row of one phase: `run` carries the scenario's window and
/// actions (for the short-TTL phase, a run with no events).
pub fn row(
    run: &ScenarioRun,
    all_ops: &[Op],
    keys: &[&KeyResult],
    changes: &[LeaderChange],
    anomalies: Vec<Anomaly>,
    unavailable_but_applied: usize,
) -> Row {
    let (a, b) = (run.start_ns, run.end_ns);
    let inject = run
        .events
        .iter()
        .find(|e| e.kind == "inject")
        .map(|e| e.t_ns);
    let new_leader_secs = inject.and_then(|i| {
        let term_before = changes
            .iter()
            .rev()
            .find(|c| c.t_ns <= i && c.leader.is_some())
            .map(|c| c.term)
            .unwrap_or(0);
        changes
            .iter()
            .find(|c| c.t_ns > i && c.t_ns <= b && c.leader.is_some() && c.term > term_before)
            .map(|c| s(c.t_ns - i))
    });
    let leader_changes = changes
        .iter()
        .filter(|c| c.t_ns >= a && c.t_ns <= b)
        .map(|c| (s(c.t_ns), c.leader, c.term))
        .collect();
    let mine: Vec<&Op> = all_ops.iter().filter(|o| o.phase == run.name).collect();
    let per_node = (0..3u32)
        .map(|n| longest_gap(all_ops.iter().filter(|o| o.node == n), a, b))
        .collect();
    let check = CheckCost {
        keys: keys.len(),
        ops: keys.iter().map(|k| k.ops).sum(),
        searched_ops: keys.iter().map(|k| k.searched_ops).sum(),
        states: keys.iter().map(|k| k.states).sum(),
        millis: keys.iter().map(|k| k.millis).sum(),
    };
    let passed = anomalies.is_empty() && run.error.is_none();
    let last_heal = run
        .events
        .iter()
        .filter(|e| e.kind == "heal")
        .map(|e| e.done_ns)
        .max();
    let healed_at = last_heal.unwrap_or(0);
    let fault = inject.zip(last_heal);
    let probe = ttl_probe(all_ops, &run.name, fault);
    Row {
        name: run.name.clone(),
        start_s: s(a),
        end_s: s(b),
        counts: Counts::of(mine.iter().copied()),
        after_heal: Counts::of(mine.iter().copied().filter(|o| o.invoke_ns >= healed_at)),
        unavailability: Unavailability {
            cluster: longest_gap(all_ops.iter(), a, b),
            per_node,
        },
        latency_ms: Latency::of(mine.iter().copied()),
        check,
        unavailable_but_applied,
        events: run.events.clone(),
        leader_before: run.leader_before,
        leader_after: run.leader_after,
        recovery_secs: run.recovery_secs,
        new_leader_secs,
        leader_changes,
        error: run.error.clone(),
        anomalies,
        ttl_probe: (probe.saves > 0).then_some(probe),
        requirements: None,
        unmet: Vec::new(),
        passed,
    }
}

/// The console table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>6} {:>6} {:>5} {:>6} {:>11} {:>7} {:>8} {:>16} {:>9} {:>8} {:>8} {:>7} {:>9}  result",
        "scenario",
        "ops",
        "ok",
        "fail",
        "indet",
        "healed S/L",
        "expired",
        "unavail",
        "per node n0/1/2",
        "elected",
        "recover",
        "p99 ms",
        "states",
        "anomalies"
    );
    for r in rows {
        let per_node = if r.unavailability.per_node.is_empty() {
            "-".to_string()
        } else {
            r.unavailability
                .per_node
                .iter()
                .map(|g| format!("{:.1}", g.secs))
                .collect::<Vec<_>>()
                .join("/")
        };
        let unavail = if r.counts.total == 0 {
            "-".to_string()
        } else {
            format!("{:.2}s", r.unavailability.cluster.secs)
        };
        let recover = r
            .recovery_secs
            .map(|x| format!("{x:.1}s"))
            .unwrap_or_else(|| "-".into());
        let elected = r
            .new_leader_secs
            .map(|x| format!("{x:.1}s"))
            .unwrap_or_else(|| "-".into());
        let healed = if r.counts.total == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", r.after_heal.saves_ok, r.after_heal.loads_ok)
        };
        let expired = r
            .ttl_probe
            .as_ref()
            .map(|p| p.absent_after_expiry.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<22} {:>6} {:>6} {:>5} {:>6} {:>11} {:>7} {:>8} {:>16} {:>9} {:>8} {:>8.1} {:>7} {:>9}  {}",
            r.name,
            r.counts.total,
            r.counts.ok,
            r.counts.failed,
            r.counts.indeterminate + r.counts.unexpected,
            healed,
            expired,
            unavail,
            per_node,
            elected,
            recover,
            r.latency_ms.p99,
            r.check.states,
            r.anomalies.len(),
            if r.passed { "PASS" } else { "FAIL" }
        );
    }
    out
}

/// Node colours (n0, n1, n2), shared by the per-node lines and the
/// leader strip.
const NODE_COLORS: [RGBColor; 3] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x17, 0xbe, 0xcf),
];
/// Successful operations of all clients.
const OK_COLOR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// Failed operations, and fault injections.
const FAILED_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// Indeterminate operations.
const INDET_COLOR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// Fault in effect (first injection to last heal).
const FAULT_COLOR: RGBColor = RGBColor(0xff, 0xd9, 0xd9);
/// No leader seen.
const NO_LEADER_COLOR: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// The cluster's longest stretch without a successful operation.
const GAP_COLOR: RGBColor = RGBColor(0x22, 0x22, 0x22);
/// Scenario bands, alternating.
const BAND_COLORS: [RGBColor; 2] = [RGBColor(0xf3, 0xf5, 0xf9), RGBColor(0xe8, 0xec, 0xf3)];
/// Secondary text.
const NOTE_COLOR: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// Blank space left of everything (the y axis descriptions), in pixels.
const PAD: u32 = 10;
/// Font family name under which the embedded font is registered.
const FONT: &str = "sans-serif";
/// Left margin of every panel (room for the y labels), in pixels; the
/// same for all panels so that their time axes line up.
const LEFT: u32 = 80;
/// Right margin of every panel, in pixels.
const RIGHT: u32 = 20;
/// Heights, in pixels: title, scenario names (two rows), leader strip,
/// the upper panel, the lower panel (with the time axis below it), and the
/// legend.
const TITLE_H: u32 = 34;
const NAMES_H: u32 = 38;
const STRIP_H: u32 = 24;
const UPPER_H: u32 = 310;
const LOWER_H: u32 = 240;
const X_AXIS_H: u32 = 50;
const LEGEND_H: u32 = 64;

/// Makes the embedded DejaVu Sans (regular and bold) the plot's font.
///
/// plotters' `ab_glyph` feature draws text with fonts registered here
/// rather than looking them up on the system (its `ttf` feature needs
/// fontconfig and FreeType), and the `dejavu` crate ships the font files
/// inside the binary: the PNG gets the same text on any machine, with no
/// font package installed and nothing read at run time. The SVG names the
/// family only (`sans-serif`); its viewer draws the text.
fn register_font() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ensure!(loaded, "the embedded DejaVu Sans font could not be parsed");
    Ok(())
}

/// What the timeline plot shows, computed once and drawn on each backend.
struct Timeline<'a> {
    runs: &'a [ScenarioRun],
    changes: &'a [LeaderChange],
    /// Each run's longest stretch without a successful operation of any
    /// client (the table's `unavail`).
    gaps: Vec<Gap>,
    /// End of the time axis, in seconds.
    t_max: f64,
    bucket_ms: u64,
    /// Successful operations per second, per bucket: all clients, and
    /// the clients of each node.
    ok: Vec<f64>,
    ok_node: [Vec<f64>; 3],
    /// Failed and indeterminate operations per second, per bucket.
    failed: Vec<f64>,
    indet: Vec<f64>,
}

impl<'a> Timeline<'a> {
    fn new(
        ops: &[Op],
        runs: &'a [ScenarioRun],
        changes: &'a [LeaderChange],
        end_ns: u64,
        bucket_ms: u64,
    ) -> Timeline<'a> {
        let bucket_ms = bucket_ms.max(1);
        let bucket = bucket_ms * 1_000_000;
        let n = (end_ns / bucket + 1) as usize;
        let per_sec = 1000.0 / bucket_ms as f64;
        let mut t = Timeline {
            runs,
            changes,
            gaps: runs
                .iter()
                .map(|r| longest_gap(ops.iter(), r.start_ns, r.end_ns))
                .collect(),
            t_max: s(end_ns).max(1.0),
            bucket_ms,
            ok: vec![0.0; n],
            ok_node: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
            failed: vec![0.0; n],
            indet: vec![0.0; n],
        };
        for o in ops.iter().filter(|o| o.phase != crate::FINAL_PHASE) {
            let i = ((o.complete_ns / bucket) as usize).min(n - 1);
            match o.outcome {
                Outcome::Ok => {
                    t.ok[i] += per_sec;
                    if let Some(v) = t.ok_node.get_mut(o.node as usize) {
                        v[i] += per_sec;
                    }
                }
                Outcome::Failed => t.failed[i] += per_sec,
                // An unexpected answer is drawn with the indeterminate
                // ones (it is also reported as an anomaly).
                Outcome::Indeterminate | Outcome::Unexpected => t.indet[i] += per_sec,
            }
        }
        t
    }

    /// The points of one series: each bucket's value at its middle.
    fn points<'b>(&self, vals: &'b [f64]) -> impl Iterator<Item = (f64, f64)> + Clone + 'b {
        let w = self.bucket_ms as f64 / 1000.0;
        vals.iter()
            .enumerate()
            .map(move |(i, v)| ((i as f64 + 0.5) * w, *v))
    }

    /// Fault window of a run: from its first injection to the end of its
    /// last heal.
    fn fault_window(r: &ScenarioRun) -> Option<(f64, f64)> {
        let inject = r.events.iter().find(|e| e.kind == "inject")?;
        let heal = r.events.iter().rev().find(|e| e.kind == "heal")?;
        Some((s(inject.t_ns), s(heal.done_ns)))
    }

    /// Draws the whole picture on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (title, rest) = root.margin(0, 0, PAD, 0).split_vertically(TITLE_H);
        let (names, rest) = rest.split_vertically(NAMES_H);
        let (strip, rest) = rest.split_vertically(STRIP_H);
        let (upper, rest) = rest.split_vertically(UPPER_H);
        let (lower, legend) = rest.split_vertically(LOWER_H + X_AXIS_H);

        title.draw(&Text::new(
            format!(
                "EventStore fault injection: throughput and errors over time ({} ms buckets)",
                self.bucket_ms
            ),
            (LEFT as i32, 8),
            (FONT, 20, FontStyle::Bold).into_font().color(&BLACK),
        ))?;
        self.draw_names(&names)?;
        self.draw_leader_strip(&strip)?;

        let y1_max = self.ok.iter().copied().fold(1.0, f64::max) * 1.08;
        let mut chart = ChartBuilder::on(&upper)
            .margin_right(RIGHT)
            .margin_top(4)
            .y_label_area_size(LEFT)
            .build_cartesian_2d(0.0..self.t_max, 0.0..y1_max)?;
        self.draw_backdrop(&mut chart, y1_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("successful ops/s")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .bold_line_style(RGBColor(0xcc, 0xcc, 0xcc).stroke_width(1))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for (i, series) in self.ok_node.iter().enumerate() {
            chart.draw_series(LineSeries::new(
                self.points(series),
                NODE_COLORS[i].mix(0.85).stroke_width(1),
            ))?;
        }
        chart.draw_series(LineSeries::new(
            self.points(&self.ok),
            OK_COLOR.stroke_width(2),
        ))?;
        self.draw_gaps(&mut chart, y1_max)?;
        self.draw_events(&mut chart, y1_max, true)?;
        self.draw_frame(&mut chart, y1_max)?;

        let y2_max = self
            .failed
            .iter()
            .chain(self.indet.iter())
            .copied()
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&lower)
            .margin_right(RIGHT)
            .margin_top(14)
            .y_label_area_size(LEFT)
            .x_label_area_size(X_AXIS_H)
            .build_cartesian_2d(0.0..self.t_max, 0.0..y2_max)?;
        self.draw_backdrop(&mut chart, y2_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(20)
            .y_labels(5)
            .x_label_formatter(&|v| format!("{}", (v * 1000.0).round() / 1000.0))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("time since start (s)")
            .y_desc("failed / indeterminate ops/s")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .bold_line_style(RGBColor(0xcc, 0xcc, 0xcc).stroke_width(1))
            .light_line_style(TRANSPARENT)
            .draw()?;
        chart.draw_series(LineSeries::new(
            self.points(&self.indet),
            INDET_COLOR.stroke_width(2),
        ))?;
        chart.draw_series(LineSeries::new(
            self.points(&self.failed),
            FAILED_COLOR.stroke_width(2),
        ))?;
        self.draw_events(&mut chart, y2_max, false)?;
        self.draw_frame(&mut chart, y2_max)?;

        self.draw_legend(&legend)?;
        root.present()?;
        Ok(())
    }

    /// Scenario names above the plot, centred on their bands, on two
    /// alternating rows so that neighbouring names do not collide.
    fn draw_names<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let chart = ChartBuilder::on(area)
            .margin_right(RIGHT)
            .y_label_area_size(LEFT)
            .build_cartesian_2d(0.0..self.t_max, 0.0..2.0)?;
        let style = (FONT, 15, FontStyle::Bold)
            .into_font()
            .color(&RGBColor(0x22, 0x22, 0x33))
            .pos(Pos::new(HPos::Center, VPos::Center));
        for (i, r) in self.runs.iter().enumerate() {
            let mid = (s(r.start_ns) + s(r.end_ns)) / 2.0;
            let row = if i % 2 == 0 { 1.5 } else { 0.5 };
            chart
                .plotting_area()
                .draw(&Text::new(r.name.clone(), (mid, row), style.clone()))?;
        }
        Ok(())
    }

    /// The leader seen by the status polls: a strip coloured by node, with
    /// the leader and its term written in when there is room; grey while
    /// no node reports itself leader.
    fn draw_leader_strip<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let area = area.margin(3, 3, 0, 0);
        let (_, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            "leader",
            (LEFT as i32 - 8, h as i32 / 2),
            (FONT, 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        let chart = ChartBuilder::on(&area)
            .margin_right(RIGHT)
            .y_label_area_size(LEFT)
            .build_cartesian_2d(0.0..self.t_max, 0.0..1.0)?;
        let plot = chart.plotting_area();
        plot.draw(&Rectangle::new(
            [(0.0, 0.0), (self.t_max, 1.0)],
            NO_LEADER_COLOR.filled(),
        ))?;
        let label_style = (FONT, 13)
            .into_font()
            .color(&WHITE)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (i, c) in self.changes.iter().enumerate() {
            let Some(leader) = c.leader else { continue };
            let a = s(c.t_ns).min(self.t_max);
            let b = self
                .changes
                .get(i + 1)
                .map_or(self.t_max, |n| s(n.t_ns))
                .min(self.t_max);
            let color = NODE_COLORS
                .get(leader as usize)
                .copied()
                .unwrap_or(RGBColor(0x33, 0x33, 0x33));
            plot.draw(&Rectangle::new([(a, 0.0), (b, 1.0)], color.filled()))?;
            let label = format!("n{leader} t{}", c.term);
            let (w, _) = area.estimate_text_size(&label, &label_style)?;
            let room = plot.map_coordinate(&(b, 0.0)).0 - plot.map_coordinate(&(a, 0.0)).0;
            if room > w as i32 + 8 {
                plot.draw(
                    &(EmptyElement::at((a, 0.5)) + Text::new(label, (4, 0), label_style.clone())),
                )?;
            }
        }
        Ok(())
    }

    /// Scenario bands and fault windows, behind everything else.
    fn draw_backdrop<DB: DrawingBackend>(
        &self,
        chart: &mut TimeChart<'_, DB>,
        y_max: f64,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        chart.draw_series(self.runs.iter().enumerate().map(|(i, r)| {
            Rectangle::new(
                [(s(r.start_ns), 0.0), (s(r.end_ns), y_max)],
                BAND_COLORS[i % 2].filled(),
            )
        }))?;
        chart.draw_series(
            self.runs
                .iter()
                .filter_map(Self::fault_window)
                .map(|(a, b)| {
                    Rectangle::new([(a, 0.0), (b, y_max)], FAULT_COLOR.mix(0.6).filled())
                }),
        )?;
        Ok(())
    }

    /// Each run's longest stretch without a successful operation of any
    /// client: a dark bar along the bottom of the upper panel, labelled
    /// with its length when it is long enough to matter.
    fn draw_gaps<DB: DrawingBackend>(&self, chart: &mut TimeChart<'_, DB>, y_max: f64) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let h = y_max * 0.025;
        let label_style = (FONT, 13)
            .into_font()
            .color(&GAP_COLOR)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for g in self.gaps.iter().filter(|g| g.secs > 0.0) {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(g.from_s, 0.0), (g.to_s, h)],
                GAP_COLOR.filled(),
            )))?;
            if g.secs >= 0.5 {
                chart.draw_series(std::iter::once(Text::new(
                    format!("{:.2} s", g.secs),
                    ((g.from_s + g.to_s) / 2.0, h * 1.6),
                    label_style.clone(),
                )))?;
            }
        }
        Ok(())
    }

    /// Fault actions as vertical lines: solid red for an injection, dashed
    /// green for a heal, dotted grey for anything else. In the upper panel
    /// (`labels`) injections are labelled from the top down and heals from
    /// the bottom up, so that close pairs do not overlap.
    fn draw_events<DB: DrawingBackend>(
        &self,
        chart: &mut TimeChart<'_, DB>,
        y_max: f64,
        labels: bool,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        for e in self.runs.iter().flat_map(|r| r.events.iter()) {
            let t = s(e.t_ns);
            let line = [(t, 0.0), (t, y_max)];
            let color = match e.kind.as_str() {
                "inject" => {
                    chart.draw_series(std::iter::once(PathElement::new(
                        line,
                        FAILED_COLOR.stroke_width(2),
                    )))?;
                    FAILED_COLOR
                }
                "heal" => {
                    chart.draw_series(std::iter::once(DashedPathElement::new(
                        line,
                        6,
                        4,
                        OK_COLOR.stroke_width(2),
                    )))?;
                    OK_COLOR
                }
                _ => {
                    chart.draw_series(std::iter::once(DashedPathElement::new(
                        line,
                        2,
                        3,
                        NOTE_COLOR.stroke_width(1),
                    )))?;
                    NOTE_COLOR
                }
            };
            if !labels {
                continue;
            }
            // Rotated a quarter turn counter-clockwise, read bottom to top,
            // just right of the line, on a light backing so that it stays
            // legible where it crosses a series. Injections hang from the
            // top (the text ends there), heals rise from the bottom.
            let inject = e.kind == "inject";
            let (at, h, dy) = if inject {
                ((t, y_max), HPos::Right, 4)
            } else {
                ((t, 0.0), HPos::Left, -22)
            };
            let style = (FONT, 13)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&color)
                .pos(Pos::new(h, VPos::Top));
            // Laid out horizontally: (length, height); upright on the plot.
            let (len, high) = chart.plotting_area().estimate_text_size(&e.label, &style)?;
            let (len, high) = (len as i32, high as i32);
            let (top, bottom) = if inject {
                (dy - 2, dy + len + 2)
            } else {
                (dy - len - 2, dy + 2)
            };
            chart.draw_series(std::iter::once(
                EmptyElement::at(at)
                    + Rectangle::new([(4, top), (7 + high, bottom)], WHITE.mix(0.75).filled())
                    + Text::new(e.label.clone(), (5, dy), style),
            ))?;
        }
        Ok(())
    }

    /// A thin frame around a panel.
    fn draw_frame<DB: DrawingBackend>(
        &self,
        chart: &mut TimeChart<'_, DB>,
        y_max: f64,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (self.t_max, y_max)],
            RGBColor(0x44, 0x44, 0x44).stroke_width(1),
        )))?;
        Ok(())
    }

    /// The legend under the plot (swatches and labels, wrapped to the
    /// width), and a line on how to read the marks.
    fn draw_legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        enum Mark {
            Line(RGBColor, u32),
            Dashed(RGBColor),
            Box(RGBColor),
        }
        let items = [
            (Mark::Line(OK_COLOR, 3), "ok ops/s, all clients"),
            (Mark::Line(NODE_COLORS[0], 2), "ok ops/s via n0"),
            (Mark::Line(NODE_COLORS[1], 2), "ok ops/s via n1"),
            (Mark::Line(NODE_COLORS[2], 2), "ok ops/s via n2"),
            (Mark::Line(FAILED_COLOR, 2), "failed ops/s (not applied)"),
            (Mark::Line(INDET_COLOR, 2), "indeterminate ops/s"),
            (Mark::Box(FAULT_COLOR), "fault in effect (inject to heal)"),
            (Mark::Line(FAILED_COLOR, 2), "fault injected"),
            (Mark::Dashed(OK_COLOR), "fault healed"),
            (
                Mark::Box(GAP_COLOR),
                "longest gap without a successful op (cluster)",
            ),
            (Mark::Box(NO_LEADER_COLOR), "no leader seen (strip at top)"),
        ];
        let font = (FONT, 14).into_font();
        let text = font
            .clone()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let (w, _) = area.dim_in_pixel();
        let (mut x, mut y) = (LEFT as i32, 12);
        for (mark, label) in items {
            let (tw, _) = area.estimate_text_size(label, &text)?;
            if x + 26 + tw as i32 > (w - RIGHT) as i32 {
                x = LEFT as i32;
                y += 22;
            }
            match mark {
                Mark::Line(c, width) => area.draw(&PathElement::new(
                    [(x, y), (x + 20, y)],
                    c.stroke_width(width),
                ))?,
                Mark::Dashed(c) => area.draw(&DashedPathElement::new(
                    [(x, y), (x + 20, y)],
                    5,
                    3,
                    c.stroke_width(2),
                ))?,
                Mark::Box(c) => {
                    area.draw(&Rectangle::new([(x, y - 6), (x + 20, y + 6)], c.filled()))?
                }
            }
            area.draw(&Text::new(label, (x + 26, y), text.clone()))?;
            x += 26 + tw as i32 + 22;
        }
        area.draw(&Text::new(
            "vertical lines: red = fault injected, dashed green = healed; shaded bands = scenarios; \
             top strip = leader (node colour) and term, from admin status polls every 200 ms",
            (LEFT as i32, y + 24),
            font.color(&NOTE_COLOR).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        Ok(())
    }
}

/// A panel with time (s) across and a value up.
type TimeChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Writes the timeline plot as `timeline.svg` and `timeline.png` in `dir`:
/// successful operations per second (all clients, and per node) and
/// failed / indeterminate operations per second, in buckets of
/// `bucket_ms`, over each scenario's span (named above the plot), with
/// each fault action and fault window marked, each scenario's longest
/// unavailability window, and the leader and its term along the top.
pub fn write_timeline(
    dir: &Path,
    ops: &[Op],
    runs: &[ScenarioRun],
    changes: &[LeaderChange],
    end_ns: u64,
    bucket_ms: u64,
) -> Result<()> {
    register_font()?;
    let t = Timeline::new(ops, runs, changes, end_ns, bucket_ms);
    // About 10 px per second, so that short scenarios stay readable.
    let width = (f64::from(PAD + LEFT + RIGHT) + 10.0 * t.t_max).clamp(1500.0, 2800.0) as u32;
    let height = TITLE_H + NAMES_H + STRIP_H + UPPER_H + LOWER_H + X_AXIS_H + LEGEND_H;

    let svg = dir.join("timeline.svg");
    t.draw(&SVGBackend::new(&svg, (width, height)).into_drawing_area())
        .with_context(|| format!("drawing {}", svg.display()))?;
    let png = dir.join("timeline.png");
    t.draw(&BitMapBackend::new(&png, (width, height)).into_drawing_area())
        .with_context(|| format!("drawing {}", png.display()))?;
    Ok(())
}

/// Anomalies grouped by the phase that owns their key.
pub fn anomalies_by_phase(
    anomalies: &[Anomaly],
    key_phase: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<Anomaly>> {
    let mut m: BTreeMap<String, Vec<Anomaly>> = BTreeMap::new();
    for a in anomalies {
        let phase = key_phase
            .get(&a.key)
            .cloned()
            .unwrap_or_else(|| "convergence".into());
        m.entry(phase).or_default().push(a.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn op(
        id: usize,
        node: u32,
        phase: &str,
        invoke_ms: u64,
        latency_us: u64,
        outcome: Outcome,
    ) -> Op {
        Op {
            id,
            client: node,
            node,
            phase: phase.into(),
            key: "k".into(),
            kind: Kind::Load,
            value: None,
            ttl_ms: 0,
            invoke_ns: invoke_ms * MS,
            complete_ns: invoke_ms * MS + latency_us * 1_000,
            outcome,
            error: None,
        }
    }

    /// A 12-second scenario: n0 killed at 3 s and back at 7 s, with the
    /// leader moving from n0 to n1.
    fn synthetic() -> (Vec<Op>, Vec<ScenarioRun>, Vec<LeaderChange>) {
        let mut ops = Vec::new();
        for ms in (0..12_000).step_by(20) {
            let node = (ms / 20 % 3) as u32;
            let down = (3_000..7_000).contains(&ms);
            let outcome = match (down, node) {
                (true, 0) if ms % 60 == 0 => Outcome::Indeterminate,
                (true, 0) => Outcome::Failed,
                (true, _) if ms < 4_500 => Outcome::Failed,
                _ => Outcome::Ok,
            };
            ops.push(op(ops.len(), node, "kill-leader#1", ms, 1_500, outcome));
        }
        let event = |ms: u64, kind: &str, label: &str| Event {
            t_ns: ms * MS,
            done_ns: (ms + 200) * MS,
            kind: kind.into(),
            label: label.into(),
            node: Some(0),
        };
        let runs = vec![ScenarioRun {
            name: "kill-leader#1".into(),
            start_ns: 0,
            end_ns: 12_000 * MS,
            events: vec![
                event(3_000, "inject", "kill n0 (leader)"),
                event(7_000, "heal", "start n0"),
            ],
            leader_before: Some(0),
            leader_after: Some(1),
            recovery_secs: Some(0.5),
            error: None,
        }];
        let changes = vec![
            LeaderChange {
                t_ns: 0,
                leader: Some(0),
                term: 1,
            },
            LeaderChange {
                t_ns: 3_100 * MS,
                leader: None,
                term: 1,
            },
            LeaderChange {
                t_ns: 4_400 * MS,
                leader: Some(1),
                term: 2,
            },
        ];
        (ops, runs, changes)
    }

    #[test]
    fn timeline_is_written_as_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let (ops, runs, changes) = synthetic();
        write_timeline(dir.path(), &ops, &runs, &changes, 12_000 * MS, 250).unwrap();

        let png = std::fs::read(dir.path().join("timeline.png")).unwrap();
        assert!(png.len() > 1000, "PNG of {} bytes", png.len());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

        let svg = std::fs::read_to_string(dir.path().join("timeline.svg")).unwrap();
        assert!(
            svg.starts_with("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(80)]
        );
        for text in [
            "EventStore fault injection: throughput and errors over time (250 ms buckets)",
            "kill-leader#1",
            "kill n0 (leader)",
            "start n0",
            "leader",
            "n1 t2",
            "successful ops/s",
            "failed / indeterminate ops/s",
            "time since start (s)",
            "ok ops/s, all clients",
            "ok ops/s via n0",
            "ok ops/s via n1",
            "ok ops/s via n2",
            "failed ops/s (not applied)",
            "indeterminate ops/s",
            "fault in effect (inject to heal)",
            "longest gap without a successful op (cluster)",
            "no leader seen (strip at top)",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
    }

    #[test]
    fn latency_percentiles_come_from_acknowledged_ops() {
        // 1..=1000 ms, acknowledged; one slow failure that must not count.
        let mut ops: Vec<Op> = (1..=1000)
            .map(|i| op(i as usize, 0, "p", 0, i * 1_000, Outcome::Ok))
            .collect();
        ops.push(op(0, 0, "p", 0, 5_000_000, Outcome::Failed));
        let l = Latency::of(ops.iter());
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(l.p50, 500.0), "p50 {}", l.p50);
        assert!(close(l.p99, 990.0), "p99 {}", l.p99);
        assert!(close(l.max, 1000.0), "max {}", l.max);

        let none = Latency::of(ops.iter().filter(|o| o.outcome != Outcome::Ok));
        assert_eq!((none.p50, none.p99, none.max), (0.0, 0.0, 0.0));
    }

    fn requirements() -> Requirements {
        Requirements {
            min_saves_after_heal: 100,
            min_loads_after_heal: 200,
            max_unknown_share: 0.10,
            min_expired_reads: 20,
            election: true,
        }
    }

    /// A row that meets [`requirements`]: 1,000 operations, 50
    /// indeterminate; 300 Saves and 400 Loads acknowledged after the heal;
    /// 30 expired reads; a new leader 1.4 s after the fault.
    fn good_row() -> Row {
        let (ops, runs, changes) = synthetic();
        let mut r = row(&runs[0], &ops, &[], &changes, vec![], 0);
        r.counts = Counts {
            total: 1000,
            ok: 900,
            failed: 50,
            indeterminate: 50,
            ..Counts::default()
        };
        r.after_heal = Counts {
            saves: 310,
            saves_ok: 300,
            loads: 420,
            loads_ok: 400,
            ..Counts::default()
        };
        r.ttl_probe = Some(TtlProbe {
            saves: 40,
            absent_after_expiry: 30,
            ..TtlProbe::default()
        });
        r
    }

    #[test]
    fn a_phase_that_did_something_passes() {
        let mut r = good_row();
        assert_eq!(r.new_leader_secs.map(|x| (x * 10.0).round()), Some(14.0));
        assert!(unmet(&r, &requirements()).is_empty());
        judge(&mut r, &requirements());
        assert!(r.passed, "{:?}", r.unmet);
        assert_eq!(r.requirements, Some(requirements()));
    }

    /// Each broken requirement alone fails the row with its own message.
    #[test]
    fn each_unmet_requirement_fails_the_phase() {
        type Break = fn(&mut Row);
        let cases: [(&str, Break); 7] = [
            ("acknowledged Saves after the heal", |r| {
                r.after_heal.saves_ok = 99
            }),
            ("acknowledged Loads after the heal", |r| {
                r.after_heal.loads_ok = 0
            }),
            ("unknown outcome", |r| r.counts.indeterminate = 101),
            ("unknown outcome", |r| {
                r.counts.indeterminate = 60;
                r.counts.unexpected = 41;
            }),
            ("gone after its TTL", |r| {
                r.ttl_probe.as_mut().unwrap().absent_after_expiry = 19
            }),
            ("gone after its TTL", |r| r.ttl_probe = None),
            ("no election", |r| r.new_leader_secs = None),
        ];
        for (want, break_it) in cases {
            let mut r = good_row();
            break_it(&mut r);
            let u = unmet(&r, &requirements());
            assert_eq!(u.len(), 1, "{want}: {u:?}");
            assert!(u[0].contains(want), "{want}: {u:?}");
            judge(&mut r, &requirements());
            assert!(!r.passed, "{want}");
            assert!(table(&[r]).contains("FAIL"));
        }
    }

    #[test]
    fn a_phase_where_everything_failed_fails_every_requirement_it_can() {
        let mut r = good_row();
        r.counts = Counts {
            total: 500,
            indeterminate: 500,
            ..Counts::default()
        };
        r.after_heal = Counts {
            saves: 200,
            loads: 250,
            ..Counts::default()
        };
        r.ttl_probe = None;
        r.new_leader_secs = None;
        judge(&mut r, &requirements());
        assert_eq!(r.unmet.len(), 5, "{:?}", r.unmet);
        assert!(!r.passed);
        assert!(r.unmet[0].contains("0 acknowledged Saves after the heal (200 sent)"));
    }

    #[test]
    fn follower_scenarios_need_no_election() {
        let mut r = good_row();
        r.new_leader_secs = None;
        let req = Requirements {
            election: false,
            ..requirements()
        };
        assert!(unmet(&r, &req).is_empty());
    }

    #[test]
    fn the_counts_after_the_heal_start_at_its_end() {
        // The heal of synthetic() ends at 7.2 s; operations every 20 ms.
        let (ops, runs, changes) = synthetic();
        let r = row(&runs[0], &ops, &[], &changes, vec![], 0);
        assert_eq!(r.after_heal.total, (12_000 - 7_200) / 20);
        assert_eq!(r.after_heal.loads_ok, r.after_heal.total);
    }

    #[test]
    fn the_ttl_probe_counts_expiry_and_when_it_happened() {
        let at = |id: usize, kind: Kind, value: Option<&str>, ttl_ms: u64, inv: u64| Op {
            id,
            client: 0,
            node: 0,
            phase: "p".into(),
            key: "k".into(),
            kind,
            value: value.map(str::to_string),
            ttl_ms,
            invoke_ns: inv * MS,
            complete_ns: (inv + 5) * MS,
            outcome: Outcome::Ok,
            error: None,
        };
        let ops = vec![
            at(0, Kind::Save, Some("a"), 1_000, 0),
            at(1, Kind::Load, Some("a"), 0, 950), // near its deadline
            at(2, Kind::Load, None, 0, 1_010),    // expired at 1.0 s
            at(3, Kind::Load, None, 0, 1_500),
            at(4, Kind::Save, Some("b"), 900_000, 2_000), // long TTL
            at(5, Kind::Load, None, 0, 3_000),            // not expiry
            at(6, Kind::Save, Some("c"), 3_000, 4_000),
            at(7, Kind::Load, None, 0, 5_000), // too early for expiry
        ];
        let p = ttl_probe(&ops, "p", Some((500 * MS, 1_200 * MS)));
        assert_eq!(p.saves, 2);
        assert_eq!(p.absent_after_expiry, 2);
        assert_eq!(p.expired_during_fault, 2);
        assert_eq!(p.reads_near_deadline, 1);
        let p = ttl_probe(&ops, "p", Some((1_200 * MS, 9_000 * MS)));
        assert_eq!(p.expired_during_fault, 0);
    }
}

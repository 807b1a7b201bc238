//! Per-scenario numbers (operation counts, unavailability windows,
//! latencies, checker cost and anomalies), the console table, and the
//! timeline plot (SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;

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
    /// Saves.
    pub saves: usize,
    /// Loads.
    pub loads: usize,
    /// Deletes.
    pub deletes: usize,
}

impl Counts {
    fn of<'a>(ops: impl Iterator<Item = &'a Op>) -> Counts {
        let mut c = Counts::default();
        for op in ops {
            c.total += 1;
            match op.outcome {
                Outcome::Ok => c.ok += 1,
                Outcome::Failed => c.failed += 1,
                Outcome::Indeterminate => c.indeterminate += 1,
            }
            match op.kind {
                Kind::Save => c.saves += 1,
                Kind::Load => c.loads += 1,
                Kind::Delete => c.deletes += 1,
            }
        }
        c
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
    /// How closely the reads probed TTL expiry (short-TTL phase only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_probe: Option<TtlProbe>,
    /// No anomaly and no error.
    pub passed: bool,
}

/// Evidence that the short-TTL phase exercised expiry.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TtlProbe {
    /// Acknowledged Saves.
    pub saves: usize,
    /// Loads answered "absent" whose latest preceding acknowledged write
    /// on the key was a Save (so the value had expired).
    pub absent_after_expiry: usize,
    /// Loads that returned a value, invoked at least 90% of its TTL after
    /// the Save was invoked (reads close to the deadline).
    pub reads_near_deadline: usize,
    /// The oldest value read, as a fraction of its TTL (age from the
    /// Save's invocation to the Load's invocation).
    pub max_read_age_ratio: f64,
}

/// Measures how the Loads of `phase` probed expiry.
pub fn ttl_probe(ops: &[Op], phase: &str) -> TtlProbe {
    use std::collections::HashMap;
    let mine: Vec<&Op> = ops.iter().filter(|o| o.phase == phase).collect();
    let mut saves: HashMap<(&str, &str), &Op> = HashMap::new();
    let mut p = TtlProbe::default();
    for o in mine.iter().filter(|o| o.kind == Kind::Save) {
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
                    if w.ttl_ms > 0 {
                        let age = r.invoke_ns.saturating_sub(w.invoke_ns) as f64;
                        let ratio = age / (w.ttl_ms as f64 * 1e6);
                        p.max_read_age_ratio = p.max_read_age_ratio.max(ratio);
                        if ratio >= 0.9 {
                            p.reads_near_deadline += 1;
                        }
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
                if last.is_some_and(|w| w.kind == Kind::Save) {
                    p.absent_after_expiry += 1;
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
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
    let mut lat: Vec<f64> = mine
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| (o.complete_ns - o.invoke_ns) as f64 / 1e6)
        .collect();
    lat.sort_by(f64::total_cmp);
    let check = CheckCost {
        keys: keys.len(),
        ops: keys.iter().map(|k| k.ops).sum(),
        searched_ops: keys.iter().map(|k| k.searched_ops).sum(),
        states: keys.iter().map(|k| k.states).sum(),
        millis: keys.iter().map(|k| k.millis).sum(),
    };
    let passed = anomalies.is_empty() && run.error.is_none();
    Row {
        name: run.name.clone(),
        start_s: s(a),
        end_s: s(b),
        counts: Counts::of(mine.iter().copied()),
        unavailability: Unavailability {
            cluster: longest_gap(all_ops.iter(), a, b),
            per_node,
        },
        latency_ms: Latency {
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
            max: lat.last().copied().unwrap_or(0.0),
        },
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
        ttl_probe: None,
        passed,
    }
}

/// The console table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>6} {:>6} {:>5} {:>6} {:>8} {:>16} {:>9} {:>8} {:>8} {:>7} {:>9}  result",
        "scenario",
        "ops",
        "ok",
        "fail",
        "indet",
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
        let _ = writeln!(
            out,
            "{:<22} {:>6} {:>6} {:>5} {:>6} {:>8} {:>16} {:>9} {:>8} {:>8.1} {:>7} {:>9}  {}",
            r.name,
            r.counts.total,
            r.counts.ok,
            r.counts.failed,
            r.counts.indeterminate,
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

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_step(max: f64, target_ticks: f64) -> f64 {
    let raw = (max / target_ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The timeline plot: successful operations per second (all clients, and
/// per node) and failed / indeterminate operations per second, in buckets
/// of `bucket_ms`, with each scenario's span and each fault action marked.
pub fn timeline_svg(
    ops: &[Op],
    runs: &[ScenarioRun],
    changes: &[LeaderChange],
    end_ns: u64,
    bucket_ms: u64,
) -> String {
    const TOP: f64 = 100.0;
    const H1: f64 = 300.0;
    const GAP: f64 = 40.0;
    const H2: f64 = 170.0;
    const BOTTOM: f64 = 90.0;
    let height = TOP + H1 + GAP + H2 + BOTTOM;
    let t_max = s(end_ns).max(1.0);
    // About 10 px per second, so that short scenarios stay readable.
    let width = (LEFT + RIGHT + 10.0 * t_max).clamp(1500.0, 2800.0).round();
    let plot_w = width - LEFT - RIGHT;
    let bucket = bucket_ms.max(1) * 1_000_000;
    let n = (end_ns / bucket + 1) as usize;
    let per_sec = 1000.0 / bucket_ms.max(1) as f64;
    let mut ok = vec![0f64; n];
    let mut ok_node = vec![vec![0f64; n]; 3];
    let mut failed = vec![0f64; n];
    let mut indet = vec![0f64; n];
    for o in ops.iter().filter(|o| o.phase != "final") {
        let i = ((o.complete_ns / bucket) as usize).min(n - 1);
        match o.outcome {
            Outcome::Ok => {
                ok[i] += per_sec;
                if let Some(v) = ok_node.get_mut(o.node as usize) {
                    v[i] += per_sec;
                }
            }
            Outcome::Failed => failed[i] += per_sec,
            Outcome::Indeterminate => indet[i] += per_sec,
        }
    }
    let x = |t: f64| LEFT + plot_w * t / t_max;
    let y1_max = ok.iter().cloned().fold(1.0, f64::max) * 1.08;
    let y2_max = failed
        .iter()
        .chain(indet.iter())
        .cloned()
        .fold(1.0, f64::max)
        * 1.1;
    let y1 = |v: f64| TOP + H1 - H1 * v / y1_max;
    let top2 = TOP + H1 + GAP;
    let y2 = |v: f64| top2 + H2 - H2 * v / y2_max;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">EventStore fault injection: throughput and errors over time ({bucket_ms} ms buckets)</text>"##
    );

    // Scenario spans (alternating shade) and names.
    for (i, r) in runs.iter().enumerate() {
        let (a, b) = (x(s(r.start_ns)), x(s(r.end_ns)));
        let fill = if i % 2 == 0 { "#f3f5f9" } else { "#e8ecf3" };
        for (top, h) in [(TOP, H1), (top2, H2)] {
            let _ = writeln!(
                svg,
                r##"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{h}" fill="{fill}"/>"##,
                (b - a).max(0.0)
            );
        }
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold" fill="#223">{}</text>"##,
            (a + b) / 2.0,
            // Alternate two rows so that neighbouring names do not collide.
            TOP - 58.0 + 14.0 * (i % 2) as f64,
            esc(&r.name)
        );
        // Fault window: from the first inject to the last heal.
        let inj = r.events.iter().find(|e| e.kind == "inject").map(|e| e.t_ns);
        let heal = r
            .events
            .iter()
            .rev()
            .find(|e| e.kind == "heal")
            .map(|e| e.done_ns);
        if let (Some(i0), Some(h0)) = (inj, heal) {
            for (top, h) in [(TOP, H1), (top2, H2)] {
                let _ = writeln!(
                    svg,
                    r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{h}" fill="#ffd9d9" fill-opacity="0.6"/>"##,
                    x(s(i0)),
                    (x(s(h0)) - x(s(i0))).max(1.0)
                );
            }
        }
    }

    // Leader strip: who the status polls saw as leader, and its term.
    let node_colors = ["#1f77b4", "#9467bd", "#17becf"];
    let (sy, sh) = (TOP - 34.0, 14.0);
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">leader</text><rect x="{LEFT}" y="{sy}" width="{plot_w}" height="{sh}" fill="#999"/>"##,
        LEFT - 6.0,
        sy + 11.0
    );
    for (i, c) in changes.iter().enumerate() {
        let a = s(c.t_ns).min(t_max);
        let b = changes
            .get(i + 1)
            .map(|n| s(n.t_ns))
            .unwrap_or(t_max)
            .min(t_max);
        let (fill, label) = match c.leader {
            Some(l) => (
                node_colors.get(l as usize).copied().unwrap_or("#333"),
                format!("n{l} t{}", c.term),
            ),
            None => ("#999", String::new()),
        };
        let w = (x(b) - x(a)).max(0.0);
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{sy}" width="{w:.1}" height="{sh}" fill="{fill}"/>"##,
            x(a)
        );
        if w > 44.0 && !label.is_empty() {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="white">{label}</text>"##,
                x(a) + 3.0,
                sy + 11.0
            );
        }
    }

    // Axes and grid.
    horizontal_grid(&mut svg, y1_max, nice_step(y1_max, 5.0), &y1, width);
    horizontal_grid(&mut svg, y2_max, nice_step(y2_max, 4.0), &y2, width);
    let xstep = nice_step(t_max, 20.0).max(1.0);
    let mut t = 0.0;
    while t <= t_max {
        let xx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#888"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
            top2 + H2,
            top2 + H2 + 5.0,
            top2 + H2 + 18.0
        );
        t += xstep;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (s)</text>"##,
        LEFT + plot_w / 2.0,
        top2 + H2 + 36.0
    );
    for (top, h, label) in [
        (TOP, H1, "successful ops/s"),
        (top2, H2, "failed / indeterminate ops/s"),
    ] {
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{h}" fill="none" stroke="#444"/><text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{label}</text>"##,
            top + h / 2.0
        );
    }

    // Series.
    let poly = |vals: &[f64], y: &dyn Fn(f64) -> f64| -> String {
        let mut p = String::new();
        for (i, v) in vals.iter().enumerate() {
            let t = (i as f64 + 0.5) * bucket_ms as f64 / 1000.0;
            let _ = write!(p, "{:.1},{:.1} ", x(t), y(*v));
        }
        p
    };
    for (i, series) in ok_node.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{}" stroke-width="1" stroke-opacity="0.85" points="{}"/>"##,
            node_colors[i],
            poly(series, &y1)
        );
    }
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#2ca02c" stroke-width="1.8" points="{}"/>"##,
        poly(&ok, &y1)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#ff7f0e" stroke-width="1.4" points="{}"/>"##,
        poly(&indet, &y2)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#d62728" stroke-width="1.4" points="{}"/>"##,
        poly(&failed, &y2)
    );

    // Fault actions: solid red for an injection, dashed green for a heal,
    // labelled vertically at the top of the upper panel.
    for e in runs.iter().flat_map(|r| r.events.iter()) {
        let xx = x(s(e.t_ns));
        let (color, dash) = match e.kind.as_str() {
            "inject" => ("#d62728", ""),
            "heal" => ("#2ca02c", r##" stroke-dasharray="5,3""##),
            _ => ("#555", r##" stroke-dasharray="2,2""##),
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.3"{dash}/>"##,
            top2 + H2
        );
        // Injections are labelled from the top of the upper panel down,
        // heals from its bottom up, so close pairs do not overlap.
        let (ty, anchor) = if e.kind == "inject" {
            (TOP + 4.0, "end")
        } else {
            (TOP + H1 - 4.0, "start")
        };
        let _ = writeln!(
            svg,
            r##"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="{anchor}" font-size="11" fill="{color}">{}</text>"##,
            xx + 11.0,
            ty,
            esc(&e.label)
        );
    }

    // Legend.
    let ly = top2 + H2 + 62.0;
    let items: [(&str, &str); 8] = [
        ("#2ca02c", "ok ops/s, all clients"),
        (node_colors[0], "ok ops/s via n0"),
        (node_colors[1], "ok ops/s via n1"),
        (node_colors[2], "ok ops/s via n2"),
        ("#d62728", "failed ops/s (not applied)"),
        ("#ff7f0e", "indeterminate ops/s"),
        ("#ffd9d9", "fault in effect (inject to heal)"),
        ("#999", "no leader seen (strip at top)"),
    ];
    let mut lx = LEFT;
    for (color, label) in items {
        let _ = writeln!(
            svg,
            r##"<rect x="{lx:.1}" y="{:.1}" width="18" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            ly - 9.0,
            lx + 24.0,
            ly,
            esc(label)
        );
        lx += 30.0 + 7.0 * label.len() as f64;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" fill="#555">vertical lines: red = fault injected, dashed green = healed; shaded bands = scenarios; top strip = leader (node colour) and term, from admin status polls every 200 ms</text>"##,
        ly + 20.0
    );
    let _ = writeln!(svg, "</svg>");
    svg
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

/// Left margin of the timeline plot (room for the y labels), in pixels.
const LEFT: f64 = 70.0;
/// Right margin of the timeline plot, in pixels.
const RIGHT: f64 = 20.0;

/// Horizontal grid lines with their labels, every `step` from 0 to `max`,
/// placed by `y`.
fn horizontal_grid(svg: &mut String, max: f64, step: f64, y: &dyn Fn(f64) -> f64, width: f64) {
    let mut v = 0.0;
    while v <= max {
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ccc" stroke-width="0.5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            width - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
        v += step;
    }
}

//! A recorded client history and the checks that need no search: reads of
//! values nobody wrote, values returned after their TTL, acknowledged writes
//! missing at the end.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `Save(location, value, ttl)`: a put.
    Save,
    /// `Load(location)`: a get; NOT_FOUND is an answer ("absent").
    Load,
    /// `Delete(location)`.
    Delete,
}

/// How an operation ended, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: a write took effect exactly once, between invocation
    /// and completion; a read returned `Op::value`.
    Ok,
    /// Definitely not applied (e.g. INVALID_ARGUMENT, or the connection was
    /// refused so the request never left the client).
    Failed,
    /// Unknown (timeout, cancelled, connection lost after sending, an
    /// "outcome unknown" answer): a write may take effect at any time after
    /// its invocation, or never; a read tells nothing.
    Indeterminate,
    /// An answer the server's contract never gives to this operation
    /// (INTERNAL, UNKNOWN, NOT_FOUND to a write, ...): an anomaly of its own
    /// (`unexpected-answer`). The other checks treat it as indeterminate.
    Unexpected,
}

impl Outcome {
    /// Is the effect unknown (indeterminate, or an unexpected answer)?
    pub fn is_unknown(self) -> bool {
        matches!(self, Outcome::Indeterminate | Outcome::Unexpected)
    }
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Index in the history (unique).
    pub id: usize,
    /// The client that issued it; one client never overlaps its own operations.
    pub client: u32,
    /// The node the client sent it to.
    pub node: u32,
    /// The phase (scenario) it belongs to; `final` for the closing reads.
    pub phase: String,
    /// The key (all keys live in the Global scope).
    pub key: String,
    /// Save, Load or Delete.
    pub kind: Kind,
    /// Save: the value written. Load with outcome Ok: the value read, or
    /// `None` for NOT_FOUND. Otherwise `None`.
    pub value: Option<String>,
    /// Save: the TTL sent, in milliseconds (0: never expires in the model).
    pub ttl_ms: u64,
    /// When the client sent it, in nanoseconds since the run started
    /// (monotonic clock).
    pub invoke_ns: u64,
    /// When the client got the answer or gave up, in nanoseconds since the
    /// run started. Ignored by the checks for indeterminate operations,
    /// whose completion is taken as +infinity.
    pub complete_ns: u64,
    /// Ok, failed or indeterminate.
    pub outcome: Outcome,
    /// The gRPC code (or client-side reason) of a failed or indeterminate
    /// operation, e.g. `Unavailable`, `DeadlineExceeded`, `client-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// Is this a Save or a Delete?
    pub fn is_write(&self) -> bool {
        matches!(self.kind, Kind::Save | Kind::Delete)
    }

    /// Completion time for ordering: +infinity (`u64::MAX`) when the
    /// outcome is unknown.
    pub fn complete_or_inf(&self) -> u64 {
        if self.outcome.is_unknown() {
            u64::MAX
        } else {
            self.complete_ns
        }
    }
}

/// Timing assumptions of the checks (default: no skew allowance).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Timing {
    /// Allowance for the difference between the client's clock and the
    /// servers' clocks (and their rates), in nanoseconds. 0 (the default)
    /// when the client and all nodes read one host's clock, as the local
    /// compose cluster does (containers share the host kernel's clocks).
    pub skew_ns: u64,
}

/// The server counts time in whole milliseconds: a Save's stamp is its
/// clock read truncated to the millisecond, so its value may read as
/// expired up to this much before `invoke + ttl` (and never later than
/// `complete + ttl`).
pub const SERVER_RESOLUTION_NS: u64 = 1_000_000;

/// When a written value may expire, as far as the client can tell.
///
/// The leader stamps a Save with its clock (truncated to the millisecond)
/// when it starts serving it, which is after the client sent it and before
/// the client got the answer; the value is hidden from `stamp + ttl` on.
/// So for a Save invoked at `i` and acknowledged at `c`, with a clock-skew
/// allowance `skew` (0 on one host):
///
/// - it cannot expire before `i + ttl - skew - 1 ms` (`earliest`; the
///   millisecond is the server's resolution, [`SERVER_RESOLUTION_NS`]);
/// - it must be gone by `max(i + ttl + skew, c + ttl)` (`latest`): the
///   stamp was taken by `c` at the latest. With `skew` = 0 this is
///   `c + ttl`. For a Save whose outcome is unknown `latest` is +infinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryWindow {
    /// No read may see the value absent-by-expiry before this time.
    pub earliest: u64,
    /// No read invoked after this time may return the value.
    pub latest: u64,
}

/// The expiry window of a Save (`u64::MAX` bounds when it never expires).
pub fn expiry_window(op: &Op, timing: Timing) -> ExpiryWindow {
    if op.kind != Kind::Save || op.ttl_ms == 0 {
        return ExpiryWindow {
            earliest: u64::MAX,
            latest: u64::MAX,
        };
    }
    let ttl = op.ttl_ms.saturating_mul(1_000_000);
    let earliest = op
        .invoke_ns
        .saturating_add(ttl)
        .saturating_sub(timing.skew_ns)
        .saturating_sub(SERVER_RESOLUTION_NS);
    let latest = match op.outcome {
        Outcome::Indeterminate | Outcome::Unexpected => u64::MAX,
        _ => op
            .invoke_ns
            .saturating_add(ttl)
            .saturating_add(timing.skew_ns)
            .max(op.complete_ns.saturating_add(ttl)),
    };
    ExpiryWindow { earliest, latest }
}

/// A violation found in a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The key concerned (empty for cluster-wide anomalies).
    pub key: String,
    /// A short name: `not-linearizable`, `checker-gave-up`, `phantom-read`,
    /// `expired-read`, `lost-write`, `final-reads-disagree`,
    /// `unexpected-answer`, `nothing-acknowledged`, `divergence`.
    pub kind: String,
    /// What happened, with times and values.
    pub detail: String,
    /// The operations involved (history ids).
    pub ops: Vec<usize>,
}

/// The operations of each key, in history order.
pub fn by_key(ops: &[Op]) -> BTreeMap<&str, Vec<&Op>> {
    let mut m: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        m.entry(op.key.as_str()).or_default().push(op);
    }
    m
}

fn secs(ns: u64) -> String {
    if ns == u64::MAX {
        "inf".into()
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

/// Short human description of an operation for anomaly reports.
pub fn describe(op: &Op) -> String {
    let what = match (op.kind, &op.value) {
        (Kind::Save, Some(v)) => format!("save({v}, ttl {}ms)", op.ttl_ms),
        (Kind::Save, None) => "save(?)".into(),
        (Kind::Delete, _) => "delete".into(),
        (Kind::Load, Some(v)) if op.outcome == Outcome::Ok => format!("load -> {v}"),
        (Kind::Load, None) if op.outcome == Outcome::Ok => "load -> absent".into(),
        (Kind::Load, _) => "load".into(),
    };
    let outcome = match op.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Failed => format!("failed {}", op.error.as_deref().unwrap_or("")),
        Outcome::Indeterminate => format!("indeterminate {}", op.error.as_deref().unwrap_or("")),
        Outcome::Unexpected => format!("unexpected {}", op.error.as_deref().unwrap_or("")),
    };
    format!(
        "#{} c{}@n{} {} [{} .. {}] {}",
        op.id,
        op.client,
        op.node,
        what,
        secs(op.invoke_ns),
        secs(op.complete_or_inf()),
        outcome.trim_end()
    )
}

/// The Saves of one key's operations, by the value they wrote.
fn writers_by_value<'a>(kops: &[&'a Op]) -> HashMap<&'a str, Vec<&'a Op>> {
    let mut writers: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in kops.iter().copied().filter(|o| o.kind == Kind::Save) {
        if let Some(v) = &op.value {
            writers.entry(v.as_str()).or_default().push(op);
        }
    }
    writers
}

/// The successful Loads of one key's operations that returned a value.
fn value_reads<'a, 'k>(
    kops: &'k [&'a Op],
) -> impl Iterator<Item = (&'a Op, &'a str)> + use<'a, 'k> {
    kops.iter()
        .copied()
        .filter(|o| o.kind == Kind::Load && o.outcome == Outcome::Ok)
        .filter_map(|r| r.value.as_deref().map(|v| (r, v)))
}

/// Reads that cannot be explained by any write: a value never written to
/// that key, written only by Saves that definitely failed, or written only
/// by Saves invoked after the read completed.
pub fn check_reads_have_writes(ops: &[Op]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (key, kops) in by_key(ops) {
        let writers = writers_by_value(&kops);
        for (r, v) in value_reads(&kops) {
            let ws = writers.get(v).map(Vec::as_slice).unwrap_or(&[]);
            let possible = ws
                .iter()
                .any(|w| w.outcome != Outcome::Failed && w.invoke_ns <= r.complete_ns);
            if !possible {
                let why = if ws.is_empty() {
                    "a value never written to this key".to_string()
                } else {
                    format!(
                        "a value written only by {}",
                        ws.iter()
                            .map(|w| describe(w))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                };
                out.push(Anomaly {
                    key: key.to_string(),
                    kind: "phantom-read".into(),
                    detail: format!("{} returned {why}", describe(r)),
                    ops: std::iter::once(r.id)
                        .chain(ws.iter().map(|w| w.id))
                        .collect(),
                });
            }
        }
    }
    out
}

/// Values returned after their TTL: a Load invoked after the acknowledged
/// Save's `latest` expiry time (see [`ExpiryWindow`]) must not return that
/// Save's value. Values are unique per Save, so a later Save cannot have
/// re-set the same value; if several Saves wrote the same value, the read
/// is accepted when any of them can explain it.
pub fn check_expiry(ops: &[Op], timing: Timing) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (key, kops) in by_key(ops) {
        let writers = writers_by_value(&kops);
        for (r, v) in value_reads(&kops) {
            let ws: Vec<&Op> = writers
                .get(v)
                .map(|ws| {
                    ws.iter()
                        .copied()
                        .filter(|w| w.outcome != Outcome::Failed)
                        .collect()
                })
                .unwrap_or_default();
            if ws.is_empty() {
                continue; // a phantom read, reported elsewhere
            }
            let alive = ws
                .iter()
                .any(|w| r.invoke_ns <= expiry_window(w, timing).latest);
            if !alive {
                let w = ws[0];
                let win = expiry_window(w, timing);
                out.push(Anomaly {
                    key: key.to_string(),
                    kind: "expired-read".into(),
                    detail: format!(
                        "{} returned a value past its TTL: written by {}, gone by {} at the latest",
                        describe(r),
                        describe(w),
                        secs(win.latest)
                    ),
                    ops: vec![r.id, w.id],
                });
            }
        }
    }
    out
}

/// Final state: every acknowledged Save must be what the final reads see,
/// unless another Save or Delete on the key (acknowledged or
/// indeterminate) may have come after it, or it may have expired by then.
/// Also, the final reads of a key (phase `final_phase`, one per node after
/// the workload stopped) must agree with each other.
pub fn check_final_state(ops: &[Op], final_phase: &str, timing: Timing) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (key, kops) in by_key(ops) {
        let finals: Vec<&Op> = kops
            .iter()
            .copied()
            .filter(|o| o.phase == final_phase && o.kind == Kind::Load && o.outcome == Outcome::Ok)
            .collect();
        let Some(first_final) = finals.first() else {
            continue;
        };
        let disagree: Vec<&Op> = finals
            .iter()
            .copied()
            .filter(|f| f.value != first_final.value)
            .collect();
        if !disagree.is_empty() {
            out.push(Anomaly {
                key: key.to_string(),
                kind: "final-reads-disagree".into(),
                detail: finals
                    .iter()
                    .map(|f| describe(f))
                    .collect::<Vec<_>>()
                    .join("; "),
                ops: finals.iter().map(|f| f.id).collect(),
            });
        }
        let final_invoke = finals.iter().map(|f| f.invoke_ns).min().unwrap_or(0);
        let final_complete = finals.iter().map(|f| f.complete_ns).max().unwrap_or(0);
        let writes: Vec<&Op> = kops
            .iter()
            .copied()
            .filter(|o| o.is_write() && o.outcome != Outcome::Failed && o.phase != final_phase)
            .collect();
        for s in writes
            .iter()
            .filter(|o| o.kind == Kind::Save && o.outcome == Outcome::Ok)
        {
            if finals.iter().any(|f| f.value == s.value) {
                continue;
            }
            if expiry_window(s, timing).earliest <= final_complete {
                continue; // may have expired
            }
            let superseded = writes
                .iter()
                .any(|x| x.id != s.id && x.complete_or_inf() > s.invoke_ns);
            if !superseded {
                out.push(Anomaly {
                    key: key.to_string(),
                    kind: "lost-write".into(),
                    detail: format!(
                        "{} was acknowledged and nothing replaced it, but the final reads from {} saw {}",
                        describe(s),
                        secs(final_invoke),
                        first_final.value.as_deref().unwrap_or("absent")
                    ),
                    ops: std::iter::once(s.id)
                        .chain(finals.iter().map(|f| f.id))
                        .collect(),
                });
            }
        }
    }
    out
}

/// Indeterminate Saves answered UNAVAILABLE ("outcome unknown", any
/// UNAVAILABLE with `--distrust-unavailable`, or the Rust client's last
/// UNAVAILABLE after its retries) whose value was read later.
/// Returned for reporting: they were allowed to take effect. A Save answered
/// a plain UNAVAILABLE is a failed operation, and a read of its value is a
/// `phantom-read` anomaly.
pub fn unavailable_but_applied(ops: &[Op]) -> Vec<usize> {
    let mut read: HashMap<(&str, &str), ()> = HashMap::new();
    for r in ops
        .iter()
        .filter(|o| o.kind == Kind::Load && o.outcome == Outcome::Ok)
    {
        if let Some(v) = &r.value {
            read.insert((r.key.as_str(), v.as_str()), ());
        }
    }
    ops.iter()
        .filter(|o| {
            o.kind == Kind::Save
                && o.outcome == Outcome::Indeterminate
                && o.error.as_deref().is_some_and(|e| {
                    e.starts_with("Unavailable") || e.starts_with("client:unavailable")
                })
        })
        .filter(|o| {
            o.value
                .as_deref()
                .is_some_and(|v| read.contains_key(&(o.key.as_str(), v)))
        })
        .map(|o| o.id)
        .collect()
}

/// Answers the contract never gives to the operation (outcome
/// [`Outcome::Unexpected`]: INTERNAL, UNKNOWN or another code the server
/// does not use, NOT_FOUND to a write), one anomaly each.
pub fn check_unexpected_answers(ops: &[Op]) -> Vec<Anomaly> {
    ops.iter()
        .filter(|o| o.outcome == Outcome::Unexpected)
        .map(|o| Anomaly {
            key: o.key.clone(),
            kind: "unexpected-answer".into(),
            detail: format!(
                "{} got an answer the server's contract never gives to a {}",
                describe(o),
                match o.kind {
                    Kind::Save => "Save",
                    Kind::Load => "Load",
                    Kind::Delete => "Delete",
                }
            ),
            ops: vec![o.id],
        })
        .collect()
}

/// A phase of the history (all phases but `final_phase`) in which no Save
/// or no Load was acknowledged proves nothing: every history of failed and
/// indeterminate operations is linearizable. One anomaly per such phase,
/// on the phase's first key (so that it is reported with the phase).
pub fn check_acknowledged(ops: &[Op], final_phase: &str) -> Vec<Anomaly> {
    // Phase -> (first key, Saves, acknowledged Saves, Loads, acknowledged Loads).
    let mut phases: BTreeMap<&str, (&str, usize, usize, usize, usize)> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.phase != final_phase) {
        let e = phases
            .entry(o.phase.as_str())
            .or_insert((o.key.as_str(), 0, 0, 0, 0));
        let ok = usize::from(o.outcome == Outcome::Ok);
        match o.kind {
            Kind::Save => {
                e.1 += 1;
                e.2 += ok;
            }
            Kind::Load => {
                e.3 += 1;
                e.4 += ok;
            }
            Kind::Delete => {}
        }
    }
    phases
        .into_iter()
        .filter(|(_, (_, _, saves_ok, _, loads_ok))| *saves_ok == 0 || *loads_ok == 0)
        .map(|(phase, (key, saves, saves_ok, loads, loads_ok))| Anomaly {
            key: key.to_string(),
            kind: "nothing-acknowledged".into(),
            detail: format!(
                "phase {phase}: {saves_ok} of {saves} Saves and {loads_ok} of {loads} Loads \
                     acknowledged; a history without acknowledged Saves and Loads proves nothing"
            ),
            ops: vec![],
        })
        .collect()
}

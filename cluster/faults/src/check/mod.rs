//! Checking recorded client histories against what the store promises.
//!
//! - [`history`]: the recorded operations (invoke/complete times, outcome
//!   ok / failed / indeterminate / unexpected) and the direct checks:
//!   phases with nothing acknowledged, answers the contract never gives,
//!   reads of values nobody wrote, values returned past their TTL,
//!   acknowledged writes missing from the final state, final reads that
//!   disagree between nodes;
//! - [`linearizability`]: a Wing & Gong / Lowe search (with memoisation)
//!   that decides whether each key's history is linearizable for a register
//!   with put, get (value or absent), delete and expiry.
//!
//! [`check_all`] runs everything on one history; the fault-injection runner
//! (`eventstore-faults`) uses it on the history it records.

pub mod history;
pub mod linearizability;

use serde::{Deserialize, Serialize};

pub use history::{Anomaly, Kind, Op, Outcome, Timing};
pub use linearizability::{check_history, check_key, Config, KeyResult, Verdict};

/// Everything the checks found in one history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckReport {
    /// Per-key linearizability results.
    pub keys: Vec<KeyResult>,
    /// All anomalies (empty when the history is correct).
    pub anomalies: Vec<Anomaly>,
    /// Saves answered UNAVAILABLE whose value was read later (treated as
    /// indeterminate, so not an anomaly; see
    /// [`history::unavailable_but_applied`]).
    pub unavailable_but_applied: Vec<usize>,
}

/// Runs every check on `ops`; `final_phase` names the phase of the closing
/// reads (see [`history::check_final_state`]).
pub fn check_all(ops: &[Op], cfg: &Config, final_phase: &str, threads: usize) -> CheckReport {
    let mut anomalies = history::check_acknowledged(ops, final_phase);
    anomalies.extend(history::check_unexpected_answers(ops));
    anomalies.extend(history::check_reads_have_writes(ops));
    anomalies.extend(history::check_expiry(ops, cfg.timing));
    anomalies.extend(history::check_final_state(ops, final_phase, cfg.timing));
    let keys = check_history(ops, cfg, threads);
    for k in &keys {
        match &k.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable {
                blocked_op, detail, ..
            } => anomalies.push(Anomaly {
                key: k.key.clone(),
                kind: "not-linearizable".into(),
                detail: detail.clone(),
                ops: vec![*blocked_op],
            }),
            Verdict::Unknown { states } => anomalies.push(Anomaly {
                key: k.key.clone(),
                kind: "checker-gave-up".into(),
                detail: format!(
                    "the search stopped after {states} states without a verdict ({} operations)",
                    k.searched_ops
                ),
                ops: vec![],
            }),
        }
    }
    CheckReport {
        keys,
        anomalies,
        unavailable_but_applied: history::unavailable_but_applied(ops),
    }
}

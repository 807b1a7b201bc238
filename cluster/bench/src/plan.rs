//! Which cells a sweep runs, and in which order.
//!
//! For each client count: the baseline first, then for each value size the
//! operations in order (Save, Load, Delete), each operation on EventStore
//! and then on etcd, back to back, so that whatever else the machine is
//! doing at that moment hits both systems. Before the Load cells of a value
//! size, both systems get every key written at that size (a preload, not
//! measured), since the Delete cells before them removed the keys.

use serde::{Deserialize, Serialize};

/// A system under test.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// EventStore, three nodes.
    Eventstore,
    /// etcd, three members.
    Etcd,
}

impl System {
    /// The name in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            System::Eventstore => "EventStore",
            System::Etcd => "etcd",
        }
    }
}

/// An operation measured in a cell.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// EventStore's gRPC health check on the same connections (EventStore only).
    Baseline,
    /// EventStore Save with a TTL; etcd Put with a lease of that TTL.
    Save,
    /// EventStore Load; etcd linearizable Get.
    Load,
    /// EventStore Delete; etcd Delete.
    Delete,
}

impl Op {
    /// The name in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Op::Baseline => "baseline",
            Op::Save => "save",
            Op::Load => "load",
            Op::Delete => "delete",
        }
    }
}

/// One measured cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CellSpec {
    /// The system under test.
    pub system: System,
    /// The operation.
    pub op: Op,
    /// Closed-loop clients, each with its own connection.
    pub clients: usize,
    /// Size of each value in bytes (0 for the baseline, which carries none).
    pub value_bytes: usize,
}

/// One step of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Measure a cell.
    Cell(CellSpec),
    /// Write every key at this size on every system under test (not measured).
    Preload {
        /// Size of each value in bytes.
        value_bytes: usize,
    },
}

/// The steps of a sweep over `clients` x `value_sizes`, for the operations
/// in `ops` (the baseline, when asked for, once per client count) on the
/// `systems`, alternating systems cell by cell.
pub fn plan(clients: &[usize], value_sizes: &[usize], ops: &[Op], systems: &[System]) -> Vec<Step> {
    let mut systems = systems.to_vec();
    systems.sort();
    systems.dedup();
    let mut steps = Vec::new();
    for &c in clients {
        if ops.contains(&Op::Baseline) && systems.contains(&System::Eventstore) {
            steps.push(Step::Cell(CellSpec {
                system: System::Eventstore,
                op: Op::Baseline,
                clients: c,
                value_bytes: 0,
            }));
        }
        for &size in value_sizes {
            for op in [Op::Save, Op::Load, Op::Delete] {
                if !ops.contains(&op) {
                    continue;
                }
                if op == Op::Load {
                    steps.push(Step::Preload { value_bytes: size });
                }
                for &system in &systems {
                    steps.push(Step::Cell(CellSpec {
                        system,
                        op,
                        clients: c,
                        value_bytes: size,
                    }));
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(steps: &[Step]) -> Vec<CellSpec> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Cell(c) => Some(*c),
                Step::Preload { .. } => None,
            })
            .collect()
    }

    #[test]
    fn systems_alternate_cell_by_cell_and_every_cell_runs_once() {
        let all = [Op::Baseline, Op::Save, Op::Load, Op::Delete];
        let steps = plan(
            &[1, 16],
            &[128, 65536],
            &all,
            &[System::Etcd, System::Eventstore],
        );
        let cells = cells(&steps);
        // 2 baselines + 2 clients x 2 sizes x 3 ops x 2 systems.
        assert_eq!(cells.len(), 2 + 2 * 2 * 3 * 2);
        let mut seen = std::collections::HashSet::new();
        for c in &cells {
            assert!(seen.insert(*c), "{c:?} planned twice");
        }
        let measured: Vec<_> = cells.iter().filter(|c| c.op != Op::Baseline).collect();
        for pair in measured.chunks(2) {
            assert_eq!(pair[0].system, System::Eventstore, "{pair:?}");
            assert_eq!(pair[1].system, System::Etcd, "{pair:?}");
            assert_eq!(
                (pair[0].op, pair[0].clients, pair[0].value_bytes),
                (pair[1].op, pair[1].clients, pair[1].value_bytes),
                "a pair must measure the same thing on both systems"
            );
        }
    }

    #[test]
    fn the_baseline_opens_each_client_count_and_loads_follow_a_preload() {
        let steps = plan(
            &[1, 64],
            &[128, 1024],
            &[Op::Baseline, Op::Save, Op::Load, Op::Delete],
            &[System::Eventstore, System::Etcd],
        );
        let mut current_clients = None;
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Cell(c) if current_clients != Some(c.clients) => {
                    assert_eq!(c.op, Op::Baseline, "step {i}: {c:?} opens a client count");
                    current_clients = Some(c.clients);
                }
                Step::Cell(c) if c.op == Op::Load && c.system == System::Eventstore => {
                    assert_eq!(
                        steps[i - 1],
                        Step::Preload {
                            value_bytes: c.value_bytes
                        },
                        "step {i}: {c:?}"
                    );
                }
                _ => {}
            }
        }
    }

    #[test]
    fn no_baseline_without_eventstore_and_no_preload_without_loads() {
        let steps = plan(&[4], &[128], &[Op::Baseline, Op::Save], &[System::Etcd]);
        assert_eq!(
            steps,
            vec![Step::Cell(CellSpec {
                system: System::Etcd,
                op: Op::Save,
                clients: 4,
                value_bytes: 128
            })]
        );
    }
}

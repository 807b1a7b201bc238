//! The history checker on hand-made histories: known anomalies must be
//! caught, correct (if messy) histories must pass.

use eventstore_faults::check::history::{
    check_expiry, check_final_state, check_reads_have_writes, Timing,
};
use eventstore_faults::check::{check_all, check_key, Config, Kind, Op, Outcome, Verdict};
use eventstore_faults::workload::classify_status;

const MS: u64 = 1_000_000;

/// Builds histories on key "k": times in milliseconds.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

impl H {
    fn push(
        &mut self,
        client: u32,
        kind: Kind,
        value: Option<&str>,
        ttl_ms: u64,
        (inv, comp): (u64, u64),
        outcome: Outcome,
    ) -> &mut Self {
        let id = self.ops.len();
        self.ops.push(Op {
            id,
            client,
            node: client % 3,
            phase: "test".into(),
            key: "k".into(),
            kind,
            value: value.map(str::to_string),
            ttl_ms,
            invoke_ns: inv * MS,
            complete_ns: comp * MS,
            outcome,
            error: match outcome {
                Outcome::Ok => None,
                Outcome::Failed => Some("InvalidArgument".into()),
                Outcome::Indeterminate => Some("DeadlineExceeded".into()),
                Outcome::Unexpected => Some("Internal".into()),
            },
        });
        self
    }
    fn put(&mut self, c: u32, v: &str, inv: u64, comp: u64) -> &mut Self {
        self.push(c, Kind::Save, Some(v), 0, (inv, comp), Outcome::Ok)
    }
    fn put_ttl(&mut self, c: u32, v: &str, ttl_ms: u64, inv: u64, comp: u64) -> &mut Self {
        self.push(c, Kind::Save, Some(v), ttl_ms, (inv, comp), Outcome::Ok)
    }
    fn put_indet(&mut self, c: u32, v: &str, inv: u64) -> &mut Self {
        self.push(
            c,
            Kind::Save,
            Some(v),
            0,
            (inv, inv + 2000),
            Outcome::Indeterminate,
        )
    }
    fn put_failed(&mut self, c: u32, v: &str, inv: u64, comp: u64) -> &mut Self {
        self.push(c, Kind::Save, Some(v), 0, (inv, comp), Outcome::Failed)
    }
    fn get(&mut self, c: u32, v: Option<&str>, inv: u64, comp: u64) -> &mut Self {
        self.push(c, Kind::Load, v, 0, (inv, comp), Outcome::Ok)
    }
    fn del(&mut self, c: u32, inv: u64, comp: u64) -> &mut Self {
        self.push(c, Kind::Delete, None, 0, (inv, comp), Outcome::Ok)
    }
    fn del_indet(&mut self, c: u32, inv: u64) -> &mut Self {
        self.push(
            c,
            Kind::Delete,
            None,
            0,
            (inv, inv + 2000),
            Outcome::Indeterminate,
        )
    }
    fn verdict(&self) -> Verdict {
        let refs: Vec<&Op> = self.ops.iter().collect();
        check_key("k", &refs, &Config::default()).verdict
    }
    fn linearizable(&self) -> bool {
        matches!(self.verdict(), Verdict::Linearizable)
    }
}

// ---- histories that must be rejected ----

#[test]
fn stale_read_after_acknowledged_overwrite_is_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put(1, "b", 20, 30)
        .get(2, Some("a"), 40, 50);
    match h.verdict() {
        Verdict::NotLinearizable {
            blocked_op, state, ..
        } => {
            assert_eq!(blocked_op, 2);
            assert_eq!(state.as_deref(), Some("b"));
        }
        v => panic!("stale read accepted: {v:?}"),
    }
}

#[test]
fn lost_write_read_as_older_value_is_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put(1, "b", 20, 30)
        .get(0, Some("b"), 35, 36)
        .get(2, Some("a"), 40, 50);
    assert!(!h.linearizable());
}

#[test]
fn lost_write_read_as_absent_is_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10).get(1, None, 20, 30);
    assert!(!h.linearizable());
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10).get(1, Some("zzz"), 5, 30);
    assert!(!h.linearizable());
    let anomalies = check_reads_have_writes(&h.ops);
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0].kind, "phantom-read");
}

#[test]
fn read_of_a_definitely_failed_write_is_caught() {
    let mut h = H::default();
    h.put_failed(0, "a", 0, 10).get(1, Some("a"), 20, 30);
    assert!(!h.linearizable());
    assert_eq!(check_reads_have_writes(&h.ops).len(), 1);
}

#[test]
fn read_from_the_future_is_caught() {
    let mut h = H::default();
    h.get(1, Some("a"), 0, 10).put(0, "a", 20, 30);
    assert!(!h.linearizable());
    assert_eq!(check_reads_have_writes(&h.ops).len(), 1);
}

#[test]
fn read_of_deleted_value_is_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .del(1, 20, 30)
        .get(2, Some("a"), 40, 50);
    assert!(!h.linearizable());
}

#[test]
fn non_monotonic_reads_are_caught() {
    // Reads of a and b concurrent with both writes would be fine, but once
    // one client has seen b, a later read may not go back to a.
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put(1, "b", 5, 100)
        .get(2, Some("b"), 20, 30)
        .get(3, Some("a"), 40, 50);
    assert!(!h.linearizable());
}

#[test]
fn two_readers_disagreeing_on_order_of_concurrent_writes_are_caught() {
    // Writes a and b are concurrent; reader 2 sees a then b, reader 3 sees
    // b then a, and all four reads happen after both writes completed.
    let mut h = H::default();
    h.put(0, "a", 0, 100)
        .put(1, "b", 0, 100)
        .get(2, Some("a"), 110, 120)
        .get(2, Some("b"), 130, 140)
        .get(3, Some("b"), 110, 120)
        .get(3, Some("a"), 130, 140);
    assert!(!h.linearizable());
}

#[test]
fn indeterminate_write_cannot_apply_twice() {
    // An indeterminate write applies at most once: a, b, a is impossible
    // when a was written once.
    let mut h = H::default();
    h.put_indet(0, "a", 0)
        .put(1, "b", 50, 60)
        .get(2, Some("a"), 10, 20)
        .get(2, Some("b"), 70, 80)
        .get(2, Some("a"), 90, 100);
    assert!(!h.linearizable());
}

#[test]
fn value_returned_after_its_ttl_is_caught() {
    let mut h = H::default();
    h.put_ttl(0, "a", 1000, 0, 10)
        .get(1, Some("a"), 500, 510)
        .get(1, Some("a"), 1300, 1310);
    let anomalies = check_expiry(&h.ops, Timing::default());
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, "expired-read");
    assert_eq!(anomalies[0].ops, vec![2, 0]);
    assert!(!h.linearizable());
}

#[test]
fn value_expiring_then_reappearing_is_caught() {
    let mut h = H::default();
    h.put_ttl(0, "a", 1000, 0, 10)
        .get(1, None, 1100, 1110)
        .get(2, Some("a"), 1120, 1130);
    assert!(!h.linearizable());
}

#[test]
fn value_expiring_too_early_is_caught() {
    let mut h = H::default();
    h.put_ttl(0, "a", 2000, 0, 10).get(1, None, 500, 510);
    assert!(!h.linearizable());
}

#[test]
fn acknowledged_write_missing_at_the_end_is_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10).put(1, "b", 20, 30);
    let mut final_read = |v: Option<&str>, node: u32, t: u64| {
        h.get(10 + node, v, t, t + 5);
        let last = h.ops.last_mut().unwrap();
        last.phase = "final".into();
        last.node = node;
    };
    final_read(Some("a"), 0, 100);
    final_read(Some("a"), 1, 110);
    final_read(Some("a"), 2, 120);
    let anomalies = check_final_state(&h.ops, "final", Timing::default());
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, "lost-write");
    assert_eq!(anomalies[0].ops[0], 1);
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert!(report
        .anomalies
        .iter()
        .any(|a| a.kind == "not-linearizable"));
}

#[test]
fn final_reads_that_disagree_are_caught() {
    let mut h = H::default();
    h.put(0, "a", 0, 10).put(1, "b", 5, 30);
    for (node, v) in [(0, "a"), (1, "b"), (2, "b")] {
        h.get(
            10 + node,
            Some(v),
            100 + 10 * node as u64,
            105 + 10 * node as u64,
        );
        h.ops.last_mut().unwrap().phase = "final".into();
    }
    let anomalies = check_final_state(&h.ops, "final", Timing::default());
    assert!(anomalies.iter().any(|a| a.kind == "final-reads-disagree"));
    assert!(!h.linearizable());
}

#[test]
fn a_history_with_nothing_acknowledged_is_caught() {
    // Every operation failed or timed out: the search accepts it (there
    // is nothing to order), but it proves nothing.
    let mut h = H::default();
    h.put_failed(0, "a", 0, 10)
        .put_indet(1, "b", 20)
        .del_indet(2, 30)
        .push(0, Kind::Load, None, 0, (40, 2040), Outcome::Indeterminate)
        .push(1, Kind::Load, None, 0, (50, 60), Outcome::Failed);
    assert!(h.linearizable());
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert_eq!(report.anomalies.len(), 1, "{:?}", report.anomalies);
    assert_eq!(report.anomalies[0].kind, "nothing-acknowledged");
    assert!(report.anomalies[0]
        .detail
        .contains("0 of 2 Saves and 0 of 2 Loads"));
    // Acknowledged Saves without one acknowledged Load prove nothing either.
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .push(1, Kind::Load, None, 0, (20, 2020), Outcome::Indeterminate);
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert!(report
        .anomalies
        .iter()
        .any(|a| a.kind == "nothing-acknowledged"));
    // One of each is enough for this check.
    h.get(2, Some("a"), 30, 40);
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
}

#[test]
fn an_internal_error_on_a_write_is_caught() {
    // The server answered INTERNAL to a Save: the contract never does.
    let internal = tonic::Status::internal("reading Global/k: corruption");
    let (outcome, label) = classify_status(Kind::Save, &internal, true);
    assert_eq!(outcome, Outcome::Unexpected);
    let mut h = H::default();
    h.put(0, "a", 0, 10).get(1, Some("a"), 20, 30).push(
        2,
        Kind::Save,
        Some("b"),
        0,
        (40, 50),
        outcome,
    );
    h.ops[2].error = label;
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert_eq!(report.anomalies.len(), 1, "{:?}", report.anomalies);
    assert_eq!(report.anomalies[0].kind, "unexpected-answer");
    assert_eq!(report.anomalies[0].ops, vec![2]);
    assert!(report.anomalies[0].detail.contains("Internal"));
    // For the other checks its outcome is unknown: a later read of its
    // value is no phantom read.
    h.get(1, Some("b"), 3000, 3010);
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert_eq!(report.anomalies.len(), 1, "{:?}", report.anomalies);
    // NOT_FOUND to a Delete is unexpected too; to a Load it is an answer.
    let nf = tonic::Status::not_found("no value");
    assert_eq!(
        classify_status(Kind::Delete, &nf, true).0,
        Outcome::Unexpected
    );
    assert_eq!(classify_status(Kind::Load, &nf, true).0, Outcome::Ok);
}

// ---- histories that must pass ----

#[test]
fn sequential_history_passes() {
    let mut h = H::default();
    h.get(0, None, 0, 5)
        .put(0, "a", 10, 20)
        .get(1, Some("a"), 30, 40)
        .del(2, 50, 60)
        .get(0, None, 70, 80)
        .put(1, "b", 90, 100)
        .get(2, Some("b"), 110, 120);
    assert!(h.linearizable());
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put(1, "b", 20, 100)
        .get(2, Some("a"), 30, 40)
        .get(3, Some("b"), 35, 45)
        .get(2, Some("b"), 50, 60);
    assert!(h.linearizable());
}

#[test]
fn concurrent_writes_in_either_order() {
    let mut h = H::default();
    h.put(0, "a", 0, 100)
        .put(1, "b", 0, 100)
        .get(2, Some("a"), 110, 120)
        .get(3, Some("a"), 130, 140);
    assert!(h.linearizable());
    let mut h = H::default();
    h.put(0, "a", 0, 100)
        .put(1, "b", 0, 100)
        .get(2, Some("b"), 110, 120);
    assert!(h.linearizable());
}

#[test]
fn indeterminate_write_that_applied_passes() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put_indet(1, "b", 20)
        .get(2, Some("b"), 3000, 3010)
        .get(0, Some("b"), 3020, 3030);
    assert!(h.linearizable());
}

#[test]
fn indeterminate_write_that_did_not_apply_passes() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put_indet(1, "b", 20)
        .get(2, Some("a"), 3000, 3010);
    assert!(h.linearizable());
}

#[test]
fn indeterminate_write_applied_late_passes() {
    // The client gave up at 2020 ms, yet the write shows up only at 5000 ms.
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put_indet(1, "b", 20)
        .get(2, Some("a"), 3000, 3010)
        .get(2, Some("b"), 5000, 5010);
    assert!(h.linearizable());
}

#[test]
fn indeterminate_deletes_pass_whether_applied_or_not() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .del_indet(1, 20)
        .get(2, Some("a"), 30, 40)
        .del_indet(1, 2100)
        .get(2, Some("a"), 2200, 2210)
        .get(2, None, 4300, 4310)
        .put(0, "b", 4400, 4410)
        .get(2, Some("b"), 4500, 4510);
    assert!(h.linearizable());
}

#[test]
fn failed_operations_are_ignored() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put_failed(1, "b", 20, 30)
        .get(2, Some("a"), 40, 50);
    assert!(h.linearizable());
}

#[test]
fn value_expiring_after_its_ttl_passes() {
    let mut h = H::default();
    h.put_ttl(0, "a", 1000, 0, 10)
        .get(1, Some("a"), 500, 510)
        .get(1, None, 1100, 1110)
        .get(2, None, 1200, 1210);
    assert!(h.linearizable());
    assert!(check_expiry(&h.ops, Timing::default()).is_empty());
}

#[test]
fn read_inside_an_explicit_skew_allowance_passes() {
    // With --skew-ms 250 (nodes on other machines), a value saved at
    // 0..10 ms with a TTL of 1000 ms may still be read by a Load invoked
    // up to 1250 ms.
    let skew = Timing { skew_ns: 250 * MS };
    let mut h = H::default();
    h.put_ttl(0, "a", 1000, 0, 10).get(1, Some("a"), 1200, 1210);
    assert!(check_expiry(&h.ops, skew).is_empty());
    let cfg = Config {
        timing: skew,
        ..Config::default()
    };
    let refs: Vec<&Op> = h.ops.iter().collect();
    assert_eq!(check_key("k", &refs, &cfg).verdict, Verdict::Linearizable);
    // Without the allowance (one host's clock, the default) it is caught.
    assert_eq!(check_expiry(&h.ops, Timing::default()).len(), 1);
    assert!(!h.linearizable());
}

#[test]
fn read_invoked_after_the_deadline_is_caught_to_the_nanosecond() {
    // Saved at 0..10 ms with a TTL of 1000 ms: the leader stamped it by
    // 10 ms, so the value is gone from 1010 ms on.
    let mut h = H::default();
    h.put_ttl(0, "a", 1000, 0, 10).get(1, Some("a"), 1010, 1015);
    assert!(check_expiry(&h.ops, Timing::default()).is_empty());
    assert!(h.linearizable());
    h.ops[1].invoke_ns += 1;
    let anomalies = check_expiry(&h.ops, Timing::default());
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, "expired-read");
    assert!(!h.linearizable());
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert!(report.anomalies.iter().any(|a| a.kind == "expired-read"));
}

#[test]
fn expiry_earlier_than_the_servers_millisecond_is_caught() {
    // Saved from 0 ms with a TTL of 1000 ms: the server's stamp, truncated
    // to the millisecond, may make it read as absent from 999 ms on, not
    // before.
    let mut h = H::default();
    h.put_ttl(0, "a", 1000, 0, 10).get(1, None, 990, 999);
    assert!(h.linearizable());
    h.ops[1].complete_ns -= 1;
    assert!(!h.linearizable());
}

#[test]
fn final_state_with_overwrites_and_expiry_passes() {
    let mut h = H::default();
    h.put(0, "a", 0, 10)
        .put(1, "b", 5, 30)
        .put_ttl(2, "c", 1000, 40, 50)
        .put(0, "d", 60, 70)
        .put_ttl(1, "e", 1000, 80, 90)
        .get(2, Some("e"), 95, 100);
    for node in 0..3u32 {
        let t = 5000 + 10 * node as u64;
        h.get(10 + node, None, t, t + 5);
        h.ops.last_mut().unwrap().phase = "final".into();
    }
    let report = check_all(&h.ops, &Config::default(), "final", 1);
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
}

/// A history of `n` operations by 6 clients, made from a real sequential
/// execution: operation i takes effect at 10*i ms, and its window is
/// stretched up to 30 ms on either side, so windows overlap. `indet_pct`%
/// of writes are indeterminate; of those, `applied_pct`% took effect.
fn generated(n: u64, indet_pct: u64, applied_pct: u64, mut seed: u64) -> H {
    let mut h = H::default();
    let mut state: Option<String> = None;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..n {
        let at = 10 * i + 1000;
        let inv = at - rnd() % 30;
        let comp = at + rnd() % 30;
        let c = (i % 6) as u32;
        let indet = rnd() % 100 < indet_pct;
        let applies = !indet || rnd() % 100 < applied_pct;
        match rnd() % 10 {
            0..=3 => {
                let v = format!("v{i}");
                if indet {
                    h.put_indet(c, &v, inv);
                } else {
                    h.put(c, &v, inv, comp);
                }
                if applies {
                    state = Some(v);
                }
            }
            4 => {
                if indet {
                    h.del_indet(c, inv);
                } else {
                    h.del(c, inv, comp);
                }
                if applies {
                    state = None;
                }
            }
            _ => {
                h.get(c, state.as_deref(), inv, comp);
            }
        }
    }
    h
}

#[test]
fn many_indeterminate_writes_applied_or_not_are_checked_quickly() {
    for (indet, applied, seed) in [(10, 50, 1u64), (25, 20, 2), (25, 80, 3), (40, 0, 4)] {
        let h = generated(3000, indet, applied, seed);
        let refs: Vec<&Op> = h.ops.iter().collect();
        let started = std::time::Instant::now();
        let r = check_key("k", &refs, &Config::default());
        assert_eq!(
            r.verdict,
            Verdict::Linearizable,
            "indet {indet}% applied {applied}%"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "indet {indet}% applied {applied}%: took {:?} ({} states)",
            started.elapsed(),
            r.states
        );
    }
}

#[test]
fn long_concurrent_history_is_checked_quickly() {
    // 4000 operations, 5% of the writes indeterminate (all applied).
    let mut h = generated(4000, 5, 100, 0x9e37_79b9_7f4a_7c15);
    let refs: Vec<&Op> = h.ops.iter().collect();
    let started = std::time::Instant::now();
    let r = check_key("k", &refs, &Config::default());
    assert_eq!(r.verdict, Verdict::Linearizable);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // And one stale read in the middle makes it fail.
    let idx = h
        .ops
        .iter()
        .position(|o| o.id > 2000 && o.kind == Kind::Load && o.value.is_some())
        .unwrap();
    let stale = h.ops[..idx]
        .iter()
        .rev()
        .filter(|o| o.kind == Kind::Save && o.outcome == Outcome::Ok && o.value != h.ops[idx].value)
        .nth(20)
        .unwrap()
        .value
        .clone();
    h.ops[idx].value = stale;
    let refs: Vec<&Op> = h.ops.iter().collect();
    let r = check_key("k", &refs, &Config::default());
    assert!(
        matches!(r.verdict, Verdict::NotLinearizable { .. }),
        "{:?}",
        r.verdict
    );
}

//! Linearizability of one key's history against a register with put
//! (Save), get (Load: a value or absent) and delete, where a put's value
//! may expire after its TTL.
//!
//! The search is Wing & Gong's, with Lowe's memoisation (as in Porcupine):
//! the history is a list of call and return events in real-time order; an
//! operation may be linearized when its call comes before the first return
//! still in the list; each step records (linearized set, model state) and
//! never explores the same pair twice (the set is kept as a 128-bit
//! Zobrist hash); a dead end backtracks.
//!
//! Indeterminate operations (and unexpected answers, which are anomalies
//! of their own) have no return event (completion at +infinity): they may be linearized anywhere after their call, or never.
//! To keep the search small:
//!
//! - failed operations, indeterminate Loads, and indeterminate Saves whose
//!   value nobody read are dropped (a write nobody observed can always be
//!   taken as not applied: any linearization that applies it stays valid
//!   without it, since no read was linearized while it was the state);
//! - pending indeterminate Deletes are interchangeable, so only the
//!   earliest pending one is ever tried, and never when the register is
//!   already absent (a no-op that would only use it up);
//! - determinate candidates are tried before indeterminate ones.
//!
//! Expiry is modelled without clocks: a Save's value reads as present for a
//! Load invoked before the Save's latest expiry time, and as absent for a
//! Load that completes after its earliest one (see
//! [`super::history::ExpiryWindow`]); once a Load has seen it absent, it
//! stays absent.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::history::{describe, expiry_window, Kind, Op, Outcome, Timing};

/// Limits of the search.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Timing assumptions (clock-skew allowance for expiry).
    pub timing: Timing,
    /// Give up (verdict [`Verdict::Unknown`]) after this many distinct
    /// (linearized set, state) pairs.
    pub max_states: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timing: Timing::default(),
            max_states: 5_000_000,
        }
    }
}

/// The result for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable {
        /// At the deepest point the search reached: the operation whose
        /// completion could not be honoured (history id).
        blocked_op: usize,
        /// The value of the register there (`None`: absent).
        state: Option<String>,
        /// How many acknowledged operations had been linearized there.
        linearized: usize,
        /// Human-readable explanation.
        detail: String,
    },
    /// The search gave up (too many states).
    Unknown {
        /// States explored.
        states: usize,
    },
}

/// What checking one key found and cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyResult {
    /// The key.
    pub key: String,
    /// Operations in the key's history.
    pub ops: usize,
    /// Operations the search had to place (after dropping the ones that
    /// cannot matter).
    pub searched_ops: usize,
    /// Distinct (linearized set, state) pairs visited.
    pub states: usize,
    /// Wall time of the search, in milliseconds.
    pub millis: f64,
    /// The verdict.
    pub verdict: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CKind {
    Put(u32),
    Delete,
    Get(Option<u32>),
}

#[derive(Clone, Copy, Debug)]
struct COp {
    /// Index into the key's op slice.
    src: usize,
    kind: CKind,
    inv: u64,
    resp: u64,
    determinate: bool,
    /// Expiry window of a put.
    earliest: u64,
    latest: u64,
}

/// Register state: `ABSENT` or the index (into `cops`) of the put in effect.
const ABSENT: u32 = u32::MAX;
const NIL: usize = usize::MAX;

struct Search<'a> {
    cops: &'a [COp],
    /// Event list: event i (1-based; 0 is the head sentinel) is (op, is_return).
    ev_op: Vec<usize>,
    ev_ret: Vec<bool>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_of: Vec<usize>,
    ret_of: Vec<usize>,
}

impl Search<'_> {
    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if self.ret_of[op] != NIL {
            self.unlink(self.ret_of[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.ret_of[op] != NIL {
            self.relink(self.ret_of[op]);
        }
        self.relink(self.call_of[op]);
    }

    /// The ops that may be linearized next, best first.
    fn candidates(&self, state: u32) -> Vec<usize> {
        let mut det = Vec::new();
        let mut indet = Vec::new();
        let mut delete_seen = false;
        let mut e = self.next[0];
        while e != NIL && !self.ev_ret[e] {
            let op = self.ev_op[e];
            let c = &self.cops[op];
            if c.determinate {
                det.push(op);
            } else if c.kind == CKind::Delete {
                if !delete_seen && state != ABSENT {
                    indet.push(op);
                }
                delete_seen = true;
            } else {
                indet.push(op);
            }
            e = self.next[e];
        }
        det.extend(indet);
        det
    }

    /// The op whose return is first in the list (the one that blocks).
    fn first_return(&self) -> Option<usize> {
        let mut e = self.next[0];
        while e != NIL {
            if self.ev_ret[e] {
                return Some(self.ev_op[e]);
            }
            e = self.next[e];
        }
        None
    }

    fn step(&self, state: u32, op: usize) -> Option<u32> {
        let c = &self.cops[op];
        match c.kind {
            CKind::Put(_) => Some(op as u32),
            CKind::Delete => Some(ABSENT),
            CKind::Get(None) => {
                // Absent, or the value in effect may have expired before
                // this read (from then on it is gone).
                let gone = state == ABSENT || c.resp >= self.cops[state as usize].earliest;
                gone.then_some(ABSENT)
            }
            CKind::Get(Some(v)) => {
                if state == ABSENT {
                    return None;
                }
                let w = &self.cops[state as usize];
                match w.kind {
                    CKind::Put(wv) if wv == v && c.inv <= w.latest => Some(state),
                    _ => None,
                }
            }
        }
    }
}

/// Checks one key's operations (all with the same key).
pub fn check_key(key: &str, ops: &[&Op], cfg: &Config) -> KeyResult {
    let started = Instant::now();
    let mut values: HashMap<&str, u32> = HashMap::new();
    fn intern<'a>(values: &mut HashMap<&'a str, u32>, v: &'a str) -> u32 {
        let n = values.len() as u32;
        *values.entry(v).or_insert(n)
    }
    // Values that some acknowledged read returned.
    let mut observed: HashSet<u32> = HashSet::new();
    for op in ops {
        if op.kind == Kind::Load && op.outcome == Outcome::Ok {
            if let Some(v) = &op.value {
                observed.insert(intern(&mut values, v));
            }
        }
    }
    let mut cops = Vec::new();
    for (src, op) in ops.iter().enumerate() {
        let determinate = match op.outcome {
            Outcome::Failed => continue,
            Outcome::Ok => true,
            Outcome::Indeterminate | Outcome::Unexpected => false,
        };
        let kind = match op.kind {
            Kind::Save => {
                let v = intern(&mut values, op.value.as_deref().unwrap_or(""));
                if !determinate && !observed.contains(&v) {
                    continue;
                }
                CKind::Put(v)
            }
            Kind::Delete => CKind::Delete,
            Kind::Load => {
                if !determinate {
                    continue;
                }
                CKind::Get(op.value.as_deref().map(|v| intern(&mut values, v)))
            }
        };
        let win = expiry_window(op, cfg.timing);
        cops.push(COp {
            src,
            kind,
            inv: op.invoke_ns,
            resp: if determinate {
                op.complete_ns
            } else {
                u64::MAX
            },
            determinate,
            earliest: win.earliest,
            latest: win.latest,
        });
    }
    let mut result = KeyResult {
        key: key.to_string(),
        ops: ops.len(),
        searched_ops: cops.len(),
        states: 0,
        millis: 0.0,
        verdict: Verdict::Linearizable,
    };
    let (verdict, states) = search(&cops, ops, cfg);
    result.verdict = verdict;
    result.states = states;
    result.millis = started.elapsed().as_secs_f64() * 1e3;
    result
}

fn search(cops: &[COp], ops: &[&Op], cfg: &Config) -> (Verdict, usize) {
    let n = cops.len();
    let mut remaining = cops.iter().filter(|c| c.determinate).count();
    if remaining == 0 {
        return (Verdict::Linearizable, 0);
    }
    // Events sorted by time; at equal times calls come first, so touching
    // operations count as concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, c) in cops.iter().enumerate() {
        events.push((c.inv, false, i));
        if c.determinate {
            events.push((c.resp.max(c.inv), true, i));
        }
    }
    events.sort_unstable();
    let m = events.len();
    let mut s = Search {
        cops,
        ev_op: vec![NIL; m + 1],
        ev_ret: vec![false; m + 1],
        next: vec![NIL; m + 1],
        prev: vec![NIL; m + 1],
        call_of: vec![NIL; n],
        ret_of: vec![NIL; n],
    };
    for (k, &(_, is_ret, op)) in events.iter().enumerate() {
        let e = k + 1;
        s.ev_op[e] = op;
        s.ev_ret[e] = is_ret;
        s.prev[e] = e - 1;
        s.next[e - 1] = e;
        if is_ret {
            s.ret_of[op] = e;
        } else {
            s.call_of[op] = e;
        }
    }

    struct Frame {
        cands: Vec<usize>,
        next: usize,
        via: usize,
        prev_state: u32,
    }
    // The linearized set is identified by a 128-bit Zobrist hash (the XOR
    // of a random key per operation), updated in O(1) per step; with 128
    // bits a collision between two of even millions of sets is
    // astronomically unlikely; at worst it would make the search skip an
    // unexplored configuration and report a false anomaly. It can never
    // hide one: "linearizable" is only answered with a complete order.
    let mut zobrist = Vec::with_capacity(n);
    let mut seed = 0x243f_6a88_85a3_08d3u64;
    let mut next_key = || {
        // splitmix64
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for _ in 0..n {
        zobrist.push((u128::from(next_key()) << 64) | u128::from(next_key()));
    }
    let mut bits: u128 = 0;
    let mut state = ABSENT;
    let mut cache: HashSet<(u128, u32)> = HashSet::new();
    let mut linearized_det = 0usize;
    let mut deepest: Option<(usize, usize, u32)> = None; // (linearized, blocked op, state)
    let mut stack = vec![Frame {
        cands: s.candidates(state),
        next: 0,
        via: NIL,
        prev_state: ABSENT,
    }];
    loop {
        let top = stack.last_mut().expect("stack is never empty here");
        if top.next >= top.cands.len() {
            // Dead end: remember the deepest one for the report, then backtrack.
            if deepest.is_none_or(|d| linearized_det > d.0) {
                if let Some(b) = s.first_return() {
                    deepest = Some((linearized_det, b, state));
                }
            }
            let f = stack.pop().expect("non-empty");
            if f.via == NIL {
                break;
            }
            s.unlift(f.via);
            bits ^= zobrist[f.via];
            state = f.prev_state;
            if cops[f.via].determinate {
                remaining += 1;
                linearized_det -= 1;
            }
            continue;
        }
        let op = top.cands[top.next];
        top.next += 1;
        let Some(new_state) = s.step(state, op) else {
            continue;
        };
        bits ^= zobrist[op];
        if !cache.insert((bits, new_state)) {
            bits ^= zobrist[op];
            continue;
        }
        if cache.len() > cfg.max_states {
            return (
                Verdict::Unknown {
                    states: cache.len(),
                },
                cache.len(),
            );
        }
        s.lift(op);
        let prev_state = state;
        state = new_state;
        if cops[op].determinate {
            remaining -= 1;
            linearized_det += 1;
            if remaining == 0 {
                return (Verdict::Linearizable, cache.len());
            }
        }
        stack.push(Frame {
            cands: s.candidates(state),
            next: 0,
            via: op,
            prev_state,
        });
    }

    let (linearized, blocked, st) = deepest.unwrap_or((0, 0, ABSENT));
    let value_of = |st: u32| -> Option<String> {
        if st == ABSENT {
            None
        } else {
            ops[cops[st as usize].src].value.clone()
        }
    };
    let state_desc = if st == ABSENT {
        "absent".to_string()
    } else {
        format!(
            "{} (from {})",
            value_of(st).unwrap_or_default(),
            describe(ops[cops[st as usize].src])
        )
    };
    let blocked_op = ops[cops[blocked].src];
    (
        Verdict::NotLinearizable {
            blocked_op: blocked_op.id,
            state: value_of(st),
            linearized,
            detail: format!(
                "no linearization: after {linearized} acknowledged operations, with the register at {state_desc}, \
                 {} cannot take effect",
                describe(blocked_op)
            ),
        },
        cache.len(),
    )
}

/// Checks every key of a history separately (linearizability is
/// compositional: the history is linearizable if and only if each key's
/// is), spreading keys over `threads` threads.
pub fn check_history(ops: &[Op], cfg: &Config, threads: usize) -> Vec<KeyResult> {
    let keys: Vec<(&str, Vec<&Op>)> = super::history::by_key(ops).into_iter().collect();
    let threads = threads.max(1).min(keys.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(keys.len()));
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((key, kops)) = keys.get(i) else {
                    break;
                };
                let r = check_key(key, kops, cfg);
                results.lock().expect("no panics while held").push(r);
            });
        }
    });
    let mut results = results.into_inner().expect("no panics while held");
    results.sort_by(|a, b| a.key.cmp(&b.key));
    results
}

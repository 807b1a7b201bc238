//! Runs one cell: closed-loop clients, a warm-up, then the measured window.
//!
//! Each client is a task that owns one connection and sends its next
//! request as soon as the previous one is answered. The clients start in
//! the warm-up; a request is counted (latency in an HDR histogram, or a
//! failure by code) only if it is answered inside the measured window,
//! which starts when the warm-up ends and closes `duration` later.
//! Throughput is the number of successful requests answered in the window
//! divided by its length.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::driver::{Conn, Failure};
use crate::plan::{CellSpec, Op};

/// Longest latency the histograms hold (60 s), in microseconds.
const MAX_US: u64 = 60_000_000;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// How every cell of a sweep runs.
#[derive(Clone, Copy, Debug)]
pub struct CellConfig {
    /// Unmeasured time before the window, with the same load.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Distinct keys; client `w` starts at key `w` and steps through all.
    pub keys: usize,
    /// TTL of saved values in seconds (etcd: the lease's TTL).
    pub ttl: i32,
}

/// Failed requests by code: how many, and one message.
pub type Failures = BTreeMap<String, (u64, String)>;

/// What one cell measured.
pub struct CellResult {
    /// What was measured.
    pub spec: CellSpec,
    /// Successful requests answered in the window.
    pub ok: u64,
    /// Failed requests answered in the window, by code.
    pub failures: Failures,
    /// The window's length.
    pub elapsed: Duration,
    /// Latency of the successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

/// A histogram for latencies from 1 us to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("1 us .. 60 s are valid histogram bounds")
}

impl CellResult {
    /// Failed requests in the window.
    pub fn errors(&self) -> u64 {
        self.failures.values().map(|(n, _)| n).sum()
    }

    /// Successful requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The latency at quantile `q` in milliseconds (0 when nothing succeeded).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Key `i`'s successor in a client's walk over `keys` keys: a stride prime
/// to any key count below it, so every client visits every key.
fn next_key(i: usize, keys: usize) -> usize {
    (i + 7919) % keys
}

/// Runs `spec` with one client per connection in `conns` (there must be
/// `spec.clients` of them, all to `spec.system`); hands the connections
/// back for the next cell.
pub async fn run_cell(
    spec: CellSpec,
    conns: Vec<Conn>,
    cfg: CellConfig,
) -> Result<(CellResult, Vec<Conn>)> {
    if conns.len() != spec.clients {
        bail!(
            "{spec:?} needs {} connections, got {}",
            spec.clients,
            conns.len()
        );
    }
    if let Some(c) = conns.iter().find(|c| c.system() != spec.system) {
        bail!("{spec:?} got a connection to {:?}", c.system());
    }
    let state = Arc::new(AtomicU8::new(WARMING));
    let value = Arc::new(vec![0x5a_u8; spec.value_bytes]);
    let keys = cfg.keys.max(1);
    let mut tasks = Vec::with_capacity(conns.len());
    for (w, mut conn) in conns.into_iter().enumerate() {
        let state = state.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let mut ok = 0u64;
            let mut failures = Failures::new();
            let mut key = w % keys;
            loop {
                if state.load(Ordering::Relaxed) == STOPPED {
                    break;
                }
                let t = Instant::now();
                let res = conn.call(spec.op, key, &value, cfg.ttl).await;
                let us = (t.elapsed().as_micros() as u64).clamp(1, MAX_US);
                key = next_key(key, keys);
                if state.load(Ordering::Relaxed) != MEASURING {
                    continue;
                }
                match res {
                    Ok(()) => {
                        ok += 1;
                        let _ = hist.record(us);
                    }
                    Err(Failure { code, message }) => {
                        failures.entry(code).or_insert((0, message)).0 += 1;
                    }
                }
            }
            (conn, ok, failures, hist)
        }));
    }
    tokio::time::sleep(cfg.warmup).await;
    state.store(MEASURING, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    state.store(STOPPED, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut result = CellResult {
        spec,
        ok: 0,
        failures: Failures::new(),
        elapsed,
        latency_us: new_histogram(),
    };
    let mut conns = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (conn, ok, failures, hist) = t.await.context("a client task of the cell failed")?;
        conns.push(conn);
        result.ok += ok;
        for (code, (n, sample)) in failures {
            result.failures.entry(code).or_insert((0, sample)).0 += n;
        }
        result
            .latency_us
            .add(&hist)
            .context("merging the clients' histograms")?;
    }
    Ok((result, conns))
}

/// Saves every key (`keys` of them) with a value of `value_bytes` through
/// the connections in `conns`, concurrently, retrying a failed key a few
/// times; not measured. Hands the connections back.
pub async fn preload(
    conns: Vec<Conn>,
    keys: usize,
    value_bytes: usize,
    ttl: i32,
) -> Result<Vec<Conn>> {
    let n = conns.len().max(1);
    let value = Arc::new(vec![0x5a_u8; value_bytes]);
    let mut tasks = Vec::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut key = w;
            while key < keys {
                let mut attempt = 0;
                loop {
                    match conn.call(Op::Save, key, &value, ttl).await {
                        Ok(()) => break,
                        Err(_) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(f) => {
                            return Err(anyhow::anyhow!(
                                "preloading key {key} on {:?}: {} {}",
                                conn.system(),
                                f.code,
                                f.message
                            ))
                        }
                    }
                }
                key += n;
            }
            Ok(conn)
        }));
    }
    let mut back = Vec::new();
    for t in tasks {
        back.push(t.await.context("a preload task failed")??);
    }
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_walks_over_every_key() {
        for keys in [1, 7, 200, 1000, 7918, 7920] {
            let mut seen = vec![false; keys];
            let mut k = 3 % keys;
            for _ in 0..keys {
                seen[k] = true;
                k = next_key(k, keys);
            }
            assert!(seen.iter().all(|s| *s), "{keys} keys");
        }
    }

    #[test]
    fn quantiles_and_throughput_come_from_the_window() {
        let mut r = CellResult {
            spec: CellSpec {
                system: crate::plan::System::Eventstore,
                op: Op::Save,
                clients: 1,
                value_bytes: 1,
            },
            ok: 500,
            failures: Failures::new(),
            elapsed: Duration::from_millis(2500),
            latency_us: new_histogram(),
        };
        for us in 1..=1000u64 {
            r.latency_us.record(us * 10).unwrap();
        }
        assert!((r.ops_per_sec() - 200.0).abs() < 1e-9);
        assert!(
            (r.quantile_ms(0.5) - 5.0).abs() < 0.01,
            "{}",
            r.quantile_ms(0.5)
        );
        assert!(
            (r.quantile_ms(0.99) - 9.9).abs() < 0.01,
            "{}",
            r.quantile_ms(0.99)
        );
        r.failures.insert("UNAVAILABLE".into(), (3, "x".into()));
        r.failures.insert("NOT_FOUND".into(), (4, "y".into()));
        assert_eq!(r.errors(), 7);
    }
}

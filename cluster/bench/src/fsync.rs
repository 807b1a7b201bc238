//! The disk's fsync latency: 4 KiB appended to a file and `fdatasync`ed,
//! in a loop, on the filesystem that holds the data directories.
//!
//! A Save costs at least one such write on a majority of the nodes (both
//! EventStore's RocksDB log and etcd's WAL append and sync), so this is the
//! floor under the write latencies of the same run.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cell::new_histogram;

/// What the fsync probe measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FsyncStats {
    /// The directory written to.
    pub dir: String,
    /// Bytes written before each sync.
    pub write_bytes: usize,
    /// Write + sync rounds.
    pub count: u64,
    /// Rounds per second.
    pub per_sec: f64,
    /// Median round latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest round, ms.
    pub max_ms: f64,
}

/// Appends 4 KiB and calls `fdatasync` in a loop for `duration` in a
/// probe file in `dir` (removed afterwards). Blocks: call it from a
/// blocking thread.
pub fn measure(dir: &Path, duration: Duration) -> Result<FsyncStats> {
    const BLOCK: usize = 4096;
    let path = dir.join(".fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating the fsync probe {}", path.display()))?;
    let block = vec![0xa5_u8; BLOCK];
    let mut hist = new_histogram();
    let start = Instant::now();
    let mut count = 0u64;
    let res = (|| -> Result<()> {
        while start.elapsed() < duration {
            let t = Instant::now();
            file.write_all(&block)
                .with_context(|| format!("writing {}", path.display()))?;
            file.sync_data()
                .with_context(|| format!("fdatasync of {}", path.display()))?;
            let us = (t.elapsed().as_micros() as u64).max(1);
            let _ = hist.record(us);
            count += 1;
        }
        Ok(())
    })();
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    res?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(FsyncStats {
        dir: dir.display().to_string(),
        write_bytes: BLOCK,
        count,
        per_sec: count as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_counts_rounds_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let s = measure(dir.path(), Duration::from_millis(200)).unwrap();
        assert!(s.count > 0, "{s:?}");
        assert!(
            s.p50_ms > 0.0 && s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms,
            "{s:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        let e = measure(&gone, Duration::from_millis(10)).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }
}

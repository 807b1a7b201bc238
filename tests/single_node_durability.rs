//! Durability on one node: every acknowledged write survives SIGKILL and a
//! restart, expired values stay gone, and SIGTERM shuts down cleanly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(180);

/// Every write acknowledged before a SIGKILL, the last one included, is
/// there after the restart (each with a long TTL, so that none can pass by
/// having expired), deletes stay deleted, and a value that was reported
/// expired before the kill is not served again.
#[tokio::test]
async fn acknowledged_writes_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot often, so a restart also replays a snapshot plus a log tail.
    let mut s = Server::single(
        dir.path(),
        &["--snapshot-every", "100", "--keep-behind-snapshot", "10"],
    );
    s.wait_ready(Duration::from_secs(30)).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("expiring"), b"x", 1)).await.unwrap();
        let expiring_acked = Instant::now();
        c.load(load_req(global("expiring")))
            .await
            .expect("a value with a 1 s TTL, just saved");
        for i in 0..500u32 {
            c.save(save_req(
                bridge("b", &format!("k{i}")),
                &i.to_be_bytes(),
                600,
            ))
            .await
            .unwrap();
        }
        for i in (0..500u32).step_by(5) {
            c.delete(delete_req(bridge("b", &format!("k{i}"))))
                .await
                .unwrap();
        }
        // The expiring value is reported gone before the kill.
        loop {
            match c.load(load_req(global("expiring"))).await {
                Ok(_) => {
                    assert!(
                        expiring_acked.elapsed() < Duration::from_millis(1500),
                        "a value with a 1 s TTL still served after {:?}",
                        expiring_acked.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(st) if st.code() == Code::NotFound => break,
                Err(st) => panic!("load expiring: {st:?}"),
            }
        }
        // The last write acknowledged before the kill.
        c.save(save_req(global("last"), b"last", 600))
            .await
            .unwrap();
        s.kill9();
        s.start();
        s.wait_ready(Duration::from_secs(30)).await;
        let mut c = s.client().await;
        for i in 0..500u32 {
            let r = c.load(load_req(bridge("b", &format!("k{i}")))).await;
            if i % 5 == 0 {
                assert_eq!(r.unwrap_err().code(), Code::NotFound, "k{i} was deleted");
            } else {
                assert_eq!(
                    r.unwrap().into_inner().value.to_vec(),
                    i.to_be_bytes().to_vec(),
                    "k{i}"
                );
            }
        }
        assert_eq!(
            c.load(load_req(global("last")))
                .await
                .expect("the last acknowledged write was lost")
                .into_inner()
                .value
                .to_vec(),
            b"last".to_vec()
        );
        assert_eq!(
            c.load(load_req(global("expiring")))
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
        let status = s.status().await.unwrap();
        assert!(
            status.snapshot_index.is_some(),
            "a snapshot should exist: {status:?}"
        );
        // Nothing else is stored: 400 values and "last" (and "expiring"
        // until the purger, every second, removes it).
        let start = Instant::now();
        loop {
            let status = s.status().await.unwrap();
            if status.keys == 401 {
                break;
            }
            assert!(
                status.keys == 402 && start.elapsed() < Duration::from_millis(1500),
                "401 values expected: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("k"), b"v", 600)).await.unwrap();
        drop(c);
        assert_eq!(s.terminate(Duration::from_secs(20)), Some(0));
        s.start();
        s.wait_ready(Duration::from_secs(30)).await;
        let mut c = s.client().await;
        assert_eq!(
            &c.load(load_req(global("k")))
                .await
                .unwrap()
                .into_inner()
                .value[..],
            b"v"
        );
    })
    .await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let out = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--peer-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            &s.data_dir.display().to_string(),
        ])
        .env("EVENTSTORE_METRICS_LISTEN", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the database"), "{err}");
}

/// A size-limited filesystem mounted for the length of a test, unmounted
/// (after the node on it is stopped) when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB, or None where mounting is not permitted
    /// (not root, or no CAP_SYS_ADMIN).
    fn mount(mib: u32) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }

    /// Gives the filesystem `mib` MiB in all (space returns).
    fn grow(&self, mib: u32) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting the tmpfs with {mib} MiB failed");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// When storage fails for good (here: the disk fills up), openraft stops
/// its core; the process must then exit non-zero with a clear message, not
/// linger with open ports that a TCP liveness probe takes for healthy. The
/// write that failed was not acknowledged; once there is space again, the
/// restarted node serves every write that was.
#[tokio::test]
async fn a_node_whose_disk_fills_exits_non_zero_and_keeps_every_acknowledged_write() {
    let Some(fs) = SmallFs::mount(96) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    // The data directory is on the small filesystem; the log is not.
    let outer = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(fs.dir.path(), outer.path().join("node-0")).unwrap();
    let mut s = Server::single(outer.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    // Another client stays connected and idle while the node must exit, as
    // every pooled client of a real deployment does. Its connection is not
    // driven while this test waits for the exit, so it never answers the
    // server's GOAWAY: a node that drained connections as on SIGTERM would
    // wait for it instead of exiting.
    let mut idle = s.client().await;
    let _ = bounded(LIMIT, idle.load(load_req(global("nothing")))).await;
    let acked = bounded(LIMIT, async {
        let mut c = s.client().await;
        let value = vec![7u8; 512 * 1024];
        let mut acked = 0u32;
        for i in 0..2000u32 {
            match c
                .save(save_req(global(&format!("k{i}")), &value, 600))
                .await
            {
                Ok(_) => acked += 1,
                Err(st) => {
                    assert!(
                        matches!(
                            st.code(),
                            Code::Unavailable | Code::Internal | Code::Unknown | Code::Cancelled
                        ),
                        "unexpected answer to a write on a full disk: {st:?}"
                    );
                    break;
                }
            }
        }
        acked
    })
    .await;
    assert!(acked > 0, "no write succeeded before the disk filled");
    assert!(acked < 2000, "the disk never filled");
    // The failed write's answer and the exit come together (20 ms here).
    let failed = Instant::now();
    let code = s
        .wait_exit(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", s.log_tail()));
    drop(idle);
    eprintln!(
        "exited {:?} after the write that failed was answered",
        failed.elapsed()
    );
    assert!(
        code.is_some_and(|c| c != 0),
        "exit code {code:?}; log:\n{}",
        s.log_tail()
    );
    let log = s.log_tail();
    assert!(
        log.contains("the Raft core stopped after a fatal error"),
        "no clear message in the log:\n{log}"
    );

    // Once there is space again, the restarted node (its supervisor
    // restarts it) serves every acknowledged write.
    fs.grow(512);
    s.start();
    s.wait_ready(Duration::from_secs(30)).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        for i in 0..acked {
            c.load(load_req(global(&format!("k{i}"))))
                .await
                .unwrap_or_else(|e| panic!("acknowledged write k{i} lost on a full disk: {e:?}"));
        }
        c.save(save_req(global("after"), b"v", 600)).await.unwrap();
    })
    .await;
    s.kill9();
    drop(s);
    drop(fs);
}

/// Files of a data directory, with their contents, to see that a refused
/// start changed nothing.
fn snapshot_of(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n != "LOCK" && !n.to_string_lossy().starts_with("LOG"))
            {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The newest write-ahead log of a node's database.
fn newest_wal(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(data_dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a write-ahead log")
}

/// Writes `n` long-lived values, then SIGKILLs the node, so that they are
/// in the write-ahead log only.
async fn write_then_kill(s: &mut Server, n: u32) {
    s.wait_ready(Duration::from_secs(30)).await;
    let mut c = s.client().await;
    for i in 0..n {
        c.save(save_req(global(&format!("k{i}")), &[7u8; 200], 600))
            .await
            .unwrap();
    }
    s.kill9();
}

/// Bytes changed in the middle of the write-ahead log (disk corruption)
/// would make RocksDB's default recovery stop at the damage and drop every
/// acknowledged write after it without a word: a Raft member that forgets
/// entries it acknowledged, or a vote it cast. The node refuses to start,
/// says why, and leaves the directory as it was, for an operator to
/// replace it (README: Replacing a node).
#[tokio::test]
async fn a_write_ahead_log_corrupt_in_the_middle_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::single(dir.path(), &[]);
    bounded(LIMIT, async {
        write_then_kill(&mut s, 40).await;
        let wal = newest_wal(&s.data_dir);
        let mut bytes = std::fs::read(&wal).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xff;
        }
        std::fs::write(&wal, &bytes).unwrap();
        let before = snapshot_of(&s.data_dir);

        s.start();
        let code = s.wait_exit(Duration::from_secs(20)).unwrap_or_else(|e| {
            panic!(
                "a node with a corrupt write-ahead log kept running ({e}):\n{}",
                s.log_tail()
            )
        });
        assert_ne!(code, Some(0));
        let log = s.log_tail();
        assert!(
            log.contains("Corruption") && log.contains("corrupt"),
            "no clear reason:\n{log}"
        );
        assert!(
            before == snapshot_of(&s.data_dir),
            "the refused start changed the data directory"
        );
    })
    .await;
}

/// A record cut short at the very end of the log is what a power loss in
/// the middle of a synced write leaves: that write was never acknowledged.
/// The node starts, without it, and serves everything before it.
#[tokio::test]
async fn a_write_ahead_log_cut_short_at_its_end_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::single(dir.path(), &[]);
    bounded(LIMIT, async {
        write_then_kill(&mut s, 40).await;
        let wal = newest_wal(&s.data_dir);
        let len = std::fs::metadata(&wal).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        s.start();
        s.wait_ready(Duration::from_secs(30)).await;
        let mut c = s.client().await;
        for i in 0..39 {
            c.load(load_req(global(&format!("k{i}"))))
                .await
                .unwrap_or_else(|e| panic!("k{i} lost: {e:?}"));
        }
    })
    .await;
}

/// Every file of a directory tree with its contents, RocksDB's own
/// diagnostic logs and lock file included: a refused start must leave
/// every byte as it was.
fn every_file_of(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Replaces `to` with a copy of `from` (`cp -a`, times and modes kept).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// A node with `n` values written, stopped cleanly, with its database
/// flushed to SST files; returns a pristine copy of its data directory.
async fn stopped_node_with_data(dir: &std::path::Path, n: u32) -> (Server, std::path::PathBuf) {
    let mut s = Server::single(dir, &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let mut c = s.client().await;
    for i in 0..n {
        c.save(save_req(global(&format!("k{i}")), &[7u8; 1000], 600))
            .await
            .unwrap();
    }
    // The leader records the cluster id within a registrar tick (500 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.terminate(Duration::from_secs(20)), Some(0));
    {
        let db = eventstore::store::db::open(&s.data_dir.join("db")).unwrap();
        db.flush().unwrap();
        for name in [
            eventstore::store::db::CF_LOG,
            eventstore::store::db::CF_LOG_META,
            eventstore::store::db::CF_DATA,
            eventstore::store::db::CF_EXPIRY,
            eventstore::store::db::CF_SM_META,
        ] {
            db.flush_cf(db.cf_handle(name).unwrap()).unwrap();
        }
    }
    let pristine = dir.join("pristine");
    copy_dir(&s.data_dir, &pristine);
    (s, pristine)
}

/// Starts `s` on its damaged data directory and checks that it refuses to
/// start, says that the directory is corrupt and names `what`, and leaves
/// every file of the directory exactly as it was.
fn refused_and_untouched(s: &mut Server, case: &str, what: &str) {
    let before = every_file_of(&s.data_dir);
    let from = std::fs::metadata(&s.log).map(|m| m.len()).unwrap_or(0) as usize;
    s.start();
    let code = s
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{case}: the node kept running ({e}):\n{}", s.log_tail()));
    assert_ne!(code, Some(0), "{case}");
    let log = String::from_utf8_lossy(&std::fs::read(&s.log).unwrap()[from..]).to_string();
    println!("{case}: {}", log.lines().last().unwrap_or_default());
    assert!(
        log.contains(&format!(
            "the data directory {} is corrupt",
            s.data_dir.display()
        )) && log.contains("leaves it as it is")
            && log.contains(what),
        "{case}: no clear reason naming {what:?}:\n{log}"
    );
    let after = every_file_of(&s.data_dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{case}: the refused start added or removed files"
    );
    for (path, bytes) in &before {
        assert!(
            after.get(path) == Some(bytes),
            "{case}: the refused start changed {}",
            path.display()
        );
    }
}

/// Garbage in a record the node reads when it starts (its vote, its
/// identity, its cluster id, the last applied log id, the membership, the
/// clock, the replicated cluster id) would be misread or make the node
/// fail later, half-started. The node refuses to start, names the record,
/// and leaves every byte of the directory as it was.
#[tokio::test]
async fn garbage_in_a_record_read_at_start_is_refused_and_the_directory_is_left_unchanged() {
    use eventstore::store::db::{CF_DATA, CF_LOG_META, CF_SM_META};
    let dir = tempfile::tempdir().unwrap();
    bounded(LIMIT, async {
        let (mut s, pristine) = stopped_node_with_data(dir.path(), 20).await;
        let garbage: &[u8] = b"\xfe\xfe\xfe garbage \xff";
        let cases: [(&str, &[u8], &str); 8] = [
            (CF_LOG_META, b"vote", "the vote record"),
            (CF_LOG_META, b"committed", "the committed log id record"),
            (CF_LOG_META, b"identity", "the identity record"),
            (CF_LOG_META, b"cluster_id", "the cluster id record"),
            (
                CF_SM_META,
                b"last_applied",
                "the last applied log id record",
            ),
            (CF_SM_META, b"membership", "the membership record"),
            (CF_SM_META, b"clock", "corrupt stored record: clock"),
            (
                CF_DATA,
                b"\x00i",
                "corrupt stored record: cluster id record",
            ),
        ];
        for (cf, key, what) in cases {
            copy_dir(&pristine, &s.data_dir);
            {
                let db = eventstore::store::db::open(&s.data_dir.join("db")).unwrap();
                let handle = db.cf_handle(cf).unwrap();
                assert!(
                    db.get_cf(handle, key).unwrap().is_some(),
                    "{cf}/{key:?} is not written by a node; the case tests nothing"
                );
                db.put_cf(handle, key, garbage).unwrap();
                db.flush_cf(handle).unwrap();
            }
            refused_and_untouched(&mut s, &format!("garbage in {cf}/{what}"), what);
        }
        // The pristine copy starts: the damage, not the copying, was refused.
        copy_dir(&pristine, &s.data_dir);
        s.start();
        s.wait_ready(Duration::from_secs(30)).await;
        let mut c = s.client().await;
        c.load(load_req(global("k19"))).await.unwrap();
    })
    .await;
}

/// Damaged RocksDB files: an SST file or the MANIFEST cut short, a CURRENT
/// file that names a MANIFEST that is not there, and no CURRENT file at all
/// (which RocksDB would take for a new, empty database, deleting nothing
/// but hiding everything). The node refuses to start with a clear message
/// and leaves every byte of the directory as it was.
#[tokio::test]
async fn truncated_or_missing_database_files_are_refused_and_the_directory_is_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    bounded(LIMIT, async {
        let (mut s, pristine) = stopped_node_with_data(dir.path(), 300).await;
        let db_dir = s.data_dir.join("db");
        let files = |ext: &str| -> Vec<std::path::PathBuf> {
            let mut v: Vec<_> = std::fs::read_dir(&db_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().contains(ext))
                .collect();
            v.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
            v
        };
        let cut_to_half = |p: &std::path::Path| {
            let len = std::fs::metadata(p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        };

        copy_dir(&pristine, &s.data_dir);
        let biggest = files(".sst").pop().expect("an SST file");
        cut_to_half(&biggest);
        refused_and_untouched(&mut s, "an SST file cut short", "Corruption");

        copy_dir(&pristine, &s.data_dir);
        let manifest = files("MANIFEST-").pop().expect("a MANIFEST");
        cut_to_half(&manifest);
        refused_and_untouched(
            &mut s,
            "the MANIFEST cut short",
            "the MANIFEST has lost track",
        );

        copy_dir(&pristine, &s.data_dir);
        std::fs::write(s.data_dir.join("db/CURRENT"), "MANIFEST-999999\n").unwrap();
        refused_and_untouched(&mut s, "CURRENT names no MANIFEST", "MANIFEST-999999");

        copy_dir(&pristine, &s.data_dir);
        std::fs::remove_file(s.data_dir.join("db/CURRENT")).unwrap();
        refused_and_untouched(&mut s, "no CURRENT file", "but no CURRENT file");
    })
    .await;
}

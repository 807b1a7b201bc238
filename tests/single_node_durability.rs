//! Durability on one node: every acknowledged write survives SIGKILL and a
//! restart, expired values stay gone, and SIGTERM shuts down cleanly.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(180);

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
        c.save(save_req(global("expiring"), b"x", 1)).await.unwrap();
        s.kill9();
        tokio::time::sleep(Duration::from_millis(1200)).await;
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
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the database"), "{err}");
}

//! The wire contract on a single node, driven over gRPC against the real
//! binary: validation of every rule in every operation, scopes, overwrite,
//! delete, binary and empty values, namespaces, limits, TTLs and defaults.

mod common;

use std::time::Duration;

use common::*;
use eventstore::proto::protob::{LocationType, ScopeType};
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);

async fn server(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), extra);
    s.wait_ready(Duration::from_secs(30)).await;
    (dir, s)
}

/// Every invalid location, with a fragment its error message must contain.
fn invalid_locations() -> Vec<(&'static str, Option<LocationType>, &'static str)> {
    vec![
        ("missing location", None, "location is required"),
        (
            "missing scope",
            Some(LocationType {
                scope: None,
                key: "k".into(),
            }),
            "scope is required",
        ),
        (
            "unknown scope",
            Some(loc(7, "", "", "k")),
            "unknown scope type 7",
        ),
        (
            "negative scope",
            Some(loc(-1, "", "", "k")),
            "unknown scope type -1",
        ),
        (
            "empty key global",
            Some(global("")),
            "key must not be empty",
        ),
        (
            "empty key bridge",
            Some(bridge("b", "")),
            "key must not be empty",
        ),
        (
            "empty key instance",
            Some(instance("b", "i", "")),
            "key must not be empty",
        ),
        (
            "global with bridge",
            Some(loc(2, "b", "", "k")),
            "Global scope must not have",
        ),
        (
            "global with instance",
            Some(loc(2, "", "i", "k")),
            "Global scope must not have",
        ),
        (
            "bridge without name",
            Some(bridge("", "k")),
            "Bridge scope requires a bridge",
        ),
        (
            "bridge with instance",
            Some(loc(1, "b", "i", "k")),
            "Bridge scope must not have an instance",
        ),
        (
            "instance without bridge",
            Some(instance("", "i", "k")),
            "Instance scope requires a bridge",
        ),
        (
            "instance without id",
            Some(instance("b", "", "k")),
            "Instance scope requires an instance",
        ),
        (
            "scope zero value is Instance",
            Some(LocationType {
                scope: Some(ScopeType::default()),
                key: "k".into(),
            }),
            "Instance scope requires a bridge",
        ),
        (
            "key too long",
            Some(global(&"k".repeat(1025))),
            "key is 1025 bytes",
        ),
        (
            "bridge too long",
            Some(bridge(&"b".repeat(257), "k")),
            "bridge is 257 bytes",
        ),
        (
            "instance too long",
            Some(instance("b", &"i".repeat(257), "k")),
            "instance is 257 bytes",
        ),
    ]
}

#[tokio::test]
async fn every_validation_rule_in_every_operation() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        for (name, location, fragment) in invalid_locations() {
            let save = c
                .save(eventstore::proto::protob::SaveRequest {
                    location: location.clone(),
                    ttl: 5,
                    value: b"v".to_vec().into(),
                })
                .await
                .unwrap_err();
            let load = c
                .load(eventstore::proto::protob::LoadRequest {
                    location: location.clone(),
                })
                .await
                .unwrap_err();
            let delete = c
                .delete(eventstore::proto::protob::DeleteRequest { location })
                .await
                .unwrap_err();
            for (op, st) in [("save", save), ("load", load), ("delete", delete)] {
                assert_eq!(st.code(), Code::InvalidArgument, "{name}: {op}: {st:?}");
                assert!(
                    st.message().contains(fragment),
                    "{name}: {op}: message {:?} lacks {fragment:?}",
                    st.message()
                );
            }
        }
        // Negative TTL is a Save-only rule.
        let st = c.save(save_req(global("k"), b"v", -1)).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(st.message().contains("ttl"), "{st:?}");
        // Nothing invalid was stored.
        let st = c.load(load_req(global("k"))).await.unwrap_err();
        assert_eq!(st.code(), Code::NotFound);
    })
    .await;
}

#[tokio::test]
async fn save_load_delete_in_every_scope() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        let locations = [global("k"), bridge("b", "k"), instance("b", "i", "k")];
        for (n, l) in locations.iter().enumerate() {
            c.save(save_req(l.clone(), format!("v{n}").as_bytes(), 60))
                .await
                .unwrap();
        }
        // Same key name, three separate namespaces.
        for (n, l) in locations.iter().enumerate() {
            let v = c
                .load(load_req(l.clone()))
                .await
                .unwrap()
                .into_inner()
                .value;
            assert_eq!(&v[..], format!("v{n}").as_bytes());
        }
        // Overwrite replaces the value.
        c.save(save_req(global("k"), b"new", 60)).await.unwrap();
        assert_eq!(
            &c.load(load_req(global("k")))
                .await
                .unwrap()
                .into_inner()
                .value[..],
            b"new"
        );
        // Delete removes only that location.
        c.delete(delete_req(bridge("b", "k"))).await.unwrap();
        let st = c.load(load_req(bridge("b", "k"))).await.unwrap_err();
        assert_eq!(st.code(), Code::NotFound);
        assert!(!st.message().is_empty());
        assert!(c.load(load_req(global("k"))).await.is_ok());
        assert!(c.load(load_req(instance("b", "i", "k"))).await.is_ok());
        // Deleting a missing key succeeds.
        c.delete(delete_req(bridge("b", "k"))).await.unwrap();
        c.delete(delete_req(global("never-saved"))).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn binary_and_empty_values_round_trip() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
        c.save(save_req(global("bin"), &binary, 60)).await.unwrap();
        c.save(save_req(global("empty"), b"", 60)).await.unwrap();
        assert_eq!(
            c.load(load_req(global("bin")))
                .await
                .unwrap()
                .into_inner()
                .value
                .to_vec(),
            binary
        );
        // An empty value is a value: found, and empty.
        assert!(c
            .load(load_req(global("empty")))
            .await
            .unwrap()
            .into_inner()
            .value
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn dotted_names_are_separate_locations() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(bridge("a.b", "c"), b"first", 60))
            .await
            .unwrap();
        c.save(save_req(bridge("a", "b.c"), b"second", 60))
            .await
            .unwrap();
        c.save(save_req(instance("a", "b", "c"), b"third", 60))
            .await
            .unwrap();
        c.save(save_req(global("a.b.c"), b"fourth", 60))
            .await
            .unwrap();
        assert_eq!(
            &c.load(load_req(bridge("a.b", "c")))
                .await
                .unwrap()
                .into_inner()
                .value[..],
            b"first"
        );
        assert_eq!(
            &c.load(load_req(bridge("a", "b.c")))
                .await
                .unwrap()
                .into_inner()
                .value[..],
            b"second"
        );
        assert_eq!(
            &c.load(load_req(instance("a", "b", "c")))
                .await
                .unwrap()
                .into_inner()
                .value[..],
            b"third"
        );
        assert_eq!(
            &c.load(load_req(global("a.b.c")))
                .await
                .unwrap()
                .into_inner()
                .value[..],
            b"fourth"
        );
    })
    .await;
}

#[tokio::test]
async fn value_size_limit_is_enforced_and_configurable() {
    let (_d, s) = server(&["--max-value-bytes", "1000"]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("ok"), &[7u8; 1000], 60))
            .await
            .unwrap();
        let st = c
            .save(save_req(global("big"), &[7u8; 1001], 60))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
        assert!(
            st.message().contains("1001 bytes") && st.message().contains("1000"),
            "{st:?}"
        );
        assert_eq!(
            c.load(load_req(global("big"))).await.unwrap_err().code(),
            Code::NotFound
        );
    })
    .await;
}

#[tokio::test]
async fn default_value_limit_is_one_mebibyte() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("max"), &vec![1u8; 1 << 20], 60))
            .await
            .unwrap();
        assert_eq!(
            c.load(load_req(global("max")))
                .await
                .unwrap()
                .into_inner()
                .value
                .len(),
            1 << 20
        );
        let st = c
            .save(save_req(global("over"), &vec![1u8; (1 << 20) + 1], 60))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    })
    .await;
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    let (_d, s) = server(&["--purge-interval-ms", "100"]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("short"), b"v", 1)).await.unwrap();
        c.save(save_req(global("long"), b"v", 60)).await.unwrap();
        assert!(c.load(load_req(global("short"))).await.is_ok());
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let st = c.load(load_req(global("short"))).await.unwrap_err();
        assert_eq!(st.code(), Code::NotFound);
        assert!(c.load(load_req(global("long"))).await.is_ok());
        // The purger removes it from storage too.
        let start = std::time::Instant::now();
        loop {
            let status = s.status().await.unwrap();
            if status.keys == 1 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "expired key never purged: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Saving again resets the TTL.
        c.save(save_req(global("short"), b"again", 2))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        c.save(save_req(global("short"), b"again", 2))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(c.load(load_req(global("short"))).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn ttl_zero_uses_the_scope_default() {
    let (_d, s) = server(&[
        "--default-global-ttl",
        "1",
        "--default-bridge-ttl",
        "60",
        "--default-instance-ttl",
        "0",
    ])
    .await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("g"), b"v", 0)).await.unwrap();
        c.save(save_req(bridge("b", "k"), b"v", 0)).await.unwrap();
        c.save(save_req(instance("b", "i", "k"), b"v", 0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(
            c.load(load_req(global("g"))).await.unwrap_err().code(),
            Code::NotFound
        );
        assert!(c.load(load_req(bridge("b", "k"))).await.is_ok());
        // A default of 0 means never expire.
        assert!(c.load(load_req(instance("b", "i", "k"))).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn default_ttls_are_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let peer = free_port();
    let mut child = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--peer-listen",
            &format!("127.0.0.1:{peer}"),
            "--data-dir",
            &dir.path().join("d").display().to_string(),
        ])
        .env("EVENTSTORE_DEFAULT_GLOBAL_TTL", "1")
        .env("EVENTSTORE_METRICS_LISTEN", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let result = bounded(LIMIT, async {
        let c = eventstore::client::Client::connect(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(20),
        )
        .unwrap();
        c.global().save_value("g", b"v".to_vec(), 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        c.global().load_value("g").await
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        matches!(result, Err(eventstore::client::Error::NotFound(_))),
        "{result:?}"
    );
}

/// Every `grpc-timeout` a client can send, in the header grammar (at most
/// eight digits and a unit) or outside it, gets a normal answer: no panic,
/// no hang, no cancelled stream.
#[tokio::test]
async fn absurd_grpc_timeouts_are_clamped_not_fatal() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("deadline"), b"v", 60))
            .await
            .unwrap();
        let headers = [
            "9223372036854775807S",
            "18446744073709551615H",
            "99999999H",
            "99999999M",
            "99999999S",
            "99999999m",
            "99999999u",
            "99999999n",
            "1n",
            "0S",
            "",
            "S",
            "-5S",
            "5",
            "5x",
            "1.5S",
            "99999999999999999999999999999999S",
        ];
        for h in headers {
            let mut req = tonic::Request::new(load_req(global("deadline")));
            req.metadata_mut()
                .insert("grpc-timeout", h.parse().unwrap());
            let res = tokio::time::timeout(Duration::from_secs(10), c.load(req))
                .await
                .unwrap_or_else(|_| panic!("grpc-timeout {h:?}: no answer within 10 s"));
            match res {
                Ok(r) => assert_eq!(
                    r.into_inner().value.to_vec(),
                    b"v".to_vec(),
                    "grpc-timeout {h:?}"
                ),
                // A timeout of a nanosecond (or zero) expires first, on the
                // server or already in the client's own timer.
                Err(st) => assert!(
                    matches!(st.code(), Code::DeadlineExceeded | Code::Cancelled)
                        && matches!(h, "1n" | "0S"),
                    "grpc-timeout {h:?}: {st:?}"
                ),
            }
        }
        // The server is still up and serving.
        let mut c = s.client().await;
        assert!(c.load(load_req(global("deadline"))).await.is_ok());
        assert!(s.is_running());
    })
    .await;
}

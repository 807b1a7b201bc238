//! Request ids (`eventstore-request-id` metadata) with real `eventstore
//! serve` processes on 127.0.0.1: a write sent again with the id of one that
//! was applied is answered without being applied again, also when a
//! follower relays it; a write without an id is applied every time; the
//! Rust client sends one with every write.

mod common;

use std::time::Duration;

use common::*;
use eventstore::proto::protob::event_store_client::EventStoreClient;
use tonic::transport::Channel;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);
const HEADER: &str = "eventstore-request-id";

fn with_id<T>(msg: T, id: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(id) = id {
        r.metadata_mut().insert(HEADER, id.parse().unwrap());
    }
    r
}

async fn value(cl: &mut EventStoreClient<Channel>, key: &str) -> Option<Vec<u8>> {
    match cl.load(load_req(global(key))).await {
        Ok(r) => Some(r.into_inner().value.to_vec()),
        Err(s) if s.code() == Code::NotFound => None,
        Err(s) => panic!("load {key}: {s}"),
    }
}

#[tokio::test]
async fn a_replayed_request_id_is_answered_without_applying_again() {
    let c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let follower = c.nodes.iter().find(|n| n.id != leader).unwrap();
        let mut l = c.node(leader).client().await;
        let mut f = follower.client().await;

        // Save: the first attempt (relayed by a follower), another client's
        // overwrite, then the first attempt again (a retry).
        let first = save_req(global("k"), b"first", 60);
        f.save(with_id(first.clone(), Some("writer-a:1")))
            .await
            .unwrap();
        l.save(with_id(
            save_req(global("k"), b"second", 60),
            Some("writer-b:1"),
        ))
        .await
        .unwrap();
        f.save(with_id(first.clone(), Some("writer-a:1")))
            .await
            .unwrap();
        l.save(with_id(first.clone(), Some("writer-a:1")))
            .await
            .unwrap();
        assert_eq!(
            value(&mut l, "k").await.as_deref(),
            Some(&b"second"[..]),
            "a replayed Save brought back an overwritten value"
        );

        // Delete: applied once, another client saves again, the Delete is
        // replayed.
        l.save(with_id(save_req(global("d"), b"a", 60), Some("writer-a:2")))
            .await
            .unwrap();
        f.delete(with_id(delete_req(global("d")), Some("writer-a:3")))
            .await
            .unwrap();
        l.save(with_id(save_req(global("d"), b"b", 60), Some("writer-b:2")))
            .await
            .unwrap();
        f.delete(with_id(delete_req(global("d")), Some("writer-a:3")))
            .await
            .unwrap();
        assert_eq!(
            value(&mut l, "d").await.as_deref(),
            Some(&b"b"[..]),
            "a replayed Delete removed another client's acknowledged Save"
        );

        // Without an id a write is applied each time it arrives.
        f.save(with_id(first.clone(), None)).await.unwrap();
        assert_eq!(value(&mut l, "k").await.as_deref(), Some(&b"first"[..]));
    })
    .await;
}

#[tokio::test]
async fn a_malformed_request_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    bounded(LIMIT, async {
        let mut cl = s.client().await;
        let long = "x".repeat(200);
        for bad in ["", long.as_str()] {
            let st = cl
                .save(with_id(save_req(global("k"), b"v", 60), Some(bad)))
                .await
                .unwrap_err();
            assert_eq!(st.code(), Code::InvalidArgument, "{bad:?}: {st}");
            assert!(st.message().contains(HEADER), "{st}");
        }
        assert_eq!(value(&mut cl, "k").await, None);
    })
    .await;
}

/// The Rust client (and so `eventstore client`) sends a request id with
/// every write: a second client given the same client id reuses the first
/// one's ids, and its first Save is taken for a retry and not applied.
#[tokio::test]
async fn the_rust_client_sends_a_request_id_with_every_write() {
    use eventstore::client::Client;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    bounded(LIMIT, async {
        let timeout = Duration::from_secs(5);
        let a = Client::connect(&s.addr(), timeout)
            .unwrap()
            .with_client_id("fixed")
            .unwrap();
        let b = Client::connect(&s.addr(), timeout).unwrap();
        assert_ne!(b.client_id(), "fixed");
        a.global()
            .save_value("k", b"from-a".to_vec(), 60)
            .await
            .unwrap();
        b.global()
            .save_value("k", b"from-b".to_vec(), 60)
            .await
            .unwrap();
        // Same client id, same first sequence number: "fixed-1" again.
        let again = Client::connect(&s.addr(), timeout)
            .unwrap()
            .with_client_id("fixed")
            .unwrap();
        again
            .global()
            .save_value("k", b"from-a-again".to_vec(), 60)
            .await
            .unwrap();
        assert_eq!(b.global().load_value("k").await.unwrap(), b"from-b");
        // Its next write has a new id and is applied.
        again.global().delete_value("k").await.unwrap();
        assert!(matches!(
            b.global().load_value("k").await,
            Err(eventstore::client::Error::NotFound(_))
        ));
    })
    .await;
}

//! Bad input the gRPC client API cannot refuse through a well-behaved
//! client: request bodies that are not valid protobuf (invalid UTF-8 in a
//! string field, truncated or garbage bytes), broken gRPC framing, a wrong
//! content type, plain HTTP/1.1 on the client port, a request whose
//! deadline has already passed and a message far over the size limit.
//! Each request is sent raw, over HTTP/2 (the `h2` crate), so nothing on
//! the client side fixes or refuses it first. After every refusal the node
//! must still serve, and nothing may have been written.
//!
//! The table of every bad input and its answer is in README.md, *Errors*.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);

async fn server(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), extra);
    s.wait_ready(Duration::from_secs(30)).await;
    (dir, s)
}

/// What a raw call got back.
#[derive(Debug)]
struct Answer {
    /// The HTTP status.
    http: u16,
    /// `grpc-status`, from the headers (trailers-only answer) or trailers.
    code: Option<Code>,
    /// `grpc-message`, percent-decoded.
    message: String,
}

/// A gRPC message frame: uncompressed flag, big-endian length, bytes.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs `body` (already framed, or not) to `path` over a new HTTP/2
/// connection, with `content_type` and the extra `headers`.
async fn raw_call(
    addr: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    send.send_data(Bytes::from(body), true).unwrap();
    let resp = resp.await.unwrap();
    let http = resp.status().as_u16();
    let (parts, mut recv) = resp.into_parts();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let trailers = recv.trailers().await.unwrap().unwrap_or_default();
    let get = |k: &str| {
        parts
            .headers
            .get(k)
            .or_else(|| trailers.get(k))
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        http,
        code: get("grpc-status").map(|c| Code::from_i32(c.parse().unwrap())),
        message: percent_decode(&get("grpc-message").unwrap_or_default()),
    }
}

/// A grpc call of `method` (`Save`, `Load`, `Delete`) with `msg` as its
/// unframed body.
async fn call(s: &Server, method: &str, msg: &[u8]) -> Answer {
    raw_call(
        &s.addr(),
        &format!("/protob.EventStore/{method}"),
        "application/grpc",
        &[],
        frame(msg),
    )
    .await
}

/// Protobuf by hand: a length-delimited field.
fn field(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut f = varint(u64::from(tag << 3 | 2));
    f.extend(varint(data.len() as u64));
    f.extend_from_slice(data);
    f
}

/// Protobuf by hand: a varint field.
fn number(tag: u32, v: u64) -> Vec<u8> {
    let mut f = varint(u64::from(tag << 3));
    f.extend(varint(v));
    f
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A `LocationType` from raw parts, so any of them can be invalid UTF-8.
fn raw_location(scope: u64, bridge: &[u8], instance: &[u8], key: &[u8]) -> Vec<u8> {
    let mut sc = number(1, scope);
    if !bridge.is_empty() {
        sc.extend(field(2, bridge));
    }
    if !instance.is_empty() {
        sc.extend(field(3, instance));
    }
    let mut l = field(1, &sc);
    l.extend(field(2, key));
    l
}

/// The body of a Save, Load or Delete of `location` (Save: ttl 60, value "v").
fn raw_request(method: &str, location: &[u8]) -> Vec<u8> {
    let mut m = field(1, location);
    if method == "Save" {
        m.extend(number(2, 60));
        m.extend(field(3, b"v"));
    }
    m
}

/// The node still serves (a Save and a Load of a fresh key work), and
/// holds `keys` values: none of the refused requests wrote anything.
async fn still_serves_and_holds(s: &Server, keys: u64) {
    let status = s.status().await.unwrap();
    assert_eq!(
        status.keys, keys,
        "a refused request was written: {status:?}"
    );
    let mut c = s.client().await;
    let probe = global(&format!("probe-{keys}"));
    c.save(save_req(probe.clone(), b"ok", 60)).await.unwrap();
    let v = c.load(load_req(probe)).await.unwrap().into_inner().value;
    assert_eq!(&v[..], b"ok");
}

const METHODS: [&str; 3] = ["Save", "Load", "Delete"];

#[tokio::test]
async fn invalid_utf8_in_a_key_or_name_is_invalid_argument() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let bad: &[u8] = b"k\xff\xfe";
        let cases: [(&str, Vec<u8>); 4] = [
            ("key", raw_location(2, b"", b"", bad)),
            ("bridge", raw_location(1, bad, b"", b"k")),
            ("instance", raw_location(0, b"b", bad, b"k")),
            ("instance's bridge", raw_location(0, bad, b"i", b"k")),
        ];
        for (what, location) in &cases {
            for method in METHODS {
                let a = call(&s, method, &raw_request(method, location)).await;
                assert_eq!(a.http, 200, "{what}: {method}: {a:?}");
                assert_eq!(
                    a.code,
                    Some(Code::InvalidArgument),
                    "{what}: {method}: {a:?}"
                );
                assert!(
                    a.message.contains("UTF-8") && a.message.contains("not valid protobuf"),
                    "{what}: {method}: {a:?}"
                );
            }
        }
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

#[tokio::test]
async fn truncated_or_garbage_protobuf_is_invalid_argument() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let good = raw_request("Save", &raw_location(2, b"", b"", b"k"));
        // The well-formed request is accepted (and stored: 1 key).
        let a = call(&s, "Save", &good).await;
        assert_eq!(a.code, Some(Code::Ok), "{a:?}");
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 2].to_vec()),
            ("garbage", vec![0xff; 16]),
            ("endless varint", vec![0x80; 12]),
            ("length past the end", vec![0x0a, 0x7f, 0x0a]),
            ("field number zero", vec![0x00, 0x01]),
            ("group wire type", vec![0x0b, 0x0c]),
            ("location as a varint", vec![0x08, 0x01]),
        ];
        for (what, body) in &bodies {
            for method in METHODS {
                let a = call(&s, method, body).await;
                assert_eq!(a.http, 200, "{what}: {method}: {a:?}");
                assert_eq!(
                    a.code,
                    Some(Code::InvalidArgument),
                    "{what}: {method}: {a:?}"
                );
                assert!(
                    a.message.contains("not valid protobuf"),
                    "{what}: {method}: {a:?}"
                );
            }
        }
        still_serves_and_holds(&s, 1).await;
    })
    .await;
}

/// Broken gRPC framing (below protobuf) is refused by the gRPC layer with
/// INTERNAL, as the gRPC protocol prescribes; the node keeps serving.
#[tokio::test]
async fn broken_grpc_framing_is_refused() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let good = raw_request("Save", &raw_location(2, b"", b"", b"k"));
        let mut compressed = frame(&good);
        compressed[0] = 1;
        let mut bad_flag = frame(&good);
        bad_flag[0] = 7;
        let mut short = frame(&good);
        short.truncate(short.len() - 3);
        let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
            ("frame cut short", short, Code::Internal, "Unexpected EOF"),
            (
                "half a frame header",
                vec![0, 0, 0],
                Code::Internal,
                "Unexpected EOF",
            ),
            (
                "compressed flag without grpc-encoding",
                compressed,
                Code::Internal,
                "compressed-flag",
            ),
            (
                "unknown frame flag",
                bad_flag,
                Code::Internal,
                "compression flag",
            ),
        ];
        for (what, body, code, fragment) in cases {
            let a = raw_call(
                &s.addr(),
                "/protob.EventStore/Save",
                "application/grpc",
                &[],
                body,
            )
            .await;
            assert_eq!(a.code, Some(code), "{what}: {a:?}");
            assert!(a.message.contains(fragment), "{what}: {a:?}");
        }
        // No message at all (an empty body) is refused by the gRPC layer
        // too; an empty message (a frame of length 0) is a request without
        // a location.
        let a = raw_call(
            &s.addr(),
            "/protob.EventStore/Save",
            "application/grpc",
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(a.code, Some(Code::Internal), "no message: {a:?}");
        assert!(a.message.contains("Missing request message"), "{a:?}");
        let a = call(&s, "Save", &[]).await;
        assert_eq!(a.code, Some(Code::InvalidArgument), "empty message: {a:?}");
        assert!(a.message.contains("location is required"), "{a:?}");
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_content_type_is_refused() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let body = frame(&raw_request("Save", &raw_location(2, b"", b"", b"k")));
        for ct in [
            "application/json",
            "text/plain",
            "application/grpc-web",
            "application/x-protobuf",
        ] {
            for method in METHODS {
                let path = format!("/protob.EventStore/{method}");
                let a = raw_call(&s.addr(), &path, ct, &[], body.clone()).await;
                assert_eq!(a.http, 415, "{ct}: {method}: {a:?}");
                assert_eq!(a.code, Some(Code::InvalidArgument), "{ct}: {method}: {a:?}");
                assert!(
                    a.message.contains("content-type must be application/grpc")
                        && a.message.contains(ct),
                    "{ct}: {method}: {a:?}"
                );
            }
        }
        // The same request as gRPC, with or without a subtype, is served.
        for ct in ["application/grpc", "application/grpc+proto"] {
            let a = raw_call(&s.addr(), "/protob.EventStore/Load", ct, &[], body.clone()).await;
            assert_eq!(a.code, Some(Code::NotFound), "{ct}: {a:?}");
        }
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

#[tokio::test]
async fn an_http1_request_on_the_client_port_is_closed_and_the_node_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        for request in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "POST /protob.EventStore/Save HTTP/1.1\r\nHost: x\r\nContent-Type: \
             application/grpc\r\nContent-Length: 3\r\n\r\nabc"
                .to_string(),
            "\u{0}\u{1}garbage that is no protocol at all\r\n\r\n".to_string(),
        ] {
            let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
            tcp.write_all(request.as_bytes()).await.unwrap();
            // The node sends its HTTP/2 SETTINGS frame, no HTTP answer, and closes
            // the connection: reading reaches the end within 5 s.
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
                .await
                .unwrap_or_else(|_| panic!("{request:?}: connection still open after 5 s"));
            eprintln!("{request:?}: {read:?}, {} bytes back", got.len());
        }
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

/// A request whose deadline has already passed when the node starts on it
/// (`grpc-timeout` of a nanosecond, or zero) is answered DEADLINE_EXCEEDED
/// and nothing is applied. Sent raw: tonic's client would cancel it itself.
#[tokio::test]
async fn a_request_whose_deadline_has_passed_is_refused_and_not_applied() {
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        c.save(save_req(global("kept"), b"v", 600)).await.unwrap();
        for timeout in ["1n", "0n", "0S", "999u", "0H"] {
            for n in 0..20 {
                let key = format!("late-{timeout}-{n}");
                let save = raw_request("Save", &raw_location(2, b"", b"", key.as_bytes()));
                let delete = raw_request("Delete", &raw_location(2, b"", b"", b"kept"));
                let load = raw_request("Load", &raw_location(2, b"", b"", b"kept"));
                for (method, body) in [("Save", save), ("Delete", delete), ("Load", load)] {
                    let a = raw_call(
                        &s.addr(),
                        &format!("/protob.EventStore/{method}"),
                        "application/grpc",
                        &[("grpc-timeout", timeout)],
                        frame(&body),
                    )
                    .await;
                    assert_eq!(
                        a.code,
                        Some(Code::DeadlineExceeded),
                        "grpc-timeout {timeout}: {method}: {a:?}"
                    );
                    assert!(
                        a.message.contains("nothing was applied"),
                        "grpc-timeout {timeout}: {method}: {a:?}"
                    );
                }
                let st = c.load(load_req(global(&key))).await.unwrap_err();
                assert_eq!(st.code(), Code::NotFound, "{key} was applied");
            }
        }
        assert!(
            c.load(load_req(global("kept"))).await.is_ok(),
            "a late Delete was applied"
        );
        still_serves_and_holds(&s, 1).await;
    })
    .await;
}

/// A message more than 4 MiB over the value limit is refused by the
/// transport before it is read, with OUT_OF_RANGE.
#[tokio::test]
async fn a_message_far_over_the_value_limit_is_out_of_range() {
    let (_d, s) = server(&["--max-value-bytes", "1000"]).await;
    bounded(LIMIT, async {
        let mut c = s.client().await;
        let st = c
            .save(save_req(global("huge"), &vec![7u8; (4 << 20) + 2000], 60))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::OutOfRange, "{st:?}");
        assert!(st.message().contains("message length too large"), "{st:?}");
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

/// Raft messages on the peer port that are meant for another node id, that
/// name an incarnation other than this node's data directory's (a cluster
/// that knew this node before its data was lost), or whose payload is not
/// a Raft message, are refused without touching Raft: the node stays the
/// leader in the same term and keeps serving.
#[tokio::test]
async fn peer_messages_for_another_node_or_incarnation_or_with_garbage_are_refused() {
    use eventstore::proto::peer::raft_peer_client::RaftPeerClient;
    use eventstore::proto::peer::RaftPayload;
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let before = s.status().await.unwrap();
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", s.peer_addr()))
            .unwrap()
            .connect_lazy();
        let mut peer = RaftPeerClient::new(ch);
        let payload = |target, incarnation, bytes: &[u8]| RaftPayload {
            target,
            payload: bytes.to_vec(),
            incarnation,
            ..Default::default()
        };
        let cases = [
            (
                "another node id",
                payload(99, 0, &[0; 8]),
                Code::FailedPrecondition,
                "message for node 99 reached node 0",
            ),
            (
                "another incarnation",
                payload(0, 0x5eed, &[0; 8]),
                Code::FailedPrecondition,
                "its data was lost",
            ),
            (
                "garbage payload",
                payload(0, 0, &[0xff; 16]),
                Code::InvalidArgument,
                "bad payload",
            ),
            (
                "empty payload",
                payload(0, 0, &[]),
                Code::InvalidArgument,
                "bad payload",
            ),
        ];
        for (what, p, code, fragment) in cases {
            for rpc in ["Vote", "PreVote", "AppendEntries"] {
                let res = match rpc {
                    "Vote" => peer.vote(p.clone()).await,
                    "PreVote" => peer.pre_vote(p.clone()).await,
                    _ => peer.append_entries(p.clone()).await,
                };
                let st = res.unwrap_err();
                assert_eq!(st.code(), code, "{what}: {rpc}: {st:?}");
                assert!(st.message().contains(fragment), "{what}: {rpc}: {st:?}");
            }
        }
        let after = s.status().await.unwrap();
        assert_eq!(after.term, before.term, "{after:?}");
        assert_eq!(after.leader_id, Some(0), "{after:?}");
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

/// Peer messages from a node of another cluster (a cluster id other than
/// this node's) are refused with FAILED_PRECONDITION naming both clusters,
/// on every peer service: Raft messages by the id in their envelope,
/// relayed requests and admin calls by the `eventstore-cluster-id`
/// metadata. A call without an id (the operator's `cluster` commands) is
/// served, every answer names this node's cluster, a malformed id is
/// INVALID_ARGUMENT, and nothing reaches Raft or the keyspace.
#[tokio::test]
async fn peer_messages_from_another_cluster_are_refused() {
    use eventstore::proto::peer::admin_client::AdminClient;
    use eventstore::proto::peer::forward_client::ForwardClient;
    use eventstore::proto::peer::raft_peer_client::RaftPeerClient;
    use eventstore::proto::peer::{RaftPayload, SnapshotChunk, StatusRequest};
    let (_d, s) = server(&[]).await;
    bounded(LIMIT, async {
        let before = s.status().await.unwrap();
        let ours = before.cluster_id.clone();
        assert_eq!(ours.len(), 16, "no cluster id: {before:?}");
        // Another cluster's id: this node's with its last digit changed.
        let mut theirs = ours.clone();
        let last = theirs.pop().unwrap();
        theirs.push(if last == '0' { '1' } else { '0' });
        let theirs_n = u64::from_str_radix(&theirs, 16).unwrap();
        let expected = "node 7 at 127.0.0.1:";
        let names_both = |st: &tonic::Status| {
            st.code() == Code::FailedPrecondition
                && st.message().starts_with(expected)
                && st.message().contains(&format!(
                    "belongs to cluster {theirs}, this node (node 0) to cluster {ours}: a reused \
                     address or a data directory from another cluster?"
                ))
                && st
                    .metadata()
                    .get("eventstore-cluster-id")
                    .map(|v| v.to_str().unwrap())
                    == Some(ours.as_str())
        };
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", s.peer_addr()))
            .unwrap()
            .connect_lazy();

        let mut peer = RaftPeerClient::new(ch.clone());
        // A well-formed vote request, so that only the cluster id is wrong.
        let vote = eventstore::proto::peer::RaftPayload {
            target: 0,
            payload: vec![0; 8],
            cluster_id: theirs_n,
            sender: 7,
            ..Default::default()
        };
        for rpc in ["Vote", "PreVote", "AppendEntries", "TransferLeader"] {
            let p: RaftPayload = vote.clone();
            let res = match rpc {
                "Vote" => peer.vote(p).await,
                "PreVote" => peer.pre_vote(p).await,
                "AppendEntries" => peer.append_entries(p).await,
                _ => peer.transfer_leader(p).await,
            };
            let st = res.unwrap_err();
            assert!(names_both(&st), "{rpc}: {st:?}");
        }
        let chunk = SnapshotChunk {
            target: 0,
            cluster_id: theirs_n,
            sender: 7,
            header: vec![0; 8],
            data: vec![1; 64],
            ..Default::default()
        };
        let st = peer
            .install_snapshot(tokio_stream::iter(vec![chunk]))
            .await
            .unwrap_err();
        assert!(names_both(&st), "InstallSnapshot: {st:?}");

        let with_id = |id: &str| {
            let mut r = tonic::Request::new(load_req(global("k")));
            r.metadata_mut()
                .insert("eventstore-cluster-id", id.parse().unwrap());
            r.metadata_mut()
                .insert("eventstore-node-id", "7".parse().unwrap());
            r
        };
        let st = ForwardClient::new(ch.clone())
            .load(with_id(&theirs))
            .await
            .unwrap_err();
        assert!(names_both(&st), "Forward: {st:?}");
        let st = ForwardClient::new(ch.clone())
            .load(with_id("not-hex"))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        assert!(
            st.message()
                .contains("eventstore-cluster-id must be a cluster id"),
            "{st:?}"
        );
        let mut status = tonic::Request::new(StatusRequest {});
        status
            .metadata_mut()
            .insert("eventstore-cluster-id", theirs.parse().unwrap());
        status
            .metadata_mut()
            .insert("eventstore-node-id", "7".parse().unwrap());
        let st = AdminClient::new(ch.clone())
            .status(status)
            .await
            .unwrap_err();
        assert!(names_both(&st), "Admin: {st:?}");

        // Its own cluster's id, and no id at all (an operator): served, and
        // the answer names this node's cluster.
        let own = ForwardClient::new(ch.clone())
            .load(with_id(&ours))
            .await
            .unwrap_err();
        assert_eq!(own.code(), Code::NotFound, "{own:?}");
        let answer = AdminClient::new(ch.clone())
            .status(StatusRequest {})
            .await
            .unwrap();
        assert_eq!(
            answer.metadata().get("eventstore-cluster-id").unwrap(),
            ours.as_str()
        );

        let after = s.status().await.unwrap();
        assert_eq!(after.term, before.term, "{after:?}");
        assert_eq!(after.leader_id, Some(0), "{after:?}");
        assert_eq!(after.cluster_id, ours, "{after:?}");
        still_serves_and_holds(&s, 0).await;
    })
    .await;
}

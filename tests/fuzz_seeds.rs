//! The fuzz targets' seed corpus (`cluster/fuzz/corpus/TARGET/seed-*`) is
//! made of real encodings: requests, log entries, peer messages and a
//! snapshot file as the node writes them. This test builds every seed with
//! the product's own encoders, checks that each one is accepted by the code
//! its target feeds it to, and fails if a committed seed differs from what
//! the encoders make now (a format changed: the seeds would no longer be
//! valid inputs). To write the seeds again:
//!
//! ```sh
//! EVENTSTORE_WRITE_FUZZ_SEEDS=1 cargo test --release --test fuzz_seeds
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use eventstore::api::request::Op;
use eventstore::config::{DefaultTtls, Limits};
use eventstore::proto::peer::{RaftPayload, SnapshotChunk};
use eventstore::proto::protob::{
    DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType,
};
use eventstore::raft::network::decode_snapshot_header;
use eventstore::raft::types::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use eventstore::store::snapshot::{bincode_decode, bincode_encode, verify, SnapshotWriter};
use eventstore::store::{Command, Location, Scope, Stamp};
use openraft::entry::RaftEntry;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Membership};
use prost::Message;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/fuzz/corpus")
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn wire(choice: ScopeChoice, bridge: &str, instance: &str, key: &str) -> LocationType {
    LocationType {
        scope: Some(ScopeType {
            r#type: choice as i32,
            bridge: bridge.into(),
            instance: instance.into(),
        }),
        key: key.into(),
    }
}

fn membership() -> Membership<u64, BasicNode> {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| (i, BasicNode::new(format!("10.0.0.{i}:9090"))))
        .collect();
    Membership::new(vec![voters], nodes).expect("a valid membership")
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 7)),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
    }
}

fn save(key: &Location, value: &[u8], request: Option<&str>) -> Command {
    Command::Save {
        key: key.encode(),
        value: value.to_vec(),
        ttl_ms: 60_000,
        stamp: Stamp {
            wall_ms: 1_700_000_000_000,
            timeline_ms: Some(1_700_000_000_200),
            node: 1,
        },
        request: request.map(str::to_string),
    }
}

fn locations() -> [Location; 3] {
    [
        Location::new(Scope::Global, "replay-id"),
        Location::new(
            Scope::Bridge {
                bridge: "orders".into(),
            },
            "seen",
        ),
        Location::new(
            Scope::Instance {
                bridge: "orders".into(),
                instance: "run-7".into(),
            },
            "total",
        ),
    ]
}

fn tagged(tag: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(body);
    v
}

fn payload<T: serde::Serialize>(tag: u8, msg: &T) -> Vec<u8> {
    let p = RaftPayload {
        target: 2,
        payload: bincode_encode(msg).unwrap(),
        incarnation: 0x5eed,
        cluster_id: 0,
        sender: 0,
    };
    tagged(tag, p.encode_to_vec())
}

/// Every seed: (target, name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let [global, bridge, instance] = locations();

    // request: the first byte chooses Save (0), Load (1), Delete (2), and
    // small limits when its top bit is set.
    let save_req = |loc: LocationType, ttl: i32, value: &[u8]| SaveRequest {
        location: Some(loc),
        ttl,
        value: value.to_vec().into(),
    };
    out.push((
        "request",
        "save-global",
        tagged(
            0,
            save_req(wire(ScopeChoice::Global, "", "", "replay-id"), 60, b"42").encode_to_vec(),
        ),
    ));
    out.push((
        "request",
        "save-instance-default-ttl",
        tagged(
            0,
            save_req(
                wire(ScopeChoice::Instance, "orders", "run-7", "total"),
                0,
                &[0, 1, 255],
            )
            .encode_to_vec(),
        ),
    ));
    out.push((
        "request",
        "save-bridge-small-limits",
        tagged(
            0x81,
            save_req(wire(ScopeChoice::Bridge, "ord", "", "seen"), 5, b"1").encode_to_vec(),
        ),
    ));
    out.push((
        "request",
        "load-bridge",
        tagged(
            1,
            LoadRequest {
                location: Some(wire(ScopeChoice::Bridge, "orders", "", "seen")),
            }
            .encode_to_vec(),
        ),
    ));
    out.push((
        "request",
        "delete-instance",
        tagged(
            2,
            DeleteRequest {
                location: Some(wire(ScopeChoice::Instance, "orders", "run-7", "total")),
            }
            .encode_to_vec(),
        ),
    ));

    // storage_key: any bytes are an input; these hold encoded locations.
    for (name, loc) in [
        ("global", &global),
        ("bridge", &bridge),
        ("instance", &instance),
    ] {
        out.push(("storage_key", name, loc.encode()));
    }

    // log_entry: the first byte chooses Entry (0), Command (1), Vote (2),
    // LogId (3), the identity pair (4).
    let entries = vec![
        Entry::new_blank(log_id(2, 5)),
        Entry::new_membership(log_id(2, 6), membership()),
        Entry::new_normal(log_id(2, 7), save(&global, b"42", Some("c0ffee-1"))),
    ];
    out.push((
        "log_entry",
        "entry-blank",
        tagged(0, bincode_encode(&entries[0]).unwrap()),
    ));
    out.push((
        "log_entry",
        "entry-membership",
        tagged(0, bincode_encode(&entries[1]).unwrap()),
    ));
    out.push((
        "log_entry",
        "entry-save",
        tagged(0, bincode_encode(&entries[2]).unwrap()),
    ));
    out.push((
        "log_entry",
        "command-delete",
        tagged(
            1,
            bincode_encode(&Command::Delete {
                key: bridge.encode(),
                stamp: Stamp::wall(1_700_000_000_000),
                request: None,
            })
            .unwrap(),
        ),
    ));
    out.push((
        "log_entry",
        "command-purge",
        tagged(
            1,
            bincode_encode(&Command::Purge {
                stamp: Stamp::wall(1_700_000_000_000),
                limit: 1000,
            })
            .unwrap(),
        ),
    ));
    out.push((
        "log_entry",
        "vote",
        tagged(2, bincode_encode(&Vote::new_committed(2, 1)).unwrap()),
    ));
    out.push((
        "log_entry",
        "log-id",
        tagged(3, bincode_encode(&log_id(2, 7)).unwrap()),
    ));
    out.push((
        "log_entry",
        "identity",
        tagged(4, bincode_encode(&(1u64, 0x5eedu64)).unwrap()),
    ));

    // peer_message: the first byte chooses the message (see the target).
    let vote = Vote::new_committed(2, 1);
    out.push((
        "peer_message",
        "vote-request",
        payload(
            0,
            &VoteRequest::<TypeConfig>::new(Vote::new(3, 2), Some(log_id(2, 7))),
        ),
    ));
    out.push((
        "peer_message",
        "append-entries",
        payload(
            1,
            &AppendEntriesRequest::<TypeConfig> {
                vote,
                prev_log_id: Some(log_id(2, 4)),
                entries,
                leader_commit: Some(log_id(2, 6)),
            },
        ),
    ));
    out.push((
        "peer_message",
        "transfer-leader",
        payload(
            2,
            &TransferLeaderRequest::<TypeConfig>::new(vote, 2, Some(log_id(2, 7))),
        ),
    ));
    out.push((
        "peer_message",
        "vote-response",
        payload(
            3,
            &VoteResponse::<TypeConfig>::new(vote, Some(log_id(2, 7)), true),
        ),
    ));
    out.push((
        "peer_message",
        "append-entries-response",
        payload(4, &AppendEntriesResponse::<TypeConfig>::Success),
    ));
    out.push((
        "peer_message",
        "snapshot-response",
        payload(5, &SnapshotResponse::<TypeConfig>::new(vote)),
    ));
    out.push((
        "peer_message",
        "transfer-leader-response",
        payload(6, &TransferLeaderResponse::<TypeConfig>::Ok(())),
    ));
    out.push((
        "peer_message",
        "snapshot-chunk",
        tagged(
            7,
            SnapshotChunk {
                target: 2,
                incarnation: 0x5eed,
                cluster_id: 0,
                sender: 0,
                header: bincode_encode(&(vote, snapshot_meta())).unwrap(),
                data: b"ESSNAP02".to_vec(),
            }
            .encode_to_vec(),
        ),
    ));

    // snapshot_file: the first byte's low bit says whether the target
    // appends the checksum itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.snap");
    let mut w = SnapshotWriter::create(&path, &snapshot_meta(), 1_700_000_000_200).unwrap();
    for (i, loc) in locations().iter().enumerate() {
        let mut stored = (1_700_000_060_000u64 + i as u64).to_be_bytes().to_vec();
        stored.extend_from_slice(b"value");
        w.record(&loc.encode(), &stored).unwrap();
    }
    w.finish().unwrap();
    let file = std::fs::read(&path).unwrap();
    out.push(("snapshot_file", "whole", tagged(0, file.clone())));
    out.push((
        "snapshot_file",
        "checksum-appended",
        tagged(1, file[..file.len() - 32].to_vec()),
    ));

    // apply_model: any bytes are a command sequence; a few to start from.
    out.push(("apply_model", "a", (0u8..64).collect()));
    out.push(("apply_model", "b", (0u8..64).rev().collect()));
    out.push((
        "apply_model",
        "c",
        b"save-save-purge-advance-load".repeat(3),
    ));
    out
}

/// Each seed is accepted by what its target feeds it to.
fn check_accepted(target: &str, name: &str, bytes: &[u8]) {
    let (&tag, body) = bytes.split_first().unwrap_or((&0, &[]));
    let limits = if tag & 0x80 == 0 {
        Limits::default()
    } else {
        Limits {
            max_key_bytes: 8,
            max_bridge_bytes: 4,
            max_instance_bytes: 4,
            max_value_bytes: 16,
        }
    };
    let ok = match target {
        "request" => match tag % 3 {
            0 => Op::parse_save(
                &SaveRequest::decode(body).unwrap(),
                &limits,
                &DefaultTtls::default(),
            )
            .is_ok(),
            1 => Op::parse_load(&LoadRequest::decode(body).unwrap(), &limits).is_ok(),
            _ => Op::parse_delete(&DeleteRequest::decode(body).unwrap(), &limits).is_ok(),
        },
        "storage_key" => Location::decode(bytes).is_ok(),
        "log_entry" => match tag {
            0 => bincode_decode::<Entry>(body).is_ok(),
            1 => bincode_decode::<Command>(body).is_ok(),
            2 => bincode_decode::<Vote>(body).is_ok(),
            3 => bincode_decode::<LogId>(body).is_ok(),
            _ => bincode_decode::<(u64, u64)>(body).is_ok(),
        },
        "peer_message" if tag == 7 => {
            decode_snapshot_header(&SnapshotChunk::decode(body).unwrap().header).is_ok()
        }
        "peer_message" => {
            let p = RaftPayload::decode(body).unwrap().payload;
            match tag {
                0 => bincode_decode::<VoteRequest<TypeConfig>>(&p).is_ok(),
                1 => bincode_decode::<AppendEntriesRequest<TypeConfig>>(&p).is_ok(),
                2 => bincode_decode::<TransferLeaderRequest<TypeConfig>>(&p).is_ok(),
                3 => bincode_decode::<VoteResponse<TypeConfig>>(&p).is_ok(),
                4 => bincode_decode::<AppendEntriesResponse<TypeConfig>>(&p).is_ok(),
                5 => bincode_decode::<SnapshotResponse<TypeConfig>>(&p).is_ok(),
                _ => bincode_decode::<TransferLeaderResponse<TypeConfig>>(&p).is_ok(),
            }
        }
        "snapshot_file" => {
            let mut file = body.to_vec();
            if tag & 1 == 1 {
                use sha2::Digest;
                file.extend_from_slice(&sha2::Sha256::digest(body));
            }
            verify(&mut std::io::Cursor::new(file)).is_ok()
        }
        _ => true,
    };
    assert!(
        ok,
        "seed {target}/{name} is not accepted by its target's decoder"
    );
}

#[test]
fn seed_corpus_is_made_of_current_encodings() {
    let write = std::env::var_os("EVENTSTORE_WRITE_FUZZ_SEEDS").is_some();
    let dir = corpus_dir();
    let mut total = 0;
    for (target, name, bytes) in seeds() {
        check_accepted(target, name, &bytes);
        total += bytes.len();
        let path = dir.join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the seeds with EVENTSTORE_WRITE_FUZZ_SEEDS=1 cargo test --release \
                 --test fuzz_seeds",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{} differs from what the encoders make now: an encoding changed. Write the seeds \
             again with EVENTSTORE_WRITE_FUZZ_SEEDS=1 cargo test --release --test fuzz_seeds",
            path.display()
        );
    }
    assert!(total < 200 * 1024, "the seed corpus is {total} bytes");
}

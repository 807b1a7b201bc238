//! Inputs the fuzz targets (`cluster/fuzz`) found that crashed a decoder,
//! kept as regression tests, byte for byte as the fuzzer wrote them (the
//! first byte is the target's choice of decoder).
//!
//! All three are bincode records that declare a string far longer than
//! the record itself: the decoder allocated the declared length before
//! reading it (about 4 GiB from 35 bytes of a log entry, 2.9 GB from a
//! snapshot file's header; more than `isize::MAX` from a snapshot chunk a
//! peer sends, a panic). On a machine without that much memory the
//! allocation aborts the node; every one must be an error instead.
//!
//! Each decode runs again in a child process (this test binary, running
//! that one test) whose address space is limited to 1 GiB, so an
//! allocation of the size the input claims fails there and the test fails
//! with it.

use std::io::Cursor;
use std::process::Command;

use eventstore::proto::peer::SnapshotChunk;
use eventstore::raft::network::decode_snapshot_header;
use eventstore::raft::types::{Entry, LogId, TypeConfig, Vote};
use eventstore::store::snapshot::{bincode_decode, bincode_encode, verify};
use eventstore::store::{Command as StoreCommand, Stamp};
use nix::sys::resource::{setrlimit, Resource};
use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use openraft::{BasicNode, Membership};
use prost::Message;

/// Set in the child process that runs a test under the memory limit.
const CHILD_ENV: &str = "EVENTSTORE_FUZZ_REGRESSION_CHILD";
/// The child's address-space limit.
const CHILD_LIMIT_BYTES: u64 = 1 << 30;

/// Runs `check` in this process, and runs the test named `test` again in a
/// child process with [`CHILD_LIMIT_BYTES`] of address space, which must
/// pass too.
fn with_bounded_memory(test: &str, check: impl FnOnce()) {
    if std::env::var_os(CHILD_ENV).is_some() {
        setrlimit(Resource::RLIMIT_AS, CHILD_LIMIT_BYTES, CHILD_LIMIT_BYTES)
            .expect("limit the address space");
        check();
        return;
    }
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--test-threads", "1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed with {} GiB of address space ({}):\n{stdout}\n{stderr}",
        CHILD_LIMIT_BYTES >> 30,
        out.status
    );
    check();
}

/// `fuzz_targets/log_entry.rs`, artifact oom-5e4641011650845bb21b7a926bac57263d7362cf:
/// a log entry (first byte 0x41: `Entry`) of 34 bytes whose membership
/// names a node address of 4,278,190,638 bytes.
const LOG_ENTRY_OOM: &[u8] = &[
    0x41, 0x01, 0x00, 0x01, 0x02, 0x00, 0x40, 0x00, 0x00, 0x78, 0x01, 0x00, 0x2e, 0x02, 0x00, 0x01,
    0x02, 0xfc, 0x2e, 0x02, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00,
    0x00, 0x00, 0x00,
];

/// `fuzz_targets/peer_message.rs`, artifact crash-5e6bb01a19da25b5c66ed4e195f594b8149591a4:
/// a `SnapshotChunk` (first byte 0xff) whose header declares a string
/// longer than `isize::MAX` ("capacity overflow").
const SNAPSHOT_CHUNK_CRASH: &[u8] = &[
    0xff, 0x12, 0x12, 0x12, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x00, 0xfc, 0x40, 0x00, 0x00,
    0xfe, 0x03, 0xb8, 0xff, 0xaf,
];

/// `fuzz_targets/snapshot_file.rs`, artifact oom-35befac3de752dfca48f8bd79b2c1131d1cefca6:
/// a snapshot file (first byte 0: no checksum appended) whose 32-byte
/// metadata declares a node address of about 2.9 GB.
const SNAPSHOT_FILE_OOM: &[u8] = &[
    0x00, 0x45, 0x53, 0x53, 0x4e, 0x41, 0x50, 0x30, 0x32, 0x00, 0x00, 0x00, 0x20, 0x01, 0x41, 0x00,
    0x03, 0x00, 0x00, 0x01, 0x20, 0xfc, 0xff, 0xff, 0xff, 0xac, 0x00, 0x41, 0x50, 0x30, 0xa3, 0x45,
    0x53, 0x53, 0x00, 0x01, 0x20, 0x01, 0x00, 0x00, 0x00, 0xed, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x75, 0xff,
    0xff, 0xff, 0xff, 0xff, 0x1e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0x00, 0x00, 0x01, 0x2a,
];

#[test]
fn a_log_entry_declaring_a_4_gib_string_is_an_error() {
    with_bounded_memory("a_log_entry_declaring_a_4_gib_string_is_an_error", || {
        let err = bincode_decode::<Entry>(&LOG_ENTRY_OOM[1..]).expect_err("decoded");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert_eq!(
            err.to_string(),
            "the 34-byte record declares more data than it holds"
        );
    });
}

#[test]
fn a_snapshot_chunk_header_declaring_an_impossible_length_is_an_error() {
    with_bounded_memory(
        "a_snapshot_chunk_header_declaring_an_impossible_length_is_an_error",
        || {
            let chunk = SnapshotChunk::decode(&SNAPSHOT_CHUNK_CRASH[1..]).expect("the envelope");
            let err = decode_snapshot_header(&chunk.header).expect_err("decoded");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        },
    );
}

#[test]
fn a_snapshot_file_whose_header_declares_a_huge_string_is_refused() {
    with_bounded_memory(
        "a_snapshot_file_whose_header_declares_a_huge_string_is_refused",
        || {
            let err =
                verify(&mut Cursor::new(SNAPSHOT_FILE_OOM[1..].to_vec())).expect_err("verified");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        },
    );
}

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(3, 1, index)
}

/// The bound on what a record may claim must not refuse real records: a
/// Raft append of 32 entries, each a 1 MiB value (the default limit) with
/// a 128-byte request id and the largest numbers, and a membership entry
/// with long node addresses, decodes whole, and so does each entry; so
/// does an append of 5,000 entries made of small numbers.
#[test]
fn the_largest_real_records_still_decode() {
    let nodes = (1..=5u64)
        .map(|i| {
            (
                i,
                BasicNode::new(format!("{}.example:9090", "n".repeat(200))),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    let voters = nodes
        .keys()
        .copied()
        .collect::<std::collections::BTreeSet<_>>();
    let mut entries = vec![Entry::new_membership(
        log_id(1),
        Membership::new(vec![voters], nodes).expect("a valid membership"),
    )];
    for i in 2..=32u64 {
        entries.push(Entry::new_normal(
            log_id(i),
            StoreCommand::Save {
                key: vec![1, 0, 0, 0, 1, b'k'],
                value: vec![i as u8; 1 << 20],
                ttl_ms: u64::MAX,
                stamp: Stamp {
                    wall_ms: u64::MAX,
                    timeline_ms: Some(u64::MAX),
                    node: u64::MAX,
                },
                request: Some("r".repeat(128)),
            },
        ));
    }
    let one = bincode_encode(&entries[1]).unwrap();
    assert_eq!(bincode_decode::<Entry>(&one).unwrap(), entries[1]);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: None,
        entries,
        leader_commit: Some(log_id(32)),
    };
    let bytes = bincode_encode(&append).unwrap();
    let back: AppendEntriesRequest<TypeConfig> = bincode_decode(&bytes).unwrap();
    assert_eq!(back.entries, append.entries);

    // Small numbers take one byte on the wire and eight in memory: an
    // append of many small entries claims the most per byte it has.
    let small = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: (1..=5000u64)
            .map(|i| {
                Entry::new_normal(
                    openraft::testing::log_id::<TypeConfig>(1, 1, i % 100),
                    StoreCommand::Purge {
                        stamp: Stamp::wall(0),
                        limit: 0,
                    },
                )
            })
            .collect(),
        leader_commit: None,
    };
    let bytes = bincode_encode(&small).unwrap();
    let back: AppendEntriesRequest<TypeConfig> = bincode_decode(&bytes).unwrap();
    assert_eq!(back.entries, small.entries);
}

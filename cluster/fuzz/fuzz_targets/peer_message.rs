//! Fuzz target `peer_message`: arbitrary bytes as a message from another
//! node, decoded as the peer port and the Raft network decode them
//! (`server::peer`, `raft::network`): a protobuf `RaftPayload` whose
//! payload is a bincode openraft request (vote, append-entries,
//! transfer-leader) or answer (vote, append-entries, snapshot,
//! transfer-leader), or a `SnapshotChunk` whose header is the bincode
//! (vote, snapshot metadata) pair.
//!
//! The first byte chooses the message. Nothing may panic or allocate
//! beyond libFuzzer's limits; what decodes must survive a bincode round
//! trip.

#![no_main]

use eventstore::proto::peer::{RaftPayload, SnapshotChunk};
use eventstore::raft::network::decode_snapshot_header;
use eventstore::raft::types::TypeConfig;
use eventstore::store::snapshot::{bincode_decode, bincode_encode};
use libfuzzer_sys::fuzz_target;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use prost::Message;

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(payload: &[u8]) {
    let Ok(value) = bincode_decode::<T>(payload) else {
        return;
    };
    let once = bincode_encode(&value).expect("a decoded message encodes");
    let again: T = bincode_decode(&once).expect("a re-encoded message decodes");
    let twice = bincode_encode(&again).expect("a decoded message encodes");
    assert_eq!(once, twice, "a message changed on its round trip");
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    if choice % 8 == 7 {
        let Ok(chunk) = SnapshotChunk::decode(body) else {
            return;
        };
        if let Ok(header) = decode_snapshot_header(&chunk.header) {
            let once = bincode_encode(&header).expect("a decoded header encodes");
            let again = decode_snapshot_header(&once).expect("a re-encoded header decodes");
            assert_eq!(header, again, "a snapshot header changed on its round trip");
        }
        return;
    }
    let Ok(msg) = RaftPayload::decode(body) else {
        return;
    };
    let p = msg.payload.as_slice();
    match choice % 8 {
        0 => round_trip::<VoteRequest<TypeConfig>>(p),
        1 => round_trip::<AppendEntriesRequest<TypeConfig>>(p),
        2 => round_trip::<TransferLeaderRequest<TypeConfig>>(p),
        3 => round_trip::<VoteResponse<TypeConfig>>(p),
        4 => round_trip::<AppendEntriesResponse<TypeConfig>>(p),
        5 => round_trip::<SnapshotResponse<TypeConfig>>(p),
        _ => round_trip::<TransferLeaderResponse<TypeConfig>>(p),
    }
});

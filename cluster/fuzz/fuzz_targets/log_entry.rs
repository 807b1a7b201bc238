//! Fuzz target `log_entry`: arbitrary bytes as a record of the Raft log
//! store's column families, decoded as the log store reads them
//! (`raft::log_store`: bincode of an openraft `Entry` over EventStore's
//! `Command`s, and of the vote, purge point, committed id and identity in
//! `log_meta`).
//!
//! The first byte chooses the record type. A record that does not decode
//! must be an error: no panic and no allocation beyond libFuzzer's limits
//! (scripts/fuzz.sh runs with `-rss_limit_mb=2048 -malloc_limit_mb=512`). A
//! record that decodes must survive a round trip: encoded again and
//! decoded, it encodes to the same bytes.

#![no_main]

use eventstore::raft::types::{Entry, LogId, Vote};
use eventstore::store::snapshot::{bincode_decode, bincode_encode};
use eventstore::store::Command;
use libfuzzer_sys::fuzz_target;

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
    let Ok(value) = bincode_decode::<T>(data) else {
        return;
    };
    let once = bincode_encode(&value).expect("a decoded record encodes");
    let again: T = bincode_decode(&once).expect("a re-encoded record decodes");
    let twice = bincode_encode(&again).expect("a decoded record encodes");
    assert_eq!(once, twice, "a record changed on its round trip");
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, record)) = data.split_first() else {
        return;
    };
    match choice % 5 {
        0 => round_trip::<Entry>(record),
        1 => round_trip::<Command>(record),
        2 => round_trip::<Vote>(record),
        3 => round_trip::<LogId>(record),
        _ => round_trip::<(u64, u64)>(record),
    }
});

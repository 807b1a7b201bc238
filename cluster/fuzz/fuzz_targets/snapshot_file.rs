//! Fuzz target `snapshot_file`: arbitrary bytes as a snapshot file, given
//! to the reader and verifier a node runs on a snapshot received from the
//! leader or found on its disk (`store::snapshot::{verify, read}`).
//!
//! The first byte's lowest bit says whether to append the correct SHA-256
//! trailer to the rest (the fuzzer cannot forge a checksum, and without
//! one it would never get past it). A file that fails must be an error,
//! with no panic and no allocation beyond libFuzzer's limits; a file that
//! verifies must read back the same metadata, clock and number of records,
//! its size must be what verify reports, and reading it must not depend on
//! where the reader was left.

#![no_main]

use std::io::{Cursor, Seek, SeekFrom};

use eventstore::store::snapshot::{read, verify};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut file = body.to_vec();
    if mode & 1 == 1 {
        let sum = Sha256::digest(body);
        file.extend_from_slice(&sum);
    }
    let len = file.len() as u64;
    let mut cursor = Cursor::new(file);
    let Ok(found) = verify(&mut cursor) else {
        return;
    };
    assert_eq!(found.bytes, len, "verify reported the wrong size");
    // Reading starts from the beginning wherever the reader was left.
    cursor.seek(SeekFrom::Start(len / 2)).expect("seek");
    let mut records = 0u64;
    let (meta, clock) = read(&mut cursor, |_, _| {
        records += 1;
        Ok(())
    })
    .expect("a verified snapshot reads");
    assert_eq!(meta, found.meta);
    assert_eq!(clock, found.clock);
    assert_eq!(records, found.records);
});

//! Random identifiers that need to differ between processes, not to be
//! secret: a data directory's incarnation and a client's id.

use std::hash::{BuildHasher, Hasher};

/// A non-zero random number: the standard library's randomly keyed hasher
/// over the current time and the process id.
pub fn nonzero_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

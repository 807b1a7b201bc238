//! Fuzz target `storage_key`: the storage-key encoding of locations
//! (`store::location`).
//!
//! For a pair of arbitrary locations: each decodes back to itself, starts
//! with a client scope tag (never the system tag 0), and two locations
//! encode to the same key only if they are equal. Arbitrary bytes given to
//! the decoder either fail or decode to a location that encodes back to
//! exactly those bytes (one key, one location).

#![no_main]

use arbitrary::Arbitrary;
use eventstore::store::{Location, Scope};
use libfuzzer_sys::fuzz_target;

/// A location as the fuzzer builds it.
#[derive(Arbitrary, Debug)]
enum AnyScope {
    Global,
    Bridge(String),
    Instance(String, String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    a: (AnyScope, String),
    b: (AnyScope, String),
    raw: Vec<u8>,
}

fn location((scope, key): (AnyScope, String)) -> Location {
    let scope = match scope {
        AnyScope::Global => Scope::Global,
        AnyScope::Bridge(bridge) => Scope::Bridge { bridge },
        AnyScope::Instance(bridge, instance) => Scope::Instance { bridge, instance },
    };
    Location::new(scope, key)
}

fuzz_target!(|input: Input| {
    let a = location(input.a);
    let b = location(input.b);
    let (ea, eb) = (a.encode(), b.encode());
    for (loc, enc) in [(&a, &ea), (&b, &eb)] {
        assert!(
            matches!(enc.first(), Some(1..=3)),
            "{loc} encodes with tag {:?}",
            enc.first()
        );
        let back = Location::decode(enc).expect("an encoded location decodes");
        assert_eq!(&back, loc);
    }
    assert_eq!(
        a == b,
        ea == eb,
        "{a} and {b}: equal locations must share a key, different ones must not"
    );
    if let Ok(loc) = Location::decode(&input.raw) {
        assert_eq!(
            loc.encode(),
            input.raw,
            "{loc} was decoded from bytes it does not encode to"
        );
    }
});

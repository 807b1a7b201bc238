//! Fuzz target `request`: raw bytes as the body of a client request, decoded
//! with prost as the server's codec does and validated by the server's own
//! parser (`api::request`).
//!
//! The first byte chooses the method (Save, Load, Delete) and the limits
//! (the defaults, or small ones so that every size rule is reachable); the
//! rest is the protobuf body. Nothing may panic; a refusal must carry a
//! client-error code and a message; an accepted request must obey every
//! rule, and its location, re-encoded on the wire and parsed again, must
//! give the same location.

#![no_main]

use eventstore::api::request::{parse_location, Op};
use eventstore::api::ApiError;
use eventstore::config::{DefaultTtls, Limits};
use eventstore::proto::protob::{
    DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType,
};
use eventstore::store::{Location, Scope};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The wire form of a validated location, built independently of the
/// server's parser.
fn to_wire(loc: &Location) -> LocationType {
    let (choice, bridge, instance) = match &loc.scope {
        Scope::Global => (ScopeChoice::Global, String::new(), String::new()),
        Scope::Bridge { bridge } => (ScopeChoice::Bridge, bridge.clone(), String::new()),
        Scope::Instance { bridge, instance } => {
            (ScopeChoice::Instance, bridge.clone(), instance.clone())
        }
    };
    LocationType {
        scope: Some(ScopeType {
            r#type: choice as i32,
            bridge,
            instance,
        }),
        key: loc.key.clone(),
    }
}

/// The rules every accepted location obeys.
fn check_location(loc: &Location, limits: &Limits) {
    assert!(!loc.key.is_empty(), "accepted an empty key: {loc}");
    assert!(
        loc.key.len() <= limits.max_key_bytes,
        "key over the limit: {loc}"
    );
    match &loc.scope {
        Scope::Global => {}
        Scope::Bridge { bridge } => {
            assert!(
                !bridge.is_empty() && bridge.len() <= limits.max_bridge_bytes,
                "{loc}"
            );
        }
        Scope::Instance { bridge, instance } => {
            assert!(
                !bridge.is_empty() && bridge.len() <= limits.max_bridge_bytes,
                "{loc}"
            );
            assert!(
                !instance.is_empty() && instance.len() <= limits.max_instance_bytes,
                "{loc}"
            );
        }
    }
    // Round trip through the wire form and the parser.
    let bytes = to_wire(loc).encode_to_vec();
    let wire = LocationType::decode(bytes.as_slice()).expect("re-encoded location decodes");
    let again = parse_location(Some(&wire), limits).expect("re-encoded location is accepted");
    assert_eq!(&again, loc, "the location changed on its round trip");
    // And through the storage-key encoding.
    let stored = Location::decode(&loc.encode()).expect("storage key decodes");
    assert_eq!(&stored, loc, "the storage key did not round-trip");
}

fn check_refusal(e: &ApiError) {
    assert!(
        matches!(e, ApiError::InvalidArgument(_) | ApiError::TooLarge(_)),
        "a bad request got {e:?}, not INVALID_ARGUMENT or RESOURCE_EXHAUSTED"
    );
    assert!(!e.to_string().is_empty(), "a refusal without a message");
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let limits = if choice & 0x80 == 0 {
        Limits::default()
    } else {
        Limits {
            max_key_bytes: 8,
            max_bridge_bytes: 4,
            max_instance_bytes: 4,
            max_value_bytes: 16,
        }
    };
    let defaults = DefaultTtls {
        global_secs: 30,
        bridge_secs: 20,
        instance_secs: 10,
    };
    let parsed = match choice % 3 {
        0 => match SaveRequest::decode(body) {
            Ok(req) => {
                let op = Op::parse_save(&req, &limits, &defaults);
                if let Ok(Op::Save {
                    value, ttl_secs, ..
                }) = &op
                {
                    assert!(value.len() <= limits.max_value_bytes);
                    assert_eq!(value[..], req.value[..]);
                    assert!(req.ttl >= 0, "accepted a negative ttl");
                    assert!(*ttl_secs > 0, "a save without a ttl");
                    if req.ttl > 0 {
                        assert_eq!(*ttl_secs, req.ttl as u64);
                    }
                }
                op
            }
            Err(_) => return,
        },
        1 => match LoadRequest::decode(body) {
            Ok(req) => Op::parse_load(&req, &limits),
            Err(_) => return,
        },
        _ => match DeleteRequest::decode(body) {
            Ok(req) => Op::parse_delete(&req, &limits),
            Err(_) => return,
        },
    };
    match parsed {
        Ok(op) => check_location(op.location(), &limits),
        Err(e) => check_refusal(&e),
    }
});

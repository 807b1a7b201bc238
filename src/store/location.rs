//! Where a value lives: a scope (global, bridge or instance) plus a key, and
//! its unambiguous byte encoding used as the storage key.
//!
//! Every part is length-prefixed, so bridge `a.b` with key `c` and bridge `a`
//! with key `b.c` encode to different bytes, and no scope's keys can collide
//! with another scope's.

use std::fmt;

/// The namespace a key lives in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Shared by every component.
    Global,
    /// Shared by the components of one event flow.
    Bridge {
        /// The bridge (event flow) name.
        bridge: String,
    },
    /// One run of a flow.
    Instance {
        /// The bridge (event flow) name.
        bridge: String,
        /// The instance (run) id.
        instance: String,
    },
}

impl Scope {
    /// A short lower-case name of the scope kind: `global`, `bridge` or `instance`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Bridge { .. } => "bridge",
            Scope::Instance { .. } => "instance",
        }
    }
}

/// A scope plus a key: the address of one value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The namespace.
    pub scope: Scope,
    /// The key inside the namespace.
    pub key: String,
}

const TAG_GLOBAL: u8 = 1;
const TAG_BRIDGE: u8 = 2;
const TAG_INSTANCE: u8 = 3;

/// Why a stored key could not be decoded (only ever a sign of corruption).
#[derive(Debug, thiserror::Error)]
#[error("malformed stored key: {0}")]
pub struct DecodeError(&'static str);

impl Location {
    /// Creates a location.
    pub fn new(scope: Scope, key: impl Into<String>) -> Self {
        Location {
            scope,
            key: key.into(),
        }
    }

    /// The storage key: a scope tag, then each part as a 4-byte big-endian
    /// length followed by its UTF-8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 12 + self.key.len() + 32);
        match &self.scope {
            Scope::Global => out.push(TAG_GLOBAL),
            Scope::Bridge { bridge } => {
                out.push(TAG_BRIDGE);
                put_part(&mut out, bridge);
            }
            Scope::Instance { bridge, instance } => {
                out.push(TAG_INSTANCE);
                put_part(&mut out, bridge);
                put_part(&mut out, instance);
            }
        }
        put_part(&mut out, &self.key);
        out
    }

    /// Decodes a storage key made by [`Location::encode`].
    pub fn decode(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError("empty"))?;
        bytes = rest;
        let scope = match tag {
            TAG_GLOBAL => Scope::Global,
            TAG_BRIDGE => Scope::Bridge {
                bridge: take_part(&mut bytes)?,
            },
            TAG_INSTANCE => Scope::Instance {
                bridge: take_part(&mut bytes)?,
                instance: take_part(&mut bytes)?,
            },
            _ => return Err(DecodeError("unknown scope tag")),
        };
        let key = take_part(&mut bytes)?;
        if !bytes.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Location { scope, key })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Global => write!(f, "global/{:?}", self.key),
            Scope::Bridge { bridge } => write!(f, "bridge/{bridge:?}/{:?}", self.key),
            Scope::Instance { bridge, instance } => {
                write!(f, "instance/{bridge:?}/{instance:?}/{:?}", self.key)
            }
        }
    }
}

fn put_part(out: &mut Vec<u8>, part: &str) {
    // Parts are bounded by the validation limits, far below u32::MAX.
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

fn take_part(bytes: &mut &[u8]) -> Result<String, DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError("truncated length"));
    }
    let (len, rest) = bytes.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(DecodeError("truncated part"));
    }
    let (part, rest) = rest.split_at(len);
    *bytes = rest;
    String::from_utf8(part.to_vec()).map_err(|_| DecodeError("part is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dotted_names_do_not_collide() {
        let a = Location::new(
            Scope::Bridge {
                bridge: "a.b".into(),
            },
            "c",
        );
        let b = Location::new(Scope::Bridge { bridge: "a".into() }, "b.c");
        assert_ne!(a.encode(), b.encode());
    }

    #[test]
    fn scopes_do_not_collide() {
        let g = Location::new(Scope::Global, "k");
        let b = Location::new(Scope::Bridge { bridge: "".into() }, "k");
        let i = Location::new(
            Scope::Instance {
                bridge: "b".into(),
                instance: "".into(),
            },
            "k",
        );
        let bb = Location::new(Scope::Bridge { bridge: "b".into() }, "k");
        let all = [g.encode(), b.encode(), i.encode(), bb.encode()];
        for x in 0..all.len() {
            for y in 0..all.len() {
                if x != y {
                    assert_ne!(all[x], all[y]);
                }
            }
        }
    }

    fn any_location() -> impl Strategy<Value = Location> {
        let part = ".{0,6}";
        prop_oneof![
            part.prop_map(|k| Location::new(Scope::Global, k)),
            (part, part).prop_map(|(b, k)| Location::new(Scope::Bridge { bridge: b }, k)),
            (part, part, part).prop_map(|(b, i, k)| Location::new(
                Scope::Instance {
                    bridge: b,
                    instance: i
                },
                k
            )),
        ]
    }

    proptest! {
        #[test]
        fn encoding_round_trips(loc in any_location()) {
            prop_assert_eq!(Location::decode(&loc.encode()).unwrap(), loc);
        }

        #[test]
        fn encoding_is_injective(a in any_location(), b in any_location()) {
            prop_assert_eq!(a == b, a.encode() == b.encode());
        }
    }
}

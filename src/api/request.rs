//! Parsing and validating client requests.
//!
//! Each wire request becomes an [`Op`]: a checked location plus what to do
//! there. Every rule a request can break is checked here, before anything
//! reaches Raft, and reported as [`ApiError::InvalidArgument`] (or
//! [`ApiError::TooLarge`] for an oversized value) with a message that names
//! the problem.

use crate::api::error::ApiError;
use crate::config::{DefaultTtls, Limits};
use crate::proto::protob::{DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice};
use crate::store::{Location, Scope};

/// A validated client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store a value.
    Save {
        /// Where.
        location: Location,
        /// The bytes.
        value: Vec<u8>,
        /// Time to live in seconds, with the scope default already applied
        /// (0 = never expires).
        ttl_secs: u64,
    },
    /// Read a value.
    Load {
        /// Where.
        location: Location,
    },
    /// Remove a value.
    Delete {
        /// Where.
        location: Location,
    },
}

impl Op {
    /// Validates a Save request.
    pub fn parse_save(
        req: &SaveRequest,
        limits: &Limits,
        defaults: &DefaultTtls,
    ) -> Result<Op, ApiError> {
        let location = parse_location(req.location.as_ref(), limits)?;
        if req.ttl < 0 {
            return Err(ApiError::InvalidArgument(format!(
                "ttl must be 0 (the scope's default) or a positive number of seconds, got {}",
                req.ttl
            )));
        }
        let ttl = u64::try_from(req.ttl).unwrap_or(0);
        if req.value.len() > limits.max_value_bytes {
            return Err(ApiError::TooLarge(format!(
                "value is {} bytes, over the limit of {} bytes",
                req.value.len(),
                limits.max_value_bytes
            )));
        }
        let ttl_secs = if ttl == 0 {
            match location.scope {
                Scope::Global => defaults.global_secs,
                Scope::Bridge { .. } => defaults.bridge_secs,
                Scope::Instance { .. } => defaults.instance_secs,
            }
        } else {
            ttl
        };
        Ok(Op::Save {
            location,
            value: req.value.to_vec(),
            ttl_secs,
        })
    }

    /// Validates a Load request.
    pub fn parse_load(req: &LoadRequest, limits: &Limits) -> Result<Op, ApiError> {
        Ok(Op::Load {
            location: parse_location(req.location.as_ref(), limits)?,
        })
    }

    /// Validates a Delete request.
    pub fn parse_delete(req: &DeleteRequest, limits: &Limits) -> Result<Op, ApiError> {
        Ok(Op::Delete {
            location: parse_location(req.location.as_ref(), limits)?,
        })
    }

    /// The location the operation targets.
    pub fn location(&self) -> &Location {
        match self {
            Op::Save { location, .. } | Op::Load { location } | Op::Delete { location } => location,
        }
    }
}

/// Validates a location: scope present and consistent, key non-empty, sizes
/// within limits.
pub fn parse_location(loc: Option<&LocationType>, limits: &Limits) -> Result<Location, ApiError> {
    let invalid = |m: String| Err(ApiError::InvalidArgument(m));
    let Some(loc) = loc else {
        return invalid("location is required".into());
    };
    let Some(scope) = loc.scope.as_ref() else {
        return invalid("location.scope is required".into());
    };
    let Ok(kind) = ScopeChoice::try_from(scope.r#type) else {
        return invalid(format!(
            "unknown scope type {} (expected Instance=0, Bridge=1 or Global=2)",
            scope.r#type
        ));
    };
    check_len("key", &loc.key, limits.max_key_bytes)?;
    check_len("bridge", &scope.bridge, limits.max_bridge_bytes)?;
    check_len("instance", &scope.instance, limits.max_instance_bytes)?;
    if loc.key.is_empty() {
        return invalid("key must not be empty".into());
    }
    let scope = match kind {
        ScopeChoice::Global => {
            if !scope.bridge.is_empty() || !scope.instance.is_empty() {
                return invalid("Global scope must not have a bridge or an instance".into());
            }
            Scope::Global
        }
        ScopeChoice::Bridge => {
            if scope.bridge.is_empty() {
                return invalid("Bridge scope requires a bridge name".into());
            }
            if !scope.instance.is_empty() {
                return invalid("Bridge scope must not have an instance".into());
            }
            Scope::Bridge {
                bridge: scope.bridge.clone(),
            }
        }
        ScopeChoice::Instance => {
            if scope.bridge.is_empty() {
                return invalid("Instance scope requires a bridge name".into());
            }
            if scope.instance.is_empty() {
                return invalid("Instance scope requires an instance id".into());
            }
            Scope::Instance {
                bridge: scope.bridge.clone(),
                instance: scope.instance.clone(),
            }
        }
    };
    Ok(Location::new(scope, loc.key.clone()))
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() > max {
        return Err(ApiError::InvalidArgument(format!(
            "{what} is {} bytes, over the limit of {max} bytes",
            s.len()
        )));
    }
    Ok(())
}

//! The request id a client may attach to a Save or Delete, in the gRPC
//! metadata entry [`REQUEST_ID_HEADER`] (the wire contract's messages stay
//! as they are). A write whose id names one that was applied recently is
//! answered with that write's result and not applied again, so a client can
//! retry a write whose outcome it does not know. Ids are opaque to the
//! server; the Rust client sends `<client id>-<sequence number>`.

use super::error::ApiError;

/// The metadata key of a request id.
pub const REQUEST_ID_HEADER: &str = "eventstore-request-id";

/// The longest request id accepted, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The request id in `metadata`, if any: 1 to [`MAX_REQUEST_ID_BYTES`]
/// visible ASCII characters, else INVALID_ARGUMENT.
pub fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> Result<Option<String>, ApiError> {
    let Some(v) = metadata.get(REQUEST_ID_HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        ApiError::InvalidArgument(format!(
            "{REQUEST_ID_HEADER} must be visible ASCII characters"
        ))
    })?;
    check_request_id(s)?;
    Ok(Some(s.to_string()))
}

/// Checks the rules of a request id.
pub fn check_request_id(s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > MAX_REQUEST_ID_BYTES {
        return Err(ApiError::InvalidArgument(format!(
            "{REQUEST_ID_HEADER} must be 1 to {MAX_REQUEST_ID_BYTES} bytes, got {}",
            s.len()
        )));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidArgument(format!(
            "{REQUEST_ID_HEADER} must be visible ASCII characters without spaces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(request_id_of(&m), Ok(None));
        m.insert(REQUEST_ID_HEADER, "c0ffee-17".parse().unwrap());
        assert_eq!(request_id_of(&m), Ok(Some("c0ffee-17".into())));
        for bad in ["", "a b", &"x".repeat(MAX_REQUEST_ID_BYTES + 1)] {
            assert!(check_request_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_request_id(&"x".repeat(MAX_REQUEST_ID_BYTES)).is_ok());
    }
}

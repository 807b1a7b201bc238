//! The request-deadline rule: how long the server works on a request,
//! taken from its `grpc-timeout` header (or a default).

use std::time::Duration;

use tokio::time::Instant;

use super::error::ApiError;

/// The longest the server works on one request, whatever deadline the
/// client asked for. Longer `grpc-timeout`s (the header allows up to
/// 99,999,999 hours) are clamped to it; the client's own timer is unaffected.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The shortest `grpc-timeout` the server starts work on. A shorter one (a
/// nanosecond, or zero) has passed, or all but passed, by the time the
/// request is read: the request is answered DEADLINE_EXCEEDED at once and
/// nothing is applied (see [`too_late`]).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// How long the server may work on a request: its `grpc-timeout` (or
/// `default` when it has none or it is malformed), clamped to
/// [`MAX_TIMEOUT`].
pub fn timeout_of<T>(req: &tonic::Request<T>, default: Duration) -> Duration {
    req.metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(default)
        .min(MAX_TIMEOUT)
}

/// The refusal of a request whose `timeout` is under [`MIN_TIMEOUT`], if
/// it is.
pub fn too_late(timeout: Duration) -> Option<ApiError> {
    (timeout < MIN_TIMEOUT).then(|| {
        ApiError::Timeout(format!(
            "the request's deadline ({timeout:?} from when it was sent) passed before the server \
             started on it; nothing was applied"
        ))
    })
}

/// The time by which the server must answer a request with `timeout`
/// ([`timeout_of`]), from now, less a small margin (a tenth, at most
/// 100 ms) so that a definite answer such as UNAVAILABLE reaches the
/// client before the client's own timer fires.
pub fn deadline_after(timeout: Duration) -> Instant {
    let margin = (timeout / 10).min(Duration::from_millis(100));
    Instant::now() + (timeout - margin)
}

/// The time by which the server must answer `req`: [`deadline_after`] its
/// [`timeout_of`].
pub fn deadline_of<T>(req: &tonic::Request<T>, default: Duration) -> Instant {
    deadline_after(timeout_of(req, default))
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`). Any number of
/// digits is read, saturating; anything else is not a timeout.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().unwrap_or(u64::MAX);
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    #[test]
    fn timeouts_under_a_millisecond_are_refused() {
        for t in [0, 1, 999_999] {
            assert!(too_late(Duration::from_nanos(t)).is_some(), "{t} ns");
        }
        assert!(too_late(MIN_TIMEOUT).is_none());
    }

    #[test]
    fn deadlines_from_absurd_headers_do_not_overflow() {
        let default = Duration::from_secs(5);
        for h in [
            "9223372036854775807S",
            "18446744073709551615H",
            "99999999H",
            "99999999999999999999999999999999S",
            "0S",
            "1n",
            "",
            "-1S",
        ] {
            let mut req = tonic::Request::new(());
            req.metadata_mut()
                .insert("grpc-timeout", h.parse().unwrap());
            let before = Instant::now();
            let d = deadline_of(&req, default);
            assert!(d >= before, "{h}: deadline in the past");
            assert!(
                d <= before + MAX_TIMEOUT + Duration::from_secs(1),
                "{h}: not clamped"
            );
        }
    }
}

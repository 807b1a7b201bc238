//! The request-deadline rule: how long the server works on a request,
//! taken from its `grpc-timeout` header (or a default).

use std::time::Duration;

use tokio::time::Instant;

/// The time by which the server must answer a request: its `grpc-timeout`
/// (or `default`) from now, less a small margin (a tenth, at most 100 ms) so
/// that a definite answer such as UNAVAILABLE reaches the client before the
/// client's own timer fires.
pub fn deadline_of<T>(req: &tonic::Request<T>, default: Duration) -> Instant {
    let timeout = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(default);
    let margin = (timeout / 10).min(Duration::from_millis(100));
    Instant::now() + timeout - margin
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
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
}

//! `eventstore client` (flags of the original example client, so existing
//! scripts keep working) and `eventstore health`.
//!
//! Exit codes: 0 success; 1 other failure; 2 bad usage (a bad server
//! address, a scope with names it does not take); 3 NOT_FOUND; 4
//! INVALID_ARGUMENT, RESOURCE_EXHAUSTED or OUT_OF_RANGE; 5 UNAVAILABLE or
//! timed out (after retrying UNAVAILABLE until `--timeout`).

use std::io::{Read, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::connect::{connect, ClientTlsArgs, Port, TlsArgs};
use crate::client::{Client, Error};
use crate::store::Scope;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for failures not listed below.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for bad usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for NOT_FOUND (absent or expired key).
pub const EXIT_NOT_FOUND: i32 = 3;
/// Exit code for INVALID_ARGUMENT or RESOURCE_EXHAUSTED.
pub const EXIT_INVALID: i32 = 4;
/// Exit code for UNAVAILABLE or a timeout.
pub const EXIT_UNAVAILABLE: i32 = 5;

/// What `eventstore client` does.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ClientCommand {
    /// Store a value.
    Save,
    /// Print a value (raw bytes to stdout).
    Load,
    /// Remove a value.
    Delete,
}

/// The scope flag.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum ScopeArg {
    /// Shared by every component.
    Global,
    /// Shared by one bridge's components.
    Bridge,
    /// One run of a bridge.
    Instance,
}

/// Flags of `eventstore client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server: `host:port`, `http://host:port`, `https://host:port`,
    /// `dns:///host:port`, or a host alone for port 8080.
    #[arg(long, env = "EVENTSTORE_SERVER", default_value = "localhost:8080")]
    pub server: String,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// save, load or delete.
    #[arg(long, value_enum)]
    pub command: ClientCommand,
    /// Global, Bridge or Instance.
    #[arg(long, value_enum, ignore_case = true, default_value = "Global")]
    pub scope: ScopeArg,
    /// Bridge name (Bridge and Instance scopes).
    #[arg(long, default_value = "")]
    pub bridge: String,
    /// Instance id (Instance scope).
    #[arg(long, default_value = "")]
    pub instance: String,
    /// The key.
    #[arg(long)]
    pub key: String,
    /// The value to save, as text.
    #[arg(long, conflicts_with = "value_file")]
    pub value: Option<String>,
    /// Read the value to save from a file (`-` for stdin), for binary data.
    #[arg(long)]
    pub value_file: Option<std::path::PathBuf>,
    /// TTL in seconds for save (0: the scope's default on the server).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub ttl: i32,
    /// Give up after this long: `5s`, `500ms`, `1m` or plain seconds.
    /// UNAVAILABLE answers (no leader, no quorum) are retried until then,
    /// and the last one is printed.
    #[arg(long, env = "EVENTSTORE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `eventstore health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// A node's client port: `host:port`, `http://host:port`,
    /// `https://host:port`, `dns:///host:port`, or a host alone for port 8080.
    #[arg(long, env = "EVENTSTORE_SERVER", default_value = "127.0.0.1:8080")]
    pub server: String,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up after this long.
    #[arg(long, env = "EVENTSTORE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Parses `5s`, `500ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn exit_code(e: &Error) -> i32 {
    match e {
        Error::NotFound(_) => EXIT_NOT_FOUND,
        Error::InvalidArgument(_) | Error::TooLarge(_) => EXIT_INVALID,
        Error::Unavailable(_) | Error::Timeout(_) => EXIT_UNAVAILABLE,
        Error::BadAddress(_) | Error::Tls(_) => EXIT_USAGE,
        Error::Server { .. } => EXIT_FAILURE,
    }
}

/// Refuses names that the scope does not take, as the server would.
fn check_scope_names(args: &ClientArgs) -> Result<(), String> {
    match args.scope {
        ScopeArg::Global if !args.bridge.is_empty() || !args.instance.is_empty() => Err(
            "--scope Global takes no --bridge or --instance (the server refuses a Global \
             location with names)"
                .into(),
        ),
        ScopeArg::Bridge if !args.instance.is_empty() => Err(
            "--scope Bridge takes no --instance (the server refuses a Bridge location with an \
             instance); use --scope Instance"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Runs `eventstore client`; returns the exit code.
pub async fn run(args: ClientArgs) -> i32 {
    if let Err(msg) = check_scope_names(&args) {
        eprintln!("error: {msg}");
        return EXIT_USAGE;
    }
    let client = match Client::connect_with_tls(&args.server, args.timeout, &args.tls.files()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code(&e);
        }
    };
    let scope = match args.scope {
        ScopeArg::Global => Scope::Global,
        ScopeArg::Bridge => Scope::Bridge {
            bridge: args.bridge.clone(),
        },
        ScopeArg::Instance => Scope::Instance {
            bridge: args.bridge.clone(),
            instance: args.instance.clone(),
        },
    };
    let handle = client.scope(scope);
    let result = match args.command {
        ClientCommand::Save => {
            let value = match read_value(&args) {
                Ok(v) => v,
                Err(msg) => {
                    eprintln!("error: {msg}");
                    return EXIT_USAGE;
                }
            };
            handle
                .save_value(&args.key, value, args.ttl)
                .await
                .map(|_| None)
        }
        ClientCommand::Load => handle.load_value(&args.key).await.map(Some),
        ClientCommand::Delete => handle.delete_value(&args.key).await.map(|_| None),
    };
    match result {
        Ok(Some(bytes)) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
                eprintln!("error: writing the value to stdout: {e}");
                return EXIT_FAILURE;
            }
            EXIT_OK
        }
        Ok(None) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

fn read_value(args: &ClientArgs) -> Result<Vec<u8>, String> {
    match (&args.value, &args.value_file) {
        (Some(v), _) => Ok(v.clone().into_bytes()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading the value from stdin: {e}"))?;
            Ok(buf)
        }
        (None, Some(p)) => {
            std::fs::read(p).map_err(|e| format!("reading the value from {}: {e}", p.display()))
        }
        (None, None) => Err("save needs --value or --value-file".into()),
    }
}

/// Runs `eventstore health`; returns 0 when the node is SERVING.
pub async fn health(args: HealthArgs) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let check = async {
        let c = connect(&args.server, Port::Client, args.timeout, &args.tls.files()).await?;
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.set_timeout(args.timeout);
        match HealthClient::new(c.channel.clone()).check(req).await {
            Ok(r) => Ok(r.into_inner().status),
            Err(s) => Err(c.explain(&s, "gRPC health").await),
        }
    };
    match tokio::time::timeout(args.timeout, check).await {
        Ok(Ok(status))
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
        {
            println!("SERVING");
            EXIT_OK
        }
        Ok(Ok(_)) => {
            println!("NOT_SERVING");
            EXIT_FAILURE
        }
        Ok(Err(f)) => {
            eprintln!("error: {}", f.message);
            // A bad address is bad usage; anything else is "not serving".
            if f.code == EXIT_USAGE {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            }
        }
        Err(_) => {
            eprintln!("error: no answer within {:?}", args.timeout);
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}

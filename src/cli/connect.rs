//! Connecting the command line to a node, and saying in words what went
//! wrong: which address was hit, whether anything listens there, and
//! whether it is the port the command needs.
//!
//! A node has two ports: the client port (`--listen`, default 8080) serves
//! `protob.EventStore` and gRPC health, for `client`, `health` and
//! `bench`; the peer port (`--peer-listen`, default 9090) serves the Raft
//! RPCs, relays and the admin service, for `cluster`.
//!
//! Either port may require TLS; `--ca`, `--cert` and `--key` ([`TlsArgs`])
//! say how to connect to it.

use std::time::Duration;

use std::path::PathBuf;

use clap::Args;
use tonic::transport::Channel;

use super::client::{EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE};
use crate::api::error::connection_refused;
use crate::client::{authority, describe_status, endpoint, server_uri_with_port};
use crate::tls::ClientFiles;

/// TLS flags of `health`, `bench` and `cluster`. Any of them (or an
/// `https://` address) makes the connection use TLS.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM CA certificates the node's certificate must chain to (default:
    /// the system's trusted roots). Turns TLS on.
    #[arg(long, env = "EVENTSTORE_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for a port with mTLS (the peer port with
    /// --peer-tls-*, the client port with --tls-client-ca). Needs --key.
    #[arg(long, env = "EVENTSTORE_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert (also --cert-key, as in `eventstore client`).
    #[arg(long, visible_alias = "cert-key", env = "EVENTSTORE_CERT_KEY")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, for the connection.
    pub fn files(&self) -> ClientFiles {
        ClientFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// TLS flags of `client`, whose `--key` is the value's key: the
/// certificate's key is `--cert-key` there.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificates the node's certificate must chain to (default:
    /// the system's trusted roots). Turns TLS on.
    #[arg(long, env = "EVENTSTORE_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for a client port with mTLS
    /// (--tls-client-ca). Needs --cert-key.
    #[arg(long, env = "EVENTSTORE_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "EVENTSTORE_CERT_KEY")]
    pub cert_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The files, for the connection.
    pub fn files(&self) -> ClientFiles {
        ClientFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.cert_key.clone(),
        }
    }
}

/// Which of a node's two ports a command talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The client port (`--listen`, default 8080).
    Client,
    /// The peer port (`--peer-listen`, default 9090).
    Peer,
}

impl Port {
    /// The port used when an address names none.
    pub fn default_port(self) -> u16 {
        match self {
            Port::Client => 8080,
            Port::Peer => 9090,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Port::Client => "a node's client port (--listen, default 8080)",
            Port::Peer => "a node's peer port (--peer-listen, default 9090)",
        }
    }

    fn other(self) -> Port {
        match self {
            Port::Client => Port::Peer,
            Port::Peer => Port::Client,
        }
    }
}

/// A failed command: the message to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, in words.
    pub message: String,
    /// The process exit code.
    pub code: i32,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn other(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }
}

/// A connected channel to `server`, and the `HOST:PORT` it reached.
pub struct Connected {
    /// The channel.
    pub channel: Channel,
    /// `HOST:PORT`, for messages.
    pub addr: String,
    /// The port kind the command expects.
    pub port: Port,
    /// Whether the connection uses TLS.
    pub tls: bool,
}

/// Connects to `server` (`HOST`, `HOST:PORT`, `http://...`, `https://...`,
/// `dns:///...`; a host alone gets `port`'s default), within `timeout`,
/// over TLS when the address is `https://` or `tls` names any file.
pub async fn connect(
    server: &str,
    port: Port,
    timeout: Duration,
    tls: &ClientFiles,
) -> Result<Connected, Failure> {
    let uri = server_uri_with_port(server, port.default_port()).map_err(|e| Failure {
        message: e.to_string(),
        code: EXIT_USAGE,
    })?;
    let addr = authority(&uri).to_string();
    let endpoint = endpoint(&uri, tls).map_err(|e| Failure {
        message: e.to_string(),
        code: EXIT_USAGE,
    })?;
    let endpoint = endpoint.connect_timeout(timeout).tcp_nodelay(true);
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(ch)) => ch,
        Ok(Err(e)) => {
            let message = if connection_refused(&e) {
                format!(
                    "connection refused to {addr}: nothing listens there (is the node running, \
                     and is this {}?)",
                    port.describe()
                )
            } else {
                let text = chain(&e);
                match tls_hint(&text, port, uri.starts_with("https://") || tls.any()) {
                    Some(hint) => format!("cannot connect to {addr}: {text} ({hint})"),
                    None => format!("cannot connect to {addr}: {text}"),
                }
            };
            return Err(Failure {
                message,
                code: EXIT_UNAVAILABLE,
            });
        }
        Err(_) => {
            return Err(Failure {
                message: format!("no connection to {addr} within {timeout:?}"),
                code: EXIT_UNAVAILABLE,
            })
        }
    };
    Ok(Connected {
        channel,
        addr,
        port,
        tls: uri.starts_with("https://") || tls.any(),
    })
}

/// A hint for a failed connection that looks like TLS on one side only,
/// or a certificate the other side does not accept.
fn tls_hint(error: &str, port: Port, used_tls: bool) -> Option<String> {
    let flags = match port {
        Port::Client => "--ca (and --cert/--key where the node has --tls-client-ca)",
        Port::Peer => "--ca, --cert and --key with a certificate from the cluster CA",
    };
    crate::tls::client_connection_hint(error, used_tls, flags)
}

/// An error with the errors that caused it.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl Connected {
    /// Words for a failed call of `service` on this connection. An
    /// UNIMPLEMENTED answer means the address is a node's other port: the
    /// message names the port that was hit and the one to use.
    pub async fn explain(&self, s: &tonic::Status, service: &str) -> Failure {
        if s.code() == tonic::Code::Unimplemented {
            let hint = if self.is(self.port.other()).await {
                format!("{} is {}", self.addr, self.port.other().describe())
            } else {
                format!("{} does not serve {service}", self.addr)
            };
            return Failure::other(format!(
                "{hint}; this command talks to {}",
                self.port.describe()
            ));
        }
        let code = match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => EXIT_UNAVAILABLE,
            _ => EXIT_FAILURE,
        };
        let text = describe_status(s, &self.addr);
        let message = match tls_hint(&text, self.port, self.tls) {
            Some(hint) => format!("{text} ({:?}; {hint})", s.code()),
            None => format!("{text} ({:?})", s.code()),
        };
        Failure { message, code }
    }

    /// Whether the node answers on this connection as a `port` port.
    async fn is(&self, port: Port) -> bool {
        let probe = async {
            match port {
                Port::Client => {
                    use tonic_health::pb::health_client::HealthClient;
                    use tonic_health::pb::HealthCheckRequest;
                    HealthClient::new(self.channel.clone())
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok()
                }
                Port::Peer => {
                    use crate::proto::peer::admin_client::AdminClient;
                    use crate::proto::peer::StatusRequest;
                    AdminClient::new(self.channel.clone())
                        .log_state(StatusRequest {})
                        .await
                        .is_ok()
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .unwrap_or(false)
    }
}

//! Connecting the command line to a node, and saying in words what went
//! wrong: which address was hit, whether anything listens there, and
//! whether it is the port the command needs.
//!
//! A node has two ports: the client port (`--listen`, default 8080) serves
//! `protob.EventStore` and gRPC health, for `client`, `health` and
//! `bench`; the peer port (`--peer-listen`, default 9090) serves the Raft
//! RPCs, relays and the admin service, for `cluster`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::client::{EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE};
use crate::api::error::connection_refused;
use crate::client::{authority, describe_status, server_uri_with_port};

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
}

/// Connects to `server` (`HOST`, `HOST:PORT`, `http://...`, `dns:///...`;
/// a host alone gets `port`'s default), within `timeout`.
pub async fn connect(server: &str, port: Port, timeout: Duration) -> Result<Connected, Failure> {
    let uri = server_uri_with_port(server, port.default_port()).map_err(|e| Failure {
        message: e.to_string(),
        code: EXIT_USAGE,
    })?;
    let addr = authority(&uri).to_string();
    let endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| Failure {
        message: format!("bad server address {server:?}: {e}"),
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
                format!("cannot connect to {addr}: {}", chain(&e))
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
    })
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
        Failure {
            message: format!("{} ({:?})", describe_status(s, &self.addr), s.code()),
            code,
        }
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

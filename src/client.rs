//! The Rust client library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), eventstore::client::Error> {
//! use std::time::Duration;
//! use eventstore::client::{Client, Error};
//!
//! let client = Client::connect("dns:///localhost:8080", Duration::from_secs(5))?;
//! let flow = client.bridge("orders");
//! flow.save_value("last-offset", b"42".to_vec(), 60).await?;
//! assert_eq!(flow.load_value("last-offset").await?, b"42");
//! match client.global().load_value("missing").await {
//!     Err(Error::NotFound(_)) => {}
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Every call is bounded by the timeout given to [`Client::connect`].
//! Requests are validated before they are sent, and UNAVAILABLE answers
//! (no leader yet, node restarting, or a write whose outcome is unknown)
//! are retried with exponential backoff until the timeout.
//!
//! Every Save and Delete carries a request id (`eventstore-request-id`
//! metadata: this client's random id and a sequence number), the same on
//! every retry of that call. The server remembers the ids of recent writes
//! and answers a repeated one with the first result without applying it
//! again, so a retried write takes effect at most once, even when another
//! client wrote the same key in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::api::error::connection_refused;
use crate::api::request::parse_location;
use crate::api::request_id::{check_request_id, REQUEST_ID_HEADER};
use crate::config::Limits;
use crate::proto::protob::event_store_client::EventStoreClient;
use crate::proto::protob::{
    DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType,
};
use crate::store::Scope;
use crate::tls::ClientFiles;

/// What can go wrong with a client call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The key is absent or expired.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request breaks a rule (checked locally or by the server).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The value is over the server's size limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No server could serve the request before the timeout. For a write,
    /// an earlier attempt may have been applied (at most once: every
    /// attempt carried the same request id).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The timeout passed; a write may or may not have been applied (at
    /// most once).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The server address is not usable.
    #[error("bad server address: {0}")]
    BadAddress(String),
    /// The TLS files (CA, certificate, key) are not usable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Any other server error.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

impl Error {
    fn from_status(s: tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::NotFound => Error::NotFound(m),
            Code::InvalidArgument => Error::InvalidArgument(m),
            Code::ResourceExhausted | Code::OutOfRange => Error::TooLarge(m),
            Code::Unavailable => Error::Unavailable(m),
            Code::DeadlineExceeded | Code::Cancelled => Error::Timeout(m),
            code => Error::Server { code, message: m },
        }
    }
}

/// The port of a node's client gRPC service when an address names none.
pub const DEFAULT_CLIENT_PORT: u16 = 8080;

/// Turns `dns:///host:port`, `http://host:port`, `https://host:port`,
/// `host:port` or a host alone (port 8080, the client port) into an
/// `http://` (or `https://`) URI.
pub fn server_uri(server: &str) -> Result<String, Error> {
    server_uri_with_port(server, DEFAULT_CLIENT_PORT)
}

/// Like [`server_uri`], with `default_port` for an address without a port.
/// Any scheme other than `http://`, `https://` and `dns:` is refused.
pub fn server_uri_with_port(server: &str, default_port: u16) -> Result<String, Error> {
    let s = server.trim();
    let bad = |why: &str| {
        Error::BadAddress(format!(
            "{server:?}: {why}; expected HOST, HOST:PORT, http://HOST:PORT or dns:///HOST:PORT"
        ))
    };
    let (scheme, rest) = if let Some(r) = s.strip_prefix("dns:///") {
        ("http://", r)
    } else if let Some(r) = s.strip_prefix("dns://") {
        // dns://authority/host:port: the authority names a DNS server; use the host part.
        ("http://", r.split_once('/').map(|(_, h)| h).unwrap_or(r))
    } else if let Some(r) = s.strip_prefix("http://") {
        ("http://", r)
    } else if let Some(r) = s.strip_prefix("https://") {
        ("https://", r)
    } else if let Some((scheme, _)) = s.split_once("://") {
        return Err(bad(&format!("unknown scheme {scheme:?}")));
    } else {
        ("http://", s)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    // HOST:PORT, [V6]:PORT, [V6] or HOST.
    let has_port = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            if port.parse::<u16>().is_err() {
                return Err(bad(&format!("bad port {port:?}")));
            }
            true
        }
        Some(_) if !rest.starts_with('[') => return Err(bad("put an IPv6 address in brackets")),
        _ => false,
    };
    if has_port {
        Ok(format!("{scheme}{rest}"))
    } else {
        Ok(format!("{scheme}{rest}:{default_port}"))
    }
}

/// An endpoint for `uri` (made by [`server_uri`]), not connected yet. It
/// uses TLS when the URI is `https://` or `tls` names any file; then the
/// server's certificate must chain to `tls.ca` (without one, to the
/// system's trusted roots) and name the URI's host, and `tls.cert` and
/// `tls.key` are presented to a server that asks for a client certificate.
pub fn endpoint(uri: &str, tls: &ClientFiles) -> Result<Endpoint, Error> {
    let use_tls = uri.starts_with("https://") || tls.any();
    let uri = if use_tls {
        format!("https://{}", authority(uri))
    } else {
        uri.to_string()
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| Error::BadAddress(format!("{uri:?}: {e}")))?;
    if !use_tls {
        return Ok(endpoint);
    }
    let config = tls
        .client_config()
        .map_err(|e| Error::Tls(format!("{e:#}")))?;
    endpoint
        .tls_config(config)
        .map_err(|e| Error::Tls(format!("{uri}: {e}")))
}

/// The `HOST:PORT` a URI made by [`server_uri`] connects to.
pub fn authority(uri: &str) -> &str {
    uri.split_once("://").map(|(_, a)| a).unwrap_or(uri)
}

/// Words for a failed call to `server` (`HOST:PORT`): "connection
/// refused to HOST:PORT" when nothing listens there, otherwise the status's
/// message followed by the errors that caused it.
pub fn describe_status(s: &tonic::Status, server: &str) -> String {
    if connection_refused(s) {
        return format!("connection refused to {server}");
    }
    let mut text = s.message().to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = e.source();
    }
    if text.is_empty() {
        text = format!("{:?} with no message", s.code());
    }
    text
}

/// A connection to an EventStore cluster (any node will do). Clones share
/// the connection and the request-id sequence.
#[derive(Clone)]
pub struct Client {
    inner: EventStoreClient<Channel>,
    timeout: Duration,
    session: Arc<Session>,
    /// `HOST:PORT`, for messages.
    server: Arc<str>,
    /// Whether the connection uses TLS, for hints in messages.
    tls: bool,
}

/// Where this client's request ids come from.
struct Session {
    id: String,
    next: AtomicU64,
}

impl Session {
    fn new(id: String) -> Self {
        Session {
            id,
            next: AtomicU64::new(1),
        }
    }

    fn next_request_id(&self) -> String {
        format!("{}-{}", self.id, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// A random client id: 16 hex digits.
fn random_client_id() -> String {
    format!("{:016x}", crate::random::nonzero_u64())
}

impl Client {
    /// Prepares a client for `server`; the connection is made on first use
    /// and re-made as needed. Every call is bounded by `timeout`.
    pub fn connect(server: &str, timeout: Duration) -> Result<Self, Error> {
        Self::connect_with_tls(server, timeout, &ClientFiles::default())
    }

    /// Like [`Client::connect`], over TLS when `server` is `https://...` or
    /// `tls` names any file (see [`endpoint`]): the CA the server's
    /// certificate must chain to, and the client certificate and key for
    /// a server that requires one (mTLS).
    pub fn connect_with_tls(
        server: &str,
        timeout: Duration,
        tls: &ClientFiles,
    ) -> Result<Self, Error> {
        let uri = server_uri(server)?;
        let endpoint = endpoint(&uri, tls)?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true);
        let inner = EventStoreClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Client {
            inner,
            timeout,
            session: Arc::new(Session::new(random_client_id())),
            server: authority(&uri).into(),
            tls: uri.starts_with("https://") || tls.any(),
        })
    }

    /// The same connection with client id `id` (at most 100 visible ASCII
    /// characters), for request ids `<id>-1`, `<id>-2`... Ids must be
    /// unique among the clients of a cluster; [`Client::connect`] picks a
    /// random one.
    pub fn with_client_id(mut self, id: &str) -> Result<Self, Error> {
        if id.len() > 100 {
            return Err(Error::InvalidArgument(format!(
                "client id is {} bytes, over 100",
                id.len()
            )));
        }
        check_request_id(id).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.session = Arc::new(Session::new(id.to_string()));
        Ok(self)
    }

    /// This client's id, the first part of its request ids.
    pub fn client_id(&self) -> &str {
        &self.session.id
    }

    /// The global scope.
    pub fn global(&self) -> ScopeClient {
        self.scope(Scope::Global)
    }

    /// The scope of bridge `name`.
    pub fn bridge(&self, name: impl Into<String>) -> ScopeClient {
        self.scope(Scope::Bridge {
            bridge: name.into(),
        })
    }

    /// The scope of one instance (`id`) of bridge `bridge`.
    pub fn instance(&self, bridge: impl Into<String>, id: impl Into<String>) -> ScopeClient {
        self.scope(Scope::Instance {
            bridge: bridge.into(),
            instance: id.into(),
        })
    }

    /// A handle on any scope.
    pub fn scope(&self, scope: Scope) -> ScopeClient {
        ScopeClient {
            client: self.clone(),
            scope,
        }
    }

    /// Sends `req`, retrying UNAVAILABLE answers until the timeout; a
    /// write carries `request_id` on every attempt.
    async fn call<T, R, F, Fut>(&self, req: T, request_id: Option<String>, f: F) -> Result<R, Error>
    where
        T: Clone,
        F: Fn(EventStoreClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(25);
        // The last UNAVAILABLE answer, reported if the timeout passes.
        let mut last: Option<String> = None;
        let gave_up = |last: &Option<String>| match last {
            Some(why) => Error::Unavailable(format!(
                "{why} (retried until the timeout, {:?})",
                self.timeout
            )),
            None => Error::Timeout(format!("no answer within {:?}", self.timeout)),
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(gave_up(&last));
            }
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(remaining);
            if let Some(id) = &request_id {
                let v = id
                    .parse()
                    .map_err(|_| Error::InvalidArgument(format!("bad request id {id:?}")))?;
                r.metadata_mut().insert(REQUEST_ID_HEADER, v);
            }
            let res = tokio::time::timeout(remaining, f(self.inner.clone(), r)).await;
            match res {
                Err(_) => return Err(gave_up(&last)),
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(s)) if s.code() == Code::Unavailable => {
                    let why = describe_status(&s, &self.server);
                    let flags = "--ca (and --cert/--cert-key where the node has --tls-client-ca)";
                    last = Some(
                        match crate::tls::client_connection_hint(&why, self.tls, flags) {
                            Some(hint) => format!("{why} ({hint})"),
                            None => why,
                        },
                    );
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left <= backoff {
                        return Err(gave_up(&last));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Ok(Err(s)) if s.code() == Code::Unimplemented => {
                    return Err(Error::Server {
                        code: s.code(),
                        message: format!(
                            "{} does not serve protob.EventStore: is it a node's peer port? \
                             Clients use the client port (--listen, default {DEFAULT_CLIENT_PORT})",
                            self.server
                        ),
                    })
                }
                Ok(Err(s)) => return Err(Error::from_status(s)),
            }
        }
    }
}

/// A handle on one scope: save, load and delete keys in it.
#[derive(Clone)]
pub struct ScopeClient {
    client: Client,
    scope: Scope,
}

impl ScopeClient {
    fn location(&self, key: &str) -> Result<LocationType, Error> {
        let (choice, bridge, instance) = match &self.scope {
            Scope::Global => (ScopeChoice::Global, String::new(), String::new()),
            Scope::Bridge { bridge } => (ScopeChoice::Bridge, bridge.clone(), String::new()),
            Scope::Instance { bridge, instance } => {
                (ScopeChoice::Instance, bridge.clone(), instance.clone())
            }
        };
        let loc = LocationType {
            scope: Some(ScopeType {
                r#type: choice as i32,
                bridge,
                instance,
            }),
            key: key.to_string(),
        };
        // Check the structural rules here; the server applies its own size limits.
        let unlimited = Limits {
            max_key_bytes: usize::MAX,
            max_bridge_bytes: usize::MAX,
            max_instance_bytes: usize::MAX,
            max_value_bytes: usize::MAX,
        };
        parse_location(Some(&loc), &unlimited)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(loc)
    }

    /// Stores `value` under `key` for `ttl_secs` seconds (0: the scope's
    /// default TTL on the server).
    pub async fn save_value(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl_secs: i32,
    ) -> Result<(), Error> {
        if ttl_secs < 0 {
            return Err(Error::InvalidArgument(format!(
                "ttl must be 0 or positive, got {ttl_secs}"
            )));
        }
        let req = SaveRequest {
            location: Some(self.location(key)?),
            ttl: ttl_secs,
            value: value.into().into(),
        };
        let id = self.client.session.next_request_id();
        self.client
            .call(req, Some(id), |mut c, r| async move { c.save(r).await })
            .await
            .map(|_| ())
    }

    /// The value under `key`; [`Error::NotFound`] if absent or expired.
    pub async fn load_value(&self, key: &str) -> Result<Vec<u8>, Error> {
        let req = LoadRequest {
            location: Some(self.location(key)?),
        };
        self.client
            .call(req, None, |mut c, r| async move { c.load(r).await })
            .await
            .map(|r| r.value.to_vec())
    }

    /// Removes `key`; succeeds whether or not it existed.
    pub async fn delete_value(&self, key: &str) -> Result<(), Error> {
        let req = DeleteRequest {
            location: Some(self.location(key)?),
        };
        let id = self.client.session.next_request_id();
        self.client
            .call(req, Some(id), |mut c, r| async move { c.delete(r).await })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_forms() {
        assert_eq!(server_uri("dns:///es:8080").unwrap(), "http://es:8080");
        assert_eq!(server_uri("http://es:8080").unwrap(), "http://es:8080");
        assert_eq!(server_uri("es:8080").unwrap(), "http://es:8080");
        assert_eq!(
            server_uri("dns://8.8.8.8/es:8080").unwrap(),
            "http://es:8080"
        );
        assert_eq!(server_uri("es").unwrap(), "http://es:8080");
        assert_eq!(server_uri("dns:///es").unwrap(), "http://es:8080");
        assert_eq!(server_uri_with_port("es", 9090).unwrap(), "http://es:9090");
        assert_eq!(server_uri("[::1]").unwrap(), "http://[::1]:8080");
        assert_eq!(server_uri("[::1]:81").unwrap(), "http://[::1]:81");
        assert!(server_uri("ftp://es:8080").is_err());
        assert!(server_uri("es:http").is_err());
        assert!(server_uri("").is_err());
    }
}

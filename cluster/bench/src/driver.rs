//! Connections to both systems, and one request of each kind.
//!
//! Every client task owns one connection (one HTTP/2 connection, made
//! before the sweep), to one endpoint: client `i` talks to endpoint
//! `i % 3`, for both systems. EventStore is driven through its generated
//! gRPC client with a request id on every Save and Delete (as the Rust
//! client in `eventstore::client` sends them), etcd through `etcd-client`.
//! The baseline is EventStore's gRPC health check on the same connection.
//!
//! etcd has no TTL per key: a Save is a Put attached to a lease of the
//! same TTL, granted once and shared by every client, as a user would. A
//! lease runs out `ttl` seconds after it was granted, so [`LeaseKeeper`]
//! grants a fresh one every `ttl / 2` and new Puts attach to it; a value
//! then lives between `ttl / 2` and `ttl` seconds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{ConnectOptions, PutOptions};
use eventstore::api::request_id::REQUEST_ID_HEADER;
use eventstore::client::describe_status;
use eventstore::proto::protob::event_store_client::EventStoreClient;
use eventstore::proto::protob::{
    DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::plan::{Op, System};

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed request: the gRPC code's name (or `TRANSPORT`, `CLIENT`,
/// `WRONG_VALUE`) and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC code as the gRPC docs write it, e.g. `DEADLINE_EXCEEDED`.
    pub code: String,
    /// What happened, with the address it happened at.
    pub message: String,
}

/// A gRPC code's name as the gRPC docs write it: `DeadlineExceeded` ->
/// `DEADLINE_EXCEEDED`.
pub fn code_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn status_failure(s: &tonic::Status, addr: &str) -> Failure {
    Failure {
        code: code_name(s.code()),
        message: describe_status(s, addr),
    }
}

/// What an etcd client error counts as.
pub fn etcd_failure(e: etcd_client::Error, addr: &str) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(s) => status_failure(&s, addr),
        etcd_client::Error::TransportError(t) => Failure {
            code: "TRANSPORT".into(),
            message: format!("{addr}: {t}"),
        },
        other => Failure {
            code: "CLIENT".into(),
            message: format!("{addr}: {other}"),
        },
    }
}

/// The EventStore location of benchmark key `n` (Bridge scope `bench`).
pub fn eventstore_location(n: usize) -> LocationType {
    LocationType {
        scope: Some(ScopeType {
            r#type: ScopeChoice::Bridge as i32,
            bridge: "bench".into(),
            instance: String::new(),
        }),
        key: format!("k{n}"),
    }
}

/// The etcd key of benchmark key `n`.
pub fn etcd_key(n: usize) -> String {
    format!("bench/k{n}")
}

/// A connection to one EventStore node.
pub struct EventstoreConn {
    store: EventStoreClient<Channel>,
    health: HealthClient<Channel>,
    client_id: String,
    seq: u64,
    addr: String,
}

/// A connection to one etcd member.
pub struct EtcdConn {
    client: etcd_client::Client,
    lease: Arc<AtomicI64>,
    addr: String,
}

/// One client's connection to either system.
pub enum Conn {
    /// EventStore (boxed, like the etcd side: the clients are large).
    Eventstore(Box<EventstoreConn>),
    /// etcd.
    Etcd(Box<EtcdConn>),
}

/// Connects to the EventStore node at `addr` (`HOST:PORT`); `client_id`
/// starts the request ids, and must be unique among the cluster's clients.
pub async fn connect_eventstore(addr: &str, client_id: String) -> Result<Conn> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("EventStore address {addr:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to EventStore at {addr}"))?;
    Ok(Conn::Eventstore(Box::new(EventstoreConn {
        store: EventStoreClient::new(channel.clone()),
        health: HealthClient::new(channel),
        client_id,
        seq: 0,
        addr: addr.to_string(),
    })))
}

/// Connects to the etcd member at `addr` (`HOST:PORT`); Saves attach to
/// the lease whose id `lease` holds.
pub async fn connect_etcd(addr: &str, lease: Arc<AtomicI64>) -> Result<Conn> {
    Ok(Conn::Etcd(Box::new(EtcdConn {
        client: etcd_client(addr).await?,
        lease,
        addr: addr.to_string(),
    })))
}

/// An etcd client of the member at `addr` alone (`HOST:PORT`).
async fn etcd_client(addr: &str) -> Result<etcd_client::Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(REQUEST_TIMEOUT);
    etcd_client::Client::connect([format!("http://{addr}")], Some(options))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to etcd at {addr}: {e}"))
}

impl Conn {
    /// Which system this connection reaches.
    pub fn system(&self) -> System {
        match self {
            Conn::Eventstore(_) => System::Eventstore,
            Conn::Etcd(_) => System::Etcd,
        }
    }

    /// Sends one request: `op` on key `key`, with `value` for a Save and
    /// `ttl` seconds of life. A Load must find a value of `value.len()`
    /// bytes; a missing key is NOT_FOUND on both systems.
    pub async fn call(
        &mut self,
        op: Op,
        key: usize,
        value: &[u8],
        ttl: i32,
    ) -> Result<(), Failure> {
        match self {
            Conn::Eventstore(c) => c.call(op, key, value, ttl).await,
            Conn::Etcd(c) => c.call(op, key, value).await,
        }
    }
}

impl EventstoreConn {
    fn request<T>(&mut self, msg: T, with_id: bool) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(REQUEST_TIMEOUT);
        if with_id {
            self.seq += 1;
            let id = format!("{}-{}", self.client_id, self.seq);
            if let Ok(v) = id.parse() {
                r.metadata_mut().insert(REQUEST_ID_HEADER, v);
            }
        }
        r
    }

    async fn call(&mut self, op: Op, key: usize, value: &[u8], ttl: i32) -> Result<(), Failure> {
        let res = match op {
            Op::Baseline => {
                let r = self.request(
                    HealthCheckRequest {
                        service: String::new(),
                    },
                    false,
                );
                self.health.check(r).await.map(|_| ())
            }
            Op::Save => {
                let r = self.request(
                    SaveRequest {
                        location: Some(eventstore_location(key)),
                        ttl,
                        value: value.to_vec().into(),
                    },
                    true,
                );
                self.store.save(r).await.map(|_| ())
            }
            Op::Load => {
                let r = self.request(
                    LoadRequest {
                        location: Some(eventstore_location(key)),
                    },
                    false,
                );
                match self.store.load(r).await {
                    Ok(resp) => {
                        return check_len(resp.into_inner().value.len(), value.len(), &self.addr)
                    }
                    Err(s) => Err(s),
                }
            }
            Op::Delete => {
                let r = self.request(
                    DeleteRequest {
                        location: Some(eventstore_location(key)),
                    },
                    true,
                );
                self.store.delete(r).await.map(|_| ())
            }
        };
        res.map_err(|s| status_failure(&s, &self.addr))
    }
}

fn check_len(got: usize, want: usize, addr: &str) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure {
            code: "WRONG_VALUE".into(),
            message: format!("{addr}: a Load returned {got} bytes, expected {want}"),
        })
    }
}

impl EtcdConn {
    async fn call(&mut self, op: Op, key: usize, value: &[u8]) -> Result<(), Failure> {
        let addr = &self.addr;
        match op {
            Op::Baseline => Err(Failure {
                code: "CLIENT".into(),
                message: "the baseline is measured on EventStore only".into(),
            }),
            Op::Save => {
                let lease = self.lease.load(Ordering::Relaxed);
                self.client
                    .put(
                        etcd_key(key),
                        value.to_vec(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| etcd_failure(e, addr))
            }
            Op::Load => {
                // etcd's default Get is linearizable (not serializable).
                let resp = self
                    .client
                    .get(etcd_key(key), None)
                    .await
                    .map_err(|e| etcd_failure(e, addr))?;
                match resp.kvs().first() {
                    Some(kv) => check_len(kv.value().len(), value.len(), addr),
                    None => Err(Failure {
                        code: "NOT_FOUND".into(),
                        message: format!("{addr}: key {} not found", etcd_key(key)),
                    }),
                }
            }
            Op::Delete => self
                .client
                .delete(etcd_key(key), None)
                .await
                .map(|_| ())
                .map_err(|e| etcd_failure(e, addr)),
        }
    }
}

/// Keeps a shared etcd lease of one TTL: grants one at once, and a fresh
/// one every `ttl / 2` while it lives (the old one runs out by itself).
pub struct LeaseKeeper {
    current: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants the first lease of `ttl_secs` through the member at `addr`.
    pub async fn start(addr: &str, ttl_secs: i64) -> Result<Self> {
        if ttl_secs < 2 {
            bail!("the TTL must be at least 2 s for etcd leases, got {ttl_secs}");
        }
        let mut client = etcd_client(addr).await?;
        let first = client
            .lease_grant(ttl_secs, None)
            .await
            .map_err(|e| anyhow::anyhow!("granting an etcd lease of {ttl_secs} s at {addr}: {e}"))?
            .id();
        let current = Arc::new(AtomicI64::new(first));
        let shared = current.clone();
        let addr = addr.to_string();
        let task = tokio::spawn(async move {
            let every = Duration::from_secs((ttl_secs / 2) as u64);
            loop {
                tokio::time::sleep(every).await;
                match client.lease_grant(ttl_secs, None).await {
                    Ok(r) => shared.store(r.id(), Ordering::Relaxed),
                    Err(e) => eprintln!("bench: renewing the etcd lease at {addr}: {e}"),
                }
            }
        });
        Ok(LeaseKeeper { current, task })
    }

    /// The id of the lease new Puts attach to.
    pub fn current(&self) -> Arc<AtomicI64> {
        self.current.clone()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_written_as_in_the_grpc_docs() {
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }

    #[test]
    fn etcd_errors_keep_their_grpc_code_and_name_the_member() {
        let f = etcd_failure(
            etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader")),
            "127.0.0.1:2379",
        );
        assert_eq!(f.code, "UNAVAILABLE");
        assert!(f.message.contains("no leader"), "{f:?}");
        let f = etcd_failure(
            etcd_client::Error::InvalidArgs("bad".into()),
            "127.0.0.1:2379",
        );
        assert_eq!(f.code, "CLIENT");
        assert!(f.message.starts_with("127.0.0.1:2379"), "{f:?}");
    }

    #[test]
    fn both_systems_use_the_same_key_names() {
        assert_eq!(eventstore_location(7).key, "k7");
        assert_eq!(etcd_key(7), "bench/k7");
        assert!(check_len(3, 3, "a").is_ok());
        assert_eq!(check_len(2, 3, "a").unwrap_err().code, "WRONG_VALUE");
    }
}

//! The client workload: concurrent clients, each pinned to one node's
//! client port, doing Save / Load / Delete on a small key set, one deadline
//! per operation, and every operation recorded.
//!
//! Even-numbered clients use the raw gRPC client (no retries, no request
//! ids, so every attempt is in the history). Odd-numbered clients use the
//! Rust client library, which sends a request id with every write and
//! retries UNAVAILABLE answers (outcome unknown included) with the same id
//! until the deadline: one recorded operation may then be several attempts,
//! and the checker holds each key linearizable with those retries in it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Result;
use eventstore::api::OUTCOME_UNKNOWN;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::cluster::{lazy_channel, Cluster};
use crate::check::{Kind, Op, Outcome};
use eventstore::client::{Client as RustClient, Error as ClientError};
use eventstore::proto::protob::event_store_client::EventStoreClient;
use eventstore::proto::protob::{
    DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType,
};

/// What the clients do during one phase.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Phase (scenario) name, recorded with every operation.
    pub name: String,
    /// The keys (Global scope) the clients pick from, uniformly.
    pub keys: Vec<String>,
    /// TTL of each Save, in seconds, drawn uniformly from this range.
    pub ttl_secs: (u32, u32),
    /// Percentage of Saves.
    pub save_pct: u32,
    /// Percentage of Deletes (the rest are Loads).
    pub delete_pct: u32,
}

/// Workload settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Number of clients; client `i` uses node `i % 3`.
    pub clients: u32,
    /// Deadline of each operation (sent as `grpc-timeout` and enforced
    /// locally).
    pub op_timeout: Duration,
    /// Pause after an operation that did not succeed.
    pub error_backoff: Duration,
    /// Pause after every successful operation (0: none).
    pub think: Duration,
    /// Treat UNAVAILABLE on Save/Delete as "not applied" (the server's
    /// documented contract) instead of indeterminate.
    pub trust_unavailable: bool,
    /// Random seed.
    pub seed: u64,
}

/// The shared, append-only history.
pub struct Recorder {
    start: std::time::Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: std::time::Instant::now(),
            ops: Mutex::new(Vec::new()),
        })
    }

    /// Nanoseconds since time zero (monotonic).
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends `op`, giving it the next id.
    pub fn push(&self, mut op: Op) {
        let mut ops = self.ops.lock().expect("recorder lock");
        op.id = ops.len();
        ops.push(op);
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().expect("recorder lock").clone()
    }
}

/// A small xorshift generator (the workload needs no cryptographic quality).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The running clients.
pub struct Workload {
    phase: Arc<RwLock<Arc<Phase>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts `settings.clients` clients on `cluster`, in `phase`.
    pub fn start(
        cluster: &Cluster,
        settings: &Settings,
        recorder: Arc<Recorder>,
        phase: Phase,
    ) -> Result<Workload> {
        let phase = Arc::new(RwLock::new(Arc::new(phase)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..settings.clients {
            let node = c % cluster.nodes.len() as u32;
            let addr = &cluster.node(node).client_addr;
            let channel = lazy_channel(addr)?;
            let rust = if c % 2 == 1 {
                let client = RustClient::connect(addr, settings.op_timeout)
                    .and_then(|cl| cl.with_client_id(&format!("faults-{:x}-c{c}", settings.seed)))
                    .map_err(|e| anyhow::anyhow!("client {c}: {e}"))?;
                Some(client)
            } else {
                None
            };
            let client = ClientTask {
                id: c,
                node,
                grpc: EventStoreClient::new(channel),
                rust,
                settings: settings.clone(),
                recorder: recorder.clone(),
                phase: phase.clone(),
                stop: stop.clone(),
                rng: Rng::new(settings.seed ^ ((u64::from(c) + 1) * 0x1000_0000_01b3)),
            };
            tasks.push(tokio::spawn(client.run()));
        }
        Ok(Workload { phase, stop, tasks })
    }

    /// Switches every client to `phase` (operations in flight finish on
    /// their old key).
    pub fn set_phase(&self, phase: Phase) {
        *self.phase.write().expect("phase lock") = Arc::new(phase);
    }

    /// Stops the clients and waits for their last operations (at most one
    /// operation timeout).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct ClientTask {
    id: u32,
    node: u32,
    grpc: EventStoreClient<Channel>,
    /// The Rust client library (with retries and request ids), for the
    /// clients that use it.
    rust: Option<RustClient>,
    settings: Settings,
    recorder: Arc<Recorder>,
    phase: Arc<RwLock<Arc<Phase>>>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

/// The location of `key` in the Global scope.
pub fn global(key: &str) -> LocationType {
    LocationType {
        scope: Some(ScopeType {
            r#type: ScopeChoice::Global as i32,
            bridge: String::new(),
            instance: String::new(),
        }),
        key: key.to_string(),
    }
}

impl ClientTask {
    async fn run(mut self) {
        let mut seq = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let phase = self.phase.read().expect("phase lock").clone();
            let key = &phase.keys[self.rng.below(phase.keys.len() as u64) as usize];
            let roll = self.rng.below(100) as u32;
            let kind = if roll < phase.save_pct {
                Kind::Save
            } else if roll < phase.save_pct + phase.delete_pct {
                Kind::Delete
            } else {
                Kind::Load
            };
            let (value, ttl_secs) = if kind == Kind::Save {
                seq += 1;
                let (lo, hi) = phase.ttl_secs;
                let ttl = lo + self.rng.below(u64::from(hi.saturating_sub(lo)) + 1) as u32;
                (Some(format!("c{}-{seq}", self.id)), ttl)
            } else {
                (None, 0)
            };
            let target = Target {
                client: self.id,
                node: self.node,
                phase: &phase.name,
                key,
            };
            let op = match &self.rust {
                Some(rust) => {
                    execute_with_client(rust, &self.recorder, target, kind, value, ttl_secs).await
                }
                None => {
                    execute(
                        &mut self.grpc,
                        &self.settings,
                        &self.recorder,
                        target,
                        kind,
                        value,
                        ttl_secs,
                    )
                    .await
                }
            };
            let ok = op.outcome == Outcome::Ok;
            self.recorder.push(op);
            if !ok {
                tokio::time::sleep(self.settings.error_backoff).await;
            } else if !self.settings.think.is_zero() {
                tokio::time::sleep(self.settings.think).await;
            }
        }
    }
}

/// Who sends an operation and where.
pub struct Target<'a> {
    /// Client id.
    pub client: u32,
    /// Node the client's channel goes to.
    pub node: u32,
    /// Phase name.
    pub phase: &'a str,
    /// Key (Global scope).
    pub key: &'a str,
}

/// Runs one operation and returns its record (id not yet assigned).
pub async fn execute(
    grpc: &mut EventStoreClient<Channel>,
    settings: &Settings,
    recorder: &Recorder,
    target: Target<'_>,
    kind: Kind,
    value: Option<String>,
    ttl_secs: u32,
) -> Op {
    fn req<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        r
    }
    let timeout = settings.op_timeout;
    let location = Some(global(target.key));
    let invoke_ns = recorder.now_ns();
    // Ok(Some(v)) / Ok(None): a read's answer; Ok(None) for writes.
    let res: Result<Result<Option<String>, Status>, tokio::time::error::Elapsed> = match kind {
        Kind::Save => {
            let msg = SaveRequest {
                location,
                ttl: ttl_secs as i32,
                value: value.clone().unwrap_or_default().into_bytes().into(),
            };
            tokio::time::timeout(timeout, grpc.save(req(msg, timeout)))
                .await
                .map(|r| r.map(|_| None))
        }
        Kind::Delete => {
            let msg = DeleteRequest { location };
            tokio::time::timeout(timeout, grpc.delete(req(msg, timeout)))
                .await
                .map(|r| r.map(|_| None))
        }
        Kind::Load => {
            let msg = LoadRequest { location };
            tokio::time::timeout(timeout, grpc.load(req(msg, timeout)))
                .await
                .map(|r| {
                    r.map(|resp| {
                        Some(String::from_utf8_lossy(&resp.into_inner().value).into_owned())
                    })
                })
        }
    };
    let complete_ns = recorder.now_ns();
    let (outcome, read, error) = classify(kind, res, settings.trust_unavailable);
    Op {
        id: 0,
        client: target.client,
        node: target.node,
        phase: target.phase.to_string(),
        key: target.key.to_string(),
        kind,
        value: if kind == Kind::Save { value } else { read },
        ttl_ms: u64::from(ttl_secs) * 1000,
        invoke_ns,
        complete_ns,
        outcome,
        error,
    }
}

/// Runs one operation through the Rust client library (its own timeout is
/// the operation's deadline; it retries UNAVAILABLE answers, a write with
/// the same request id) and returns its record.
///
/// A write that failed with anything but a rule violation is
/// indeterminate: an earlier attempt may have been applied (at most once).
pub async fn execute_with_client(
    client: &RustClient,
    recorder: &Recorder,
    target: Target<'_>,
    kind: Kind,
    value: Option<String>,
    ttl_secs: u32,
) -> Op {
    let scope = client.global();
    let invoke_ns = recorder.now_ns();
    let res: Result<Option<String>, ClientError> = match kind {
        Kind::Save => scope
            .save_value(
                target.key,
                value.clone().unwrap_or_default().into_bytes(),
                ttl_secs as i32,
            )
            .await
            .map(|_| None),
        Kind::Delete => scope.delete_value(target.key).await.map(|_| None),
        Kind::Load => match scope.load_value(target.key).await {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(ClientError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        },
    };
    let complete_ns = recorder.now_ns();
    let (outcome, read, error) = match res {
        Ok(v) => (Outcome::Ok, v, None),
        Err(e) => {
            let label = match &e {
                ClientError::InvalidArgument(_) => "client:invalid-argument",
                ClientError::TooLarge(_) => "client:too-large",
                ClientError::Unavailable(m) if m.starts_with(OUTCOME_UNKNOWN) => {
                    "client:unavailable(outcome unknown)"
                }
                ClientError::Unavailable(_) => "client:unavailable",
                ClientError::Timeout(_) => "client:timeout",
                _ => "client:other",
            };
            let outcome = match (&e, kind) {
                (ClientError::InvalidArgument(_) | ClientError::TooLarge(_), _) => Outcome::Failed,
                (_, Kind::Load) => Outcome::Failed,
                _ => Outcome::Indeterminate,
            };
            (outcome, None, Some(label.to_string()))
        }
    };
    Op {
        id: 0,
        client: target.client,
        node: target.node,
        phase: target.phase.to_string(),
        key: target.key.to_string(),
        kind,
        value: if kind == Kind::Save { value } else { read },
        ttl_ms: u64::from(ttl_secs) * 1000,
        invoke_ns,
        complete_ns,
        outcome,
        error,
    }
}

/// True when the status is a client-side failure to connect: the request
/// never left the client, so it was not applied.
fn never_sent(s: &Status) -> bool {
    let mut text = s.message().to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(s);
    while let Some(e) = src {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        src = e.source();
    }
    let t = text.to_ascii_lowercase();
    t.contains("connection refused") || t.contains("tcp connect error")
}

/// Maps an answer to (outcome, value read, error label).
///
/// - OK → ok; NOT_FOUND on a Load → ok, absent.
/// - INVALID_ARGUMENT, RESOURCE_EXHAUSTED, OUT_OF_RANGE, and connection
///   refused (never sent) → failed.
/// - UNAVAILABLE: a Load → failed (a read has no effect either way). A
///   Save/Delete answered by the server → failed (the server's contract:
///   not applied), unless the message starts with "outcome unknown"
///   (leadership moved or Raft stopped under the proposed entry, or a relay
///   broke in transit) → indeterminate. One made by the client's transport
///   after the connection broke → indeterminate. With `--distrust-unavailable`, every UNAVAILABLE write
///   is indeterminate. A write answered plain UNAVAILABLE that took effect
///   shows up as an anomaly (a read of a failed write's value).
/// - DEADLINE_EXCEEDED, CANCELLED, the local timeout, transport errors and
///   any other code → indeterminate.
pub fn classify(
    kind: Kind,
    res: Result<Result<Option<String>, Status>, tokio::time::error::Elapsed>,
    trust_unavailable: bool,
) -> (Outcome, Option<String>, Option<String>) {
    match res {
        Err(_) => (Outcome::Indeterminate, None, Some("client-timeout".into())),
        Ok(Ok(v)) => (Outcome::Ok, v, None),
        Ok(Err(s)) => {
            // A status with a source was made by the client's transport,
            // not answered by the server.
            let label = if std::error::Error::source(&s).is_some() {
                Some("transport-error".to_string())
            } else {
                Some(format!("{:?}", s.code()))
            };
            match s.code() {
                Code::NotFound if kind == Kind::Load => (Outcome::Ok, None, None),
                Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => {
                    (Outcome::Failed, None, label)
                }
                Code::Unavailable if never_sent(&s) => {
                    (Outcome::Failed, None, Some("connection-refused".into()))
                }
                Code::Unavailable if s.message().starts_with(OUTCOME_UNKNOWN) => (
                    Outcome::Indeterminate,
                    None,
                    Some("Unavailable(outcome unknown)".into()),
                ),
                // Only the server's own UNAVAILABLE is a definite "not
                // applied": one the client's transport made (the status has
                // a source: the connection broke after the request may have
                // reached the server) says nothing about a write.
                Code::Unavailable
                    if kind == Kind::Load
                        || (trust_unavailable && std::error::Error::source(&s).is_none()) =>
                {
                    (Outcome::Failed, None, label)
                }
                _ => (Outcome::Indeterminate, None, label),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable_write(s: Status) -> Outcome {
        classify(Kind::Save, Ok(Err(s)), true).0
    }

    #[test]
    fn a_write_whose_connection_broke_is_indeterminate() {
        let mut broke = Status::unavailable("transport error");
        broke.set_source(Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(unavailable_write(broke), Outcome::Indeterminate);
        // The server's own UNAVAILABLE is a definite refusal.
        let answered = Status::unavailable("leader 0 cannot reach a quorum of voters");
        assert_eq!(unavailable_write(answered), Outcome::Failed);
    }
}

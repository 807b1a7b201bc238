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
    /// The key groups; each operation picks a group by weight, then a key
    /// of it uniformly.
    pub groups: Vec<KeyGroup>,
}

impl Phase {
    /// Every key of the phase.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flat_map(|g| g.keys.iter())
    }
}

/// Keys that share a TTL range and an operation mix.
#[derive(Clone, Debug)]
pub struct KeyGroup {
    /// The keys (Global scope).
    pub keys: Vec<String>,
    /// TTL of each Save, in seconds, drawn uniformly from this range.
    pub ttl_secs: (u32, u32),
    /// Percentage of Saves.
    pub save_pct: u32,
    /// Percentage of Deletes (the rest are Loads).
    pub delete_pct: u32,
    /// Share of the phase's operations that go to this group (relative
    /// to the other groups' weights).
    pub weight: u32,
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
            let total: u64 = phase.groups.iter().map(|g| u64::from(g.weight)).sum();
            let mut pick = self.rng.below(total.max(1));
            let group = phase
                .groups
                .iter()
                .find(|g| {
                    let w = u64::from(g.weight);
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .or(phase.groups.last())
                .expect("a phase has at least one key group");
            let key = &group.keys[self.rng.below(group.keys.len() as u64) as usize];
            let roll = self.rng.below(100) as u32;
            let kind = if roll < group.save_pct {
                Kind::Save
            } else if roll < group.save_pct + group.delete_pct {
                Kind::Delete
            } else {
                Kind::Load
            };
            let (value, ttl_secs) = if kind == Kind::Save {
                seq += 1;
                let (lo, hi) = group.ttl_secs;
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
/// The error is classified by [`classify_client_error`].
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
            let (outcome, label) = classify_client_error(kind, &e);
            (outcome, None, Some(label))
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

/// Maps an error of the Rust client library to (outcome, error label).
///
/// The library turns every status into its own [`ClientError`], keeping
/// the code and the message but not the transport error behind a status,
/// so it cannot say whether the server or the client's transport made an
/// INTERNAL or UNKNOWN (a connection reset surfaces as UNKNOWN): those stay
/// indeterminate for its operations. The raw clients, one on every node,
/// tell them apart ([`classify_status`]).
///
/// - INVALID_ARGUMENT, too large → failed (the server refuses before
///   anything happens; the library checks some rules locally).
/// - NOT_FOUND → an answer for a Load (handled by the caller), an
///   unexpected answer for a Save or Delete.
/// - UNAVAILABLE (the library retried until the deadline): a Load →
///   failed; a Save or Delete → indeterminate, since an earlier attempt may
///   have been applied (at most once: all carried the same request id).
/// - Timed out (the deadline, DEADLINE_EXCEEDED, CANCELLED) →
///   indeterminate.
/// - INTERNAL, UNKNOWN → indeterminate (see above); any other code →
///   unexpected.
/// - A bad address or unusable TLS files → failed (nothing was sent).
pub fn classify_client_error(kind: Kind, e: &ClientError) -> (Outcome, String) {
    let (outcome, label) = match e {
        ClientError::InvalidArgument(_) => (Outcome::Failed, "client:invalid-argument".into()),
        ClientError::TooLarge(_) => (Outcome::Failed, "client:too-large".into()),
        ClientError::BadAddress(_) => (Outcome::Failed, "client:bad-address".into()),
        ClientError::Tls(_) => (Outcome::Failed, "client:tls".into()),
        ClientError::NotFound(_) if kind == Kind::Load => {
            // The caller reads this as "absent"; never reached from it.
            (Outcome::Ok, "client:not-found".into())
        }
        ClientError::NotFound(_) => (Outcome::Unexpected, "client:not-found".into()),
        ClientError::Unavailable(m) => {
            let label = if m.starts_with(OUTCOME_UNKNOWN) {
                "client:unavailable(outcome unknown)"
            } else {
                "client:unavailable"
            };
            let outcome = if kind == Kind::Load {
                Outcome::Failed
            } else {
                Outcome::Indeterminate
            };
            (outcome, label.into())
        }
        ClientError::Timeout(_) => (Outcome::Indeterminate, "client:timeout".into()),
        ClientError::Server { code, .. } => {
            let outcome = match code {
                Code::Internal | Code::Unknown => Outcome::Indeterminate,
                _ => Outcome::Unexpected,
            };
            (outcome, format!("client:server({code:?})"))
        }
    };
    (outcome, label)
}

/// True when the status says the client could not open a connection (the
/// request was never sent, so it was not applied): its source chain holds
/// tonic's [`tonic::ConnectError`] (raised by the channel's connector for
/// any failure to connect: refused, unreachable, connect timeout) or a
/// refused connection. Only the chain is looked at, never the message:
/// the server's own answers may quote a connection error of its own.
fn never_sent(s: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        src = e.source();
    }
    false
}

/// Maps the raw client's result to (outcome, value read, error label); see
/// [`classify_status`] for the statuses.
///
/// - The local timeout (the deadline passed without an answer) →
///   indeterminate.
/// - OK → ok (a Load's value).
pub fn classify(
    kind: Kind,
    res: Result<Result<Option<String>, Status>, tokio::time::error::Elapsed>,
    trust_unavailable: bool,
) -> (Outcome, Option<String>, Option<String>) {
    match res {
        Err(_) => (Outcome::Indeterminate, None, Some("client-timeout".into())),
        Ok(Ok(v)) => (Outcome::Ok, v, None),
        Ok(Err(s)) => {
            let (outcome, label) = classify_status(kind, &s, trust_unavailable);
            (outcome, None, label)
        }
    }
}

/// Maps a status the raw client got to (outcome, error label). This is the
/// table "Outcomes" of docs/faults.md.
///
/// A status with a source error was made by the client's transport (tonic
/// attaches the error it came from: a refused or reset connection, an
/// expired keep-alive, an HTTP/2 reset); a status without one is the
/// server's answer (its `grpc-status`).
///
/// Made by the client's transport:
/// - could not connect (never sent) → failed (`connect-failed`);
/// - anything else, whatever its code (UNAVAILABLE after an expired
///   keep-alive while the node is frozen, UNKNOWN or INTERNAL after a reset
///   connection, CANCELLED) → indeterminate (`transport:<code>`): the
///   request may have reached the server.
///
/// Answered by the server:
/// - NOT_FOUND to a Load → ok, absent;
/// - INVALID_ARGUMENT, RESOURCE_EXHAUSTED, OUT_OF_RANGE → failed;
/// - UNAVAILABLE to a Load → failed;
/// - UNAVAILABLE to a Save or Delete whose message starts with "outcome
///   unknown" → indeterminate; any other UNAVAILABLE → failed (the server's
///   contract: not applied), or indeterminate with `--distrust-unavailable`
///   (`trust_unavailable` false);
/// - DEADLINE_EXCEEDED, CANCELLED → indeterminate;
/// - any other code (INTERNAL, UNKNOWN, NOT_FOUND to a write, ...) →
///   unexpected: the contract never gives it, so it is an anomaly.
pub fn classify_status(
    kind: Kind,
    s: &Status,
    trust_unavailable: bool,
) -> (Outcome, Option<String>) {
    let code = s.code();
    if std::error::Error::source(s).is_some() {
        if never_sent(s) {
            return (Outcome::Failed, Some("connect-failed".into()));
        }
        return (Outcome::Indeterminate, Some(format!("transport:{code:?}")));
    }
    let label = Some(format!("{code:?}"));
    match code {
        Code::NotFound if kind == Kind::Load => (Outcome::Ok, None),
        Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => {
            (Outcome::Failed, label)
        }
        Code::Unavailable if kind == Kind::Load => (Outcome::Failed, label),
        Code::Unavailable if s.message().starts_with(OUTCOME_UNKNOWN) => (
            Outcome::Indeterminate,
            Some("Unavailable(outcome unknown)".into()),
        ),
        Code::Unavailable if trust_unavailable => (Outcome::Failed, label),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            (Outcome::Indeterminate, label)
        }
        _ => (Outcome::Unexpected, label),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstore::proto::protob::event_store_server::{EventStore, EventStoreServer};
    use eventstore::proto::protob::{DeleteResponse, LoadResponse, SaveResponse};

    const KINDS: [Kind; 3] = [Kind::Save, Kind::Delete, Kind::Load];

    /// A status as the server's answer (no source).
    fn answer(code: Code, msg: &str) -> Status {
        Status::new(code, msg)
    }

    /// A status as the client's transport makes it: tonic attaches the
    /// error it came from.
    fn transport(code: Code, source: impl std::error::Error + Send + Sync + 'static) -> Status {
        let mut s = Status::new(code, "transport error");
        s.set_source(Arc::new(source));
        s
    }

    fn outcome(kind: Kind, s: Status) -> Outcome {
        classify_status(kind, &s, true).0
    }

    #[test]
    fn ok_and_the_local_timeout() {
        let ok = classify(Kind::Load, Ok(Ok(Some("v".to_string()))), true);
        assert_eq!(ok, (Outcome::Ok, Some("v".to_string()), None));
        assert_eq!(classify(Kind::Save, Ok(Ok(None)), true).0, Outcome::Ok);
        let elapsed = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
                .block_on(async {
                    tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
                        .await
                })
                .unwrap_err()
        };
        for kind in KINDS {
            let (o, read, label) = classify(kind, Err(elapsed()), true);
            assert_eq!(o, Outcome::Indeterminate, "{kind:?}");
            assert_eq!((read, label.as_deref()), (None, Some("client-timeout")));
        }
    }

    #[test]
    fn not_found_is_an_answer_to_a_load_and_unexpected_for_a_write() {
        let (o, read, label) = classify(
            Kind::Load,
            Ok(Err(answer(Code::NotFound, "no value"))),
            true,
        );
        assert_eq!((o, read, label), (Outcome::Ok, None, None));
        for kind in [Kind::Save, Kind::Delete] {
            assert_eq!(
                outcome(kind, answer(Code::NotFound, "no value")),
                Outcome::Unexpected
            );
        }
    }

    #[test]
    fn refusals_are_failed() {
        for code in [
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::OutOfRange,
        ] {
            for kind in KINDS {
                assert_eq!(outcome(kind, answer(code, "no")), Outcome::Failed);
            }
        }
    }

    #[test]
    fn the_servers_unavailable() {
        let plain = || {
            answer(
                Code::Unavailable,
                "leader 0 cannot reach a quorum of voters",
            )
        };
        let unknown = || {
            answer(
                Code::Unavailable,
                "outcome unknown: leadership moved away from node 1 while the write was in flight",
            )
        };
        // A read: failed, whatever the message.
        assert_eq!(outcome(Kind::Load, plain()), Outcome::Failed);
        assert_eq!(outcome(Kind::Load, unknown()), Outcome::Failed);
        for kind in [Kind::Save, Kind::Delete] {
            // The contract: not applied, unless "outcome unknown".
            assert_eq!(outcome(kind, plain()), Outcome::Failed);
            let (o, label) = classify_status(kind, &unknown(), true);
            assert_eq!(o, Outcome::Indeterminate);
            assert_eq!(label.as_deref(), Some("Unavailable(outcome unknown)"));
            // --distrust-unavailable.
            assert_eq!(
                classify_status(kind, &plain(), false).0,
                Outcome::Indeterminate
            );
        }
        // The server's message may quote a connection error of its own;
        // only the status's source says that the client never sent it.
        let quoted = answer(
            Code::Unavailable,
            "outcome unknown: the connection to leader 2 broke while the request was in flight \
             (leader 2: transport error: tcp connect error: connection refused)",
        );
        assert_eq!(outcome(Kind::Save, quoted), Outcome::Indeterminate);
    }

    #[test]
    fn deadline_exceeded_and_cancelled_are_indeterminate() {
        for code in [Code::DeadlineExceeded, Code::Cancelled] {
            for kind in KINDS {
                assert_eq!(outcome(kind, answer(code, "late")), Outcome::Indeterminate);
            }
        }
    }

    #[test]
    fn codes_the_server_never_answers_are_unexpected() {
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::DataLoss,
            Code::Unauthenticated,
            Code::Ok,
        ] {
            for kind in KINDS {
                let (o, label) = classify_status(kind, &answer(code, "boom"), true);
                assert_eq!(o, Outcome::Unexpected, "{code:?} {kind:?}");
                assert_eq!(label, Some(format!("{code:?}")));
            }
        }
    }

    #[test]
    fn statuses_made_by_the_transport_are_indeterminate_whatever_their_code() {
        let reset = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        for code in [
            Code::Unavailable, // keep-alive expired, REFUSED_STREAM
            Code::Unknown,     // connection reset
            Code::Internal,    // HTTP/2 protocol error, RST_STREAM(NO_ERROR)
            Code::Cancelled,
        ] {
            for kind in KINDS {
                let (o, label) = classify_status(kind, &transport(code, reset()), true);
                assert_eq!(o, Outcome::Indeterminate, "{code:?} {kind:?}");
                assert_eq!(label, Some(format!("transport:{code:?}")));
            }
        }
    }

    #[test]
    fn a_connection_that_could_not_be_opened_is_failed() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout");
        for kind in KINDS {
            // tonic's connector wraps every failure to connect.
            let s = transport(
                Code::Unavailable,
                tonic::ConnectError(Box::new(timed_out())),
            );
            let (o, label) = classify_status(kind, &s, true);
            assert_eq!(
                (o, label.as_deref()),
                (Outcome::Failed, Some("connect-failed"))
            );
            let s = transport(Code::Unavailable, refused());
            assert_eq!(outcome(kind, s), Outcome::Failed);
        }
    }

    #[test]
    fn rust_client_errors() {
        use ClientError as E;
        let m = || "m".to_string();
        for kind in KINDS {
            let c = |e: E| classify_client_error(kind, &e).0;
            assert_eq!(c(E::InvalidArgument(m())), Outcome::Failed);
            assert_eq!(c(E::TooLarge(m())), Outcome::Failed);
            assert_eq!(c(E::BadAddress(m())), Outcome::Failed);
            assert_eq!(c(E::Timeout(m())), Outcome::Indeterminate);
            for code in [Code::Internal, Code::Unknown] {
                let e = E::Server { code, message: m() };
                assert_eq!(c(e), Outcome::Indeterminate, "{code:?}");
            }
            for code in [Code::PermissionDenied, Code::Unimplemented, Code::DataLoss] {
                let e = E::Server { code, message: m() };
                assert_eq!(c(e), Outcome::Unexpected, "{code:?}");
            }
            let unavailable = c(E::Unavailable(m()));
            let unknown = c(E::Unavailable(format!(
                "{OUTCOME_UNKNOWN}: leadership moved"
            )));
            let not_found = c(E::NotFound(m()));
            if kind == Kind::Load {
                assert_eq!((unavailable, unknown), (Outcome::Failed, Outcome::Failed));
                assert_eq!(not_found, Outcome::Ok);
            } else {
                assert_eq!(unavailable, Outcome::Indeterminate);
                assert_eq!(unknown, Outcome::Indeterminate);
                assert_eq!(not_found, Outcome::Unexpected);
            }
        }
    }

    // ---- the same through a real channel ----

    /// A server that answers every call with `code`.
    struct Answers(Code);

    #[tonic::async_trait]
    impl EventStore for Answers {
        async fn save(
            &self,
            _: tonic::Request<SaveRequest>,
        ) -> Result<tonic::Response<SaveResponse>, Status> {
            Err(Status::new(self.0, "answered"))
        }
        async fn load(
            &self,
            _: tonic::Request<LoadRequest>,
        ) -> Result<tonic::Response<LoadResponse>, Status> {
            Err(Status::new(self.0, "answered"))
        }
        async fn delete(
            &self,
            _: tonic::Request<DeleteRequest>,
        ) -> Result<tonic::Response<DeleteResponse>, Status> {
            Err(Status::new(self.0, "answered"))
        }
    }

    /// One Save through a channel to `addr` with a 100 ms keep-alive.
    async fn save_to(addr: std::net::SocketAddr) -> Status {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .http2_keep_alive_interval(Duration::from_millis(100))
            .keep_alive_timeout(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let msg = SaveRequest {
            location: Some(global("k")),
            ttl: 1,
            value: b"v".to_vec().into(),
        };
        tokio::time::timeout(
            Duration::from_secs(20),
            EventStoreClient::new(channel).save(msg),
        )
        .await
        .expect("the transport gives up long before")
        .expect_err("nothing answers OK here")
    }

    #[tokio::test]
    async fn through_a_channel_the_servers_answers_have_no_source() {
        for code in [Code::Internal, Code::Unknown, Code::Unavailable] {
            let incoming =
                tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
                    .unwrap();
            let addr = incoming.local_addr().unwrap();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(EventStoreServer::new(Answers(code)))
                    .serve_with_incoming(incoming),
            );
            let s = save_to(addr).await;
            server.abort();
            assert_eq!(s.code(), code);
            assert!(std::error::Error::source(&s).is_none(), "{s:?}");
            let want = if code == Code::Unavailable {
                Outcome::Failed
            } else {
                Outcome::Unexpected
            };
            assert_eq!(classify_status(Kind::Save, &s, true).0, want, "{s:?}");
        }
    }

    #[tokio::test]
    async fn through_a_channel_a_refused_connection_is_failed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let s = save_to(addr).await;
        assert_eq!(
            classify_status(Kind::Save, &s, true),
            (Outcome::Failed, Some("connect-failed".into())),
            "{s:?}"
        );
    }

    #[tokio::test]
    async fn through_a_channel_a_frozen_server_is_indeterminate() {
        // Like a paused container: the kernel accepts the connection, the
        // process never answers; the client's keep-alive expires.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = l.accept().await {
                conns.push(c);
            }
        });
        let s = save_to(addr).await;
        held.abort();
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        assert_eq!(
            classify_status(Kind::Save, &s, true),
            (Outcome::Indeterminate, Some("transport:Unavailable".into())),
            "{s:?}"
        );
    }

    #[tokio::test]
    async fn through_a_channel_a_connection_closed_after_sending_is_indeterminate() {
        use tokio::io::AsyncReadExt as _;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                // Read the preface and the request, then drop the connection.
                let mut buf = vec![0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_millis(300), async {
                    loop {
                        match c.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                drop(c);
            }
        });
        let s = save_to(addr).await;
        closer.abort();
        assert_eq!(
            classify_status(Kind::Save, &s, true).0,
            Outcome::Indeterminate,
            "{s:?}"
        );
    }
}

//! Test harness: runs real `eventstore serve` processes on free 127.0.0.1
//! ports with temporary data directories, and stops them (by their own
//! handles) when dropped.

#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventstore::proto::peer::admin_client::AdminClient;
use eventstore::proto::peer::{StatusRequest, StatusResponse};
use eventstore::proto::protob::event_store_client::EventStoreClient;
use eventstore::proto::protob::{
    DeleteRequest, LoadRequest, LocationType, SaveRequest, ScopeChoice, ScopeType,
};
use eventstore::tls::ClientFiles;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

/// The `eventstore` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_eventstore")
}

/// A port for a node to listen on: free a moment ago, never handed out
/// before in this test process, and below the kernel's ephemeral range
/// (32768 and up on Linux), so neither another node of the same test nor
/// an outgoing connection of a neighbouring test can take it between this
/// call and the node's bind. (A port from `bind(0)` lies inside that range
/// and is handed out again at once, which made cluster starts flaky.)
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    const LOW: u64 = 20_000;
    const HIGH: u64 = 32_000;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // A per-process random start (pid and time), then a splitmix sequence.
    let _ = STATE.compare_exchange(
        0,
        u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..10_000 {
        let mut z = STATE
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let port = (LOW + z % (HIGH - LOW)) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{HIGH}");
}

/// One running node.
pub struct Server {
    pub id: u64,
    pub port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    /// Extra environment of the process (e.g. libfaketime's variables).
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// How this harness connects to the client port (`None`: plaintext).
    pub client_tls: Option<ClientFiles>,
    /// How this harness connects to the peer port (`None`: plaintext).
    pub peer_tls: Option<ClientFiles>,
}

impl Server {
    /// A single-node server with its own data directory under `dir`.
    pub fn single(dir: &Path, extra: &[&str]) -> Server {
        let mut s = Server::new(0, free_port(), free_port(), dir, None, extra);
        s.start();
        s
    }

    /// A node that is not started yet. `peers` is the `--peers` value (or
    /// none for a single node).
    pub fn new(
        id: u64,
        port: u16,
        peer_port: u16,
        dir: &Path,
        peers: Option<&str>,
        extra: &[&str],
    ) -> Server {
        let data_dir = dir.join(format!("node-{id}"));
        let mut args = vec![
            "serve".to_string(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--peer-listen".into(),
            format!("127.0.0.1:{peer_port}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        if !extra.contains(&"--metrics-listen") {
            args.push("--metrics-listen".into());
            args.push(format!("127.0.0.1:{}", free_port()));
        }
        // Fast Raft timing, unless `extra` sets its own.
        for (flag, value) in [
            ("--heartbeat-ms", "100"),
            ("--election-timeout-min-ms", "400"),
            ("--election-timeout-max-ms", "800"),
        ] {
            if !extra.contains(&flag) {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        if let Some(p) = peers {
            args.push("--peers".into());
            args.push(p.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Server {
            id,
            port,
            peer_port,
            log: dir.join(format!("node-{id}.log")),
            data_dir,
            args,
            env: Vec::new(),
            child: None,
            client_tls: None,
            peer_tls: None,
        }
    }

    /// Makes the harness connect to the client port and the peer port with
    /// these TLS files (for a node started with TLS flags).
    pub fn use_tls(&mut self, client: Option<ClientFiles>, peer: Option<ClientFiles>) {
        self.client_tls = client;
        self.peer_tls = peer;
    }

    /// An endpoint for the client port, over TLS if [`Server::use_tls`] said so.
    pub fn client_endpoint(&self) -> tonic::transport::Endpoint {
        let files = self.client_tls.clone().unwrap_or_default();
        eventstore::client::endpoint(&format!("http://{}", self.addr()), &files)
            .expect("client endpoint")
    }

    /// An endpoint for the peer port, over TLS if [`Server::use_tls`] said so.
    pub fn peer_endpoint(&self) -> tonic::transport::Endpoint {
        let files = self.peer_tls.clone().unwrap_or_default();
        eventstore::client::endpoint(&format!("http://{}", self.peer_addr()), &files)
            .expect("peer endpoint")
    }

    /// Sets an environment variable for the process (from its next start).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Makes the process's wall clock run `offset` ahead (`+1d`, `-30s`,
    /// libfaketime's syntax) from its next start, through libfaketime
    /// (Debian's `faketime` package, installed by `scripts/setup.sh`).
    /// Only the wall clock is faked: monotonic time stays true.
    pub fn fake_wall_clock(&mut self, offset: &str) {
        let lib = faketime_library().expect(
            "libfaketimeMT.so.1 not found: install Debian's faketime package (scripts/setup.sh)",
        );
        self.set_env("LD_PRELOAD", &lib.display().to_string());
        self.set_env("FAKETIME", offset);
        self.set_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        self.set_env("FAKETIME_NO_CACHE", "1");
    }

    /// Starts (or restarts) the process with the same flags and data.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(binary())
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn eventstore");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("not running").id() as i32)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status, if the process was started and has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; returns its
    /// exit code (None for a signal), or Err if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>, String> {
        let start = Instant::now();
        let c = self.child.as_mut().ok_or("node not started")?;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Ok(status.code());
            }
            if start.elapsed() > timeout {
                return Err(format!("node {} still running after {timeout:?}", self.id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if start.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "node {} did not stop within {timeout:?} after SIGTERM",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// The metrics and probes address (`--metrics-listen`), if it has one.
    pub fn metrics_addr(&self) -> Option<String> {
        let at = self.args.iter().position(|a| a == "--metrics-listen")?;
        let addr = self.args.get(at + 1)?;
        (addr != "off").then(|| addr.clone())
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A raw client of the wire contract.
    pub async fn client(&self) -> EventStoreClient<Channel> {
        let ch = self.client_endpoint().connect_lazy();
        EventStoreClient::new(ch)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// The admin service on the peer port.
    pub async fn admin(&self) -> AdminClient<Channel> {
        let ch = self.peer_endpoint().connect_lazy();
        AdminClient::new(ch)
    }

    pub async fn status(&self) -> Result<StatusResponse, tonic::Status> {
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        self.admin().await.status(req).await.map(|r| r.into_inner())
    }

    /// Whether the node reports SERVING on the gRPC health service now.
    pub async fn is_ready(&self) -> bool {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let ch = self
            .client_endpoint()
            .connect_timeout(Duration::from_millis(200))
            .timeout(Duration::from_secs(2))
            .connect()
            .await;
        let Ok(ch) = ch else { return false };
        match HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            Ok(r) => r.into_inner().status == 1,
            Err(_) => false,
        }
    }

    /// Waits until the node reports SERVING on the gRPC health service.
    pub async fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        while !self.is_ready().await {
            if start.elapsed() > timeout {
                panic!(
                    "node {} not ready within {timeout:?}; log:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped process must be resumed to die promptly.
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A three-node (or n-node) cluster on 127.0.0.1.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn peers_flag(ids_ports: &BTreeMap<u64, u16>) -> String {
        ids_ports
            .iter()
            .map(|(id, p)| format!("{id}=127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts `n` nodes (ids 0..n) that form one cluster.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        Self::start_with(n, extra, |_| {}).await
    }

    /// Like [`Cluster::start`], with `prepare` called on each node before
    /// it starts (to set its environment, for example).
    pub async fn start_with(n: u64, extra: &[&str], prepare: impl Fn(&mut Server)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let peers: BTreeMap<u64, u16> = (0..n).map(|i| (i, ports[i as usize].1)).collect();
        let flag = Self::peers_flag(&peers);
        let mut nodes: Vec<Server> = (0..n)
            .map(|i| {
                let (p, pp) = ports[i as usize];
                Server::new(i, p, pp, dir.path(), Some(&flag), extra)
            })
            .collect();
        // Start in reverse order: the bootstrapper last, to show order does not matter.
        for node in nodes.iter_mut().rev() {
            prepare(node);
            node.start();
        }
        let mut c = Cluster { dir, nodes };
        c.wait_all_ready(Duration::from_secs(30)).await;
        c
    }

    /// Waits until every node serves; on timeout, fails with every node's
    /// state and log, since the node that holds a cluster back (one that
    /// exited, or cannot be reached) is rarely the one being waited for.
    pub async fn wait_all_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for node in &self.nodes {
                if !node.is_ready().await {
                    waiting.push(node.id);
                }
            }
            if waiting.is_empty() {
                return;
            }
            if start.elapsed() > timeout {
                let mut report = format!("nodes {waiting:?} not ready within {timeout:?}");
                for node in &mut self.nodes {
                    let state = match node.exited() {
                        Some(status) => format!("exited: {status}"),
                        None => "running".to_string(),
                    };
                    report +=
                        &format!("\n--- node {} ({state}) log:\n{}", node.id, node.log_tail());
                }
                panic!("{report}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of the leader, as the running nodes agree on it.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let mut seen = Vec::new();
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                if let Ok(s) = n.status().await {
                    if s.leader_id == Some(s.node_id) {
                        seen.push(s.node_id);
                    }
                }
            }
            if seen.len() == 1 {
                return seen[0];
            }
            if start.elapsed() > timeout {
                panic!("no single leader within {timeout:?} (leaders seen: {seen:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn node(&self, id: u64) -> &Server {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Server {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }
}

/// libfaketime's multithreaded library, where Debian's `faketime` package
/// puts it (`/usr/lib/<triplet>/faketime/libfaketimeMT.so.1`).
pub fn faketime_library() -> Option<PathBuf> {
    for base in ["/usr/lib", "/usr/local/lib", "/usr/lib64"] {
        let direct = Path::new(base).join("faketime/libfaketimeMT.so.1");
        if direct.exists() {
            return Some(direct);
        }
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let lib = entry.path().join("faketime/libfaketimeMT.so.1");
            if lib.exists() {
                return Some(lib);
            }
        }
    }
    None
}

/// Builders for wire requests.
pub fn global(key: &str) -> LocationType {
    loc(ScopeChoice::Global as i32, "", "", key)
}

pub fn bridge(b: &str, key: &str) -> LocationType {
    loc(ScopeChoice::Bridge as i32, b, "", key)
}

pub fn instance(b: &str, i: &str, key: &str) -> LocationType {
    loc(ScopeChoice::Instance as i32, b, i, key)
}

pub fn loc(scope: i32, b: &str, i: &str, key: &str) -> LocationType {
    LocationType {
        scope: Some(ScopeType {
            r#type: scope,
            bridge: b.into(),
            instance: i.into(),
        }),
        key: key.into(),
    }
}

pub fn save_req(l: LocationType, value: &[u8], ttl: i32) -> SaveRequest {
    SaveRequest {
        location: Some(l),
        ttl,
        value: value.to_vec().into(),
    }
}

pub fn load_req(l: LocationType) -> LoadRequest {
    LoadRequest { location: Some(l) }
}

pub fn delete_req(l: LocationType) -> DeleteRequest {
    DeleteRequest { location: Some(l) }
}

/// Runs a future with a hard time limit, so a hung test fails instead of hanging CI.
pub async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test exceeded its {limit:?} limit"))
}

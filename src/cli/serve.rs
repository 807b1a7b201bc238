//! `eventstore serve`: flags (each also read from `EVENTSTORE_<NAME>`),
//! turned into a [`ServeConfig`], and signal handling.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{DefaultTtls, ExpirySettings, Limits, RaftSettings};
use crate::server::ServeConfig;
use crate::tls::TlsFiles;

/// Flags of `eventstore serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id. Default: the number at the end of the host name
    /// (`eventstore-2` gives 2, as in a StatefulSet), otherwise 0.
    #[arg(long, env = "EVENTSTORE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Client gRPC address.
    #[arg(long, env = "EVENTSTORE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Peer gRPC address (Raft, relays, admin).
    #[arg(long, env = "EVENTSTORE_PEER_LISTEN", default_value = "0.0.0.0:9090")]
    pub peer_listen: SocketAddr,
    /// HTTP address for Prometheus metrics (`/metrics`) and the liveness
    /// and readiness probes (`/healthz`, `/readyz`); `off` disables it.
    #[arg(
        long,
        env = "EVENTSTORE_METRICS_LISTEN",
        default_value = "0.0.0.0:9100"
    )]
    pub metrics_listen: String,
    /// Initial voters, `ID=HOST:PORT,...` (peer ports). Default: this node alone.
    #[arg(long, env = "EVENTSTORE_PEERS")]
    pub peers: Option<String>,
    /// Data directory (database and snapshots). It belongs to one node id
    /// and one cluster; an existing one is checked read-only first, and a
    /// corrupt one is refused and left as it is.
    #[arg(long, env = "EVENTSTORE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// TTL in seconds of Global values saved with ttl=0 (0: never expire).
    #[arg(long, env = "EVENTSTORE_DEFAULT_GLOBAL_TTL", default_value_t = DefaultTtls::default().global_secs)]
    pub default_global_ttl: u64,
    /// TTL in seconds of Bridge values saved with ttl=0 (0: never expire).
    #[arg(long, env = "EVENTSTORE_DEFAULT_BRIDGE_TTL", default_value_t = DefaultTtls::default().bridge_secs)]
    pub default_bridge_ttl: u64,
    /// TTL in seconds of Instance values saved with ttl=0 (0: never expire).
    #[arg(long, env = "EVENTSTORE_DEFAULT_INSTANCE_TTL", default_value_t = DefaultTtls::default().instance_secs)]
    pub default_instance_ttl: u64,
    /// The most client requests (relayed ones included) this node works on
    /// at once; more are refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "EVENTSTORE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// The most MiB of request payload this node holds at once; more is
    /// refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "EVENTSTORE_MAX_IN_FLIGHT_MIB", default_value_t = 64)]
    pub max_in_flight_mib: usize,
    /// MiB of RocksDB block cache (data, index and filter blocks of every
    /// column family). With the 64 MiB of memtables it bounds the memory
    /// the database uses, however many keys are stored.
    #[arg(long, env = "EVENTSTORE_CACHE_MIB", default_value_t = crate::store::db::DEFAULT_CACHE_MIB)]
    pub cache_mib: usize,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "EVENTSTORE_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes)]
    pub max_value_bytes: usize,
    /// Longest key accepted, in bytes.
    #[arg(long, env = "EVENTSTORE_MAX_KEY_BYTES", default_value_t = Limits::default().max_key_bytes)]
    pub max_key_bytes: usize,
    /// Longest bridge name or instance id accepted, in bytes.
    #[arg(long, env = "EVENTSTORE_MAX_NAME_BYTES", default_value_t = Limits::default().max_bridge_bytes)]
    pub max_name_bytes: usize,
    /// Deadline in milliseconds for requests that carry none.
    #[arg(long, env = "EVENTSTORE_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "EVENTSTORE_HEARTBEAT_MS", default_value_t = RaftSettings::default().heartbeat_interval.as_millis() as u64)]
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout in milliseconds.
    #[arg(long, env = "EVENTSTORE_ELECTION_TIMEOUT_MIN_MS", default_value_t = RaftSettings::default().election_timeout_min.as_millis() as u64)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout in milliseconds.
    #[arg(long, env = "EVENTSTORE_ELECTION_TIMEOUT_MAX_MS", default_value_t = RaftSettings::default().election_timeout_max.as_millis() as u64)]
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, env = "EVENTSTORE_SNAPSHOT_EVERY", default_value_t = RaftSettings::default().snapshot_every)]
    pub snapshot_every: u64,
    /// Log entries kept behind the latest snapshot.
    #[arg(long, env = "EVENTSTORE_KEEP_BEHIND_SNAPSHOT", default_value_t = RaftSettings::default().keep_behind_snapshot)]
    pub keep_behind_snapshot: u64,
    /// Abandon (and retry) a snapshot transfer that makes no progress for
    /// this many milliseconds; a transfer as a whole has no time limit.
    #[arg(long, env = "EVENTSTORE_SNAPSHOT_STALL_TIMEOUT_MS", default_value_t = RaftSettings::default().snapshot_stall_timeout.as_millis() as u64)]
    pub snapshot_stall_timeout_ms: u64,
    /// Send snapshots to followers at most this many MiB per second (0: no limit).
    #[arg(long, env = "EVENTSTORE_SNAPSHOT_SEND_RATE_MIB", default_value_t = 0)]
    pub snapshot_send_rate_mib: u64,
    /// How often the leader purges expired values, in milliseconds.
    #[arg(long, env = "EVENTSTORE_PURGE_INTERVAL_MS", default_value_t = ExpirySettings::default().purge_interval.as_millis() as u64)]
    pub purge_interval_ms: u64,
    /// The most expired values one purge entry removes.
    #[arg(long, env = "EVENTSTORE_PURGE_BATCH", default_value_t = ExpirySettings::default().purge_batch)]
    pub purge_batch: u32,
    /// TLS on the client port: PEM certificate chain (with --tls-key).
    #[arg(long, env = "EVENTSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS on the client port: PEM private key of --tls-cert.
    #[arg(long, env = "EVENTSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// mTLS on the client port: PEM CA certificates; clients must present a
    /// certificate that chains to one of them (needs --tls-cert, --tls-key).
    #[arg(long, env = "EVENTSTORE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// mTLS on the peer port: this node's PEM certificate chain, presented
    /// to and by other nodes and `eventstore cluster` (with --peer-tls-key
    /// and --peer-tls-ca; set on every node or on none).
    #[arg(long, env = "EVENTSTORE_PEER_TLS_CERT")]
    pub peer_tls_cert: Option<PathBuf>,
    /// mTLS on the peer port: PEM private key of --peer-tls-cert.
    #[arg(long, env = "EVENTSTORE_PEER_TLS_KEY")]
    pub peer_tls_key: Option<PathBuf>,
    /// mTLS on the peer port: the cluster CA (PEM); every certificate on
    /// the peer port, in either direction, must chain to it.
    #[arg(long, env = "EVENTSTORE_PEER_TLS_CA")]
    pub peer_tls_ca: Option<PathBuf>,
    /// How often the TLS files are re-read, in milliseconds; changed
    /// certificates are used for new connections without a restart.
    #[arg(long, env = "EVENTSTORE_TLS_RELOAD_MS", default_value_t = 5000)]
    pub tls_reload_ms: u64,
}

/// The client port's TLS files from the flags, checking which go together.
fn client_tls_files(args: &ServeArgs) -> anyhow::Result<Option<TlsFiles>> {
    match (&args.tls_cert, &args.tls_key, &args.tls_client_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), ca) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })),
        (None, None, Some(_)) => {
            bail!("--tls-client-ca needs --tls-cert and --tls-key: mTLS is TLS with client certificates")
        }
        _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
    }
}

/// The peer port's TLS files from the flags: all three or none.
fn peer_tls_files(args: &ServeArgs) -> anyhow::Result<Option<TlsFiles>> {
    match (&args.peer_tls_cert, &args.peer_tls_key, &args.peer_tls_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: Some(ca.clone()),
        })),
        _ => bail!(
            "--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together: peer TLS is always \
             mutual, so give all three or none"
        ),
    }
}

/// Parses `ID=HOST:PORT,...`.
pub fn parse_peers(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            bail!("--peers entry {part:?} is not ID=HOST:PORT");
        };
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--peers entry {part:?}: node id must be a number"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            bail!("--peers entry {part:?}: address must be HOST:PORT");
        }
        if peers.insert(id, addr.to_string()).is_some() {
            bail!("--peers lists node id {id} twice");
        }
    }
    if peers.is_empty() {
        bail!("--peers is empty");
    }
    Ok(peers)
}

/// The node id implied by a host name: its trailing number, if any.
pub fn ordinal_of_hostname(host: &str) -> Option<u64> {
    let digits: String = host
        .trim()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if digits.is_empty()
        || !host
            .trim()
            .trim_end_matches(char::is_numeric)
            .ends_with('-')
    {
        return None;
    }
    digits.parse().ok()
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
}

impl ServeArgs {
    /// Builds the node configuration, checking the flags.
    pub fn to_config(&self) -> anyhow::Result<ServeConfig> {
        let node_id = match self.node_id {
            Some(id) => id,
            None => hostname()
                .as_deref()
                .and_then(ordinal_of_hostname)
                .unwrap_or(0),
        };
        let peers = match &self.peers {
            Some(p) => parse_peers(p)?,
            None => BTreeMap::from([(node_id, format!("127.0.0.1:{}", self.peer_listen.port()))]),
        };
        if self.election_timeout_min_ms <= self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            bail!("election timeouts must satisfy heartbeat < min < max");
        }
        if self.purge_batch == 0 {
            bail!("--purge-batch must be at least 1");
        }
        if self.cache_mib == 0 {
            bail!("--cache-mib must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_in_flight_mib == 0 {
            bail!("--max-in-flight and --max-in-flight-mib must be at least 1");
        }
        let metrics_listen = match self.metrics_listen.trim() {
            "off" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|e| {
                anyhow::anyhow!("--metrics-listen must be HOST:PORT or off, not {addr:?}: {e}")
            })?),
        };
        Ok(ServeConfig {
            node_id,
            listen: self.listen,
            peer_listen: self.peer_listen,
            metrics_listen,
            max_in_flight: self.max_in_flight,
            max_in_flight_bytes: self.max_in_flight_mib.saturating_mul(1 << 20),
            cache_bytes: self.cache_mib.saturating_mul(1 << 20),
            peers,
            data_dir: self.data_dir.clone(),
            limits: Limits {
                max_key_bytes: self.max_key_bytes,
                max_bridge_bytes: self.max_name_bytes,
                max_instance_bytes: self.max_name_bytes,
                max_value_bytes: self.max_value_bytes,
            },
            default_ttls: DefaultTtls {
                global_secs: self.default_global_ttl,
                bridge_secs: self.default_bridge_ttl,
                instance_secs: self.default_instance_ttl,
            },
            raft: RaftSettings {
                heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
                election_timeout_min: Duration::from_millis(self.election_timeout_min_ms),
                election_timeout_max: Duration::from_millis(self.election_timeout_max_ms),
                snapshot_every: self.snapshot_every.max(1),
                keep_behind_snapshot: self.keep_behind_snapshot,
                snapshot_stall_timeout: Duration::from_millis(
                    self.snapshot_stall_timeout_ms.max(1000),
                ),
                snapshot_send_rate: (self.snapshot_send_rate_mib > 0)
                    .then(|| self.snapshot_send_rate_mib.saturating_mul(1 << 20)),
            },
            expiry: ExpirySettings {
                purge_interval: Duration::from_millis(self.purge_interval_ms.max(10)),
                purge_batch: self.purge_batch,
            },
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            tls: client_tls_files(self)?,
            peer_tls: peer_tls_files(self)?,
            tls_reload_every: Duration::from_millis(self.tls_reload_ms.max(100)),
        })
    }
}

/// Runs `serve` until SIGTERM or SIGINT; returns the exit code.
pub async fn run(args: ServeArgs) -> i32 {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    match crate::server::run(cfg, shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of_hostname("eventstore-2"), Some(2));
        assert_eq!(ordinal_of_hostname("eventstore-10\n"), Some(10));
        assert_eq!(ordinal_of_hostname("eventstore"), None);
        assert_eq!(ordinal_of_hostname("host42"), None);
    }

    #[test]
    fn peers_parse() {
        let p = parse_peers("0=a:1, 1=b.c:2,2=10.0.0.1:3").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&1], "b.c:2");
        assert!(parse_peers("0=a").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("0=a:1,0=b:2").is_err());
        assert!(parse_peers("").is_err());
    }
}

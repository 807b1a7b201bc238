//! TLS on the two gRPC ports, with rustls (ring).
//!
//! - [`TlsSource`]: one port's certificate, key and CA files, checked at
//!   start (both files readable, the key matching the certificate, the CA
//!   parsing, a peer certificate chaining to the cluster CA) and re-read by
//!   [`watch_files`] when their contents change, so certificates rotated on
//!   disk (Kubernetes updates mounted Secrets in place) are used for new
//!   connections without a restart. A change that does not load (a half
//!   written file, a key of another certificate) keeps the previous
//!   configuration and logs an error.
//! - [`incoming`]: accepts TCP connections and does the TLS handshake with
//!   the port's current configuration, for tonic's `serve_with_incoming`.
//! - [`TlsSource::client_config`]: the client half of peer mTLS: the node's
//!   peer certificate, presented to other nodes, and the cluster CA that
//!   their certificates must chain to.
//! - [`ClientFiles`]: `--ca`, `--cert`, `--key` of the command line and the
//!   Rust client.
//!
//! This module imports nothing else of the crate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How long a connection may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the same refused handshake (same remote address, same reason)
/// is logged again.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Which gRPC port a TLS configuration is for; names the flags in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The client port (`--listen`): `--tls-cert`, `--tls-key`, `--tls-client-ca`.
    Client,
    /// The peer port (`--peer-listen`): `--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`.
    Peer,
}

impl Port {
    /// "client port" or "peer port".
    pub fn name(self) -> &'static str {
        match self {
            Port::Client => "client port",
            Port::Peer => "peer port",
        }
    }

    /// The flags of the certificate, the key and the CA.
    pub fn flags(self) -> [&'static str; 3] {
        match self {
            Port::Client => ["--tls-cert", "--tls-key", "--tls-client-ca"],
            Port::Peer => ["--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca"],
        }
    }
}

/// The files of one port's TLS configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, this node's certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that callers' certificates must chain to. On
    /// the client port optional (mTLS when set); on the peer port required.
    pub ca: Option<PathBuf>,
}

/// What the files held when they were last read.
#[derive(Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

/// The configuration in use, and what the last failed reload said.
struct Loaded {
    material: Material,
    server: Arc<ServerConfig>,
    generation: u64,
    last_error: Option<String>,
}

/// One port's TLS configuration, re-read from its files when they change.
pub struct TlsSource {
    port: Port,
    files: TlsFiles,
    state: RwLock<Loaded>,
}

/// What [`TlsSource::reload`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what is in use (or the same failure as last time).
    Unchanged,
    /// The files changed and the new configuration is in use.
    Reloaded,
    /// The files changed but do not load; the previous configuration stays.
    Failed(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{flag} {}: cannot read it: {e}", path.display()))
}

fn read_material(port: Port, files: &TlsFiles) -> anyhow::Result<Material> {
    let [cert_flag, key_flag, ca_flag] = port.flags();
    Ok(Material {
        cert: read_file(cert_flag, &files.cert)?,
        key: read_file(key_flag, &files.key)?,
        ca: match &files.ca {
            Some(ca) => Some(read_file(ca_flag, ca)?),
            None => None,
        },
    })
}

/// The certificates in a PEM file; at least one.
fn parse_certs(
    flag: &str,
    path: &Path,
    pem: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!("{flag} {}: not a PEM certificate file: {e}", path.display())
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "{flag} {}: no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        );
    }
    Ok(certs)
}

/// The private key in a PEM file.
fn parse_key(flag: &str, path: &Path, pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        anyhow::anyhow!(
            "{flag} {}: no private key in it (expected PEM \"-----BEGIN PRIVATE KEY-----\", \
             RSA or EC): {e}",
            path.display()
        )
    })
}

/// The CA certificates in a PEM file, as trust anchors.
fn parse_roots(flag: &str, path: &Path, pem: &[u8]) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(flag, path, pem)? {
        roots.add(cert).map_err(|e| {
            anyhow::anyhow!(
                "{flag} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// Checks the material and builds the server configuration: the key must
/// match the certificate, the CA must parse, and on the peer port this
/// node's certificate must chain to the CA (it is presented to the other
/// nodes, which check exactly that).
fn server_config(port: Port, files: &TlsFiles, m: &Material) -> anyhow::Result<Arc<ServerConfig>> {
    let [cert_flag, key_flag, ca_flag] = port.flags();
    let certs = parse_certs(cert_flag, &files.cert, &m.cert)?;
    let key = parse_key(key_flag, &files.key, &m.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?;
    let builder = match (&files.ca, &m.ca) {
        (Some(ca_path), Some(ca)) => {
            let roots = parse_roots(ca_flag, ca_path, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("{ca_flag} {}: {e}", ca_path.display()))?;
            if port == Port::Peer {
                verifier
                    .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{cert_flag} {} is not valid for peers under {ca_flag} {}: {e} \
                             (it must be signed by that CA, be current, and allow client \
                             authentication as well as server authentication)",
                            files.cert.display(),
                            ca_path.display()
                        )
                    })?;
            }
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "{key_flag} {} is not the key of the certificate in {cert_flag} {}",
            files.key.display(),
            files.cert.display()
        ),
        e => anyhow::anyhow!(
            "{cert_flag} {} with {key_flag} {}: {e}",
            files.cert.display(),
            files.key.display()
        ),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

impl TlsSource {
    /// Reads and checks `files` for `port`; the error names the flag, the
    /// file and what is wrong with it.
    pub fn load(port: Port, files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        if port == Port::Peer && files.ca.is_none() {
            anyhow::bail!(
                "peer TLS needs --peer-tls-ca, the CA that every node's certificate chains to"
            );
        }
        let material = read_material(port, &files)?;
        let server = server_config(port, &files, &material)?;
        Ok(Arc::new(TlsSource {
            port,
            files,
            state: RwLock::new(Loaded {
                material,
                server,
                generation: 0,
                last_error: None,
            }),
        }))
    }

    /// The port this configuration is for.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The server configuration in use: for each new connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .server
            .clone()
    }

    /// How many times the files were reloaded; changes with every reload.
    pub fn generation(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// The client side for connections to other nodes: this node's
    /// certificate and key, and the CA the other node's certificate must
    /// chain to (for its host name or IP address). With the generation it
    /// was made from.
    pub fn client_config(&self) -> (u64, ClientTlsConfig) {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut config = ClientTlsConfig::new()
            .identity(Identity::from_pem(&s.material.cert, &s.material.key))
            .assume_http2(true);
        if let Some(ca) = &s.material.ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        (s.generation, config)
    }

    /// Re-reads the files; when their contents changed, loads them and uses
    /// them from now on. A change that does not load keeps the previous
    /// configuration (and is reported once, until the files change again).
    pub fn reload(&self) -> Reload {
        let loaded = read_material(self.port, &self.files)
            .and_then(|m| server_config(self.port, &self.files, &m).map(|c| (m, c)));
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok((material, _)) if material == s.material => {
                s.last_error = None;
                Reload::Unchanged
            }
            Ok((material, server)) => {
                s.material = material;
                s.server = server;
                s.generation += 1;
                s.last_error = None;
                Reload::Reloaded
            }
            Err(e) => {
                let e = format!("{e:#}");
                if s.last_error.as_deref() == Some(e.as_str()) {
                    Reload::Unchanged
                } else {
                    s.last_error = Some(e.clone());
                    Reload::Failed(e)
                }
            }
        }
    }
}

/// Re-reads every source's files every `every` until `stop`, and logs each
/// reload and each change that could not be loaded.
pub async fn watch_files(
    sources: Vec<Arc<TlsSource>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if sources.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        for source in &sources {
            let source = source.clone();
            let outcome = tokio::task::spawn_blocking(move || (source.port, source.reload())).await;
            match outcome {
                Ok((port, Reload::Reloaded)) => tracing::info!(
                    "TLS certificate files of the {} changed: new connections use them",
                    port.name()
                ),
                Ok((port, Reload::Failed(e))) => tracing::error!(
                    "TLS certificate files of the {} changed but cannot be used; keeping the \
                     previous ones: {e}",
                    port.name()
                ),
                Ok((_, Reload::Unchanged)) => {}
                Err(e) => tracing::error!("re-reading TLS certificate files failed: {e}"),
            }
        }
    }
}

/// Logs refused handshakes, each remote address and reason at most once
/// every [`REFUSAL_REPORT_EVERY`].
#[derive(Default)]
struct Refusals {
    last: Mutex<HashMap<(IpAddr, String), Instant>>,
}

impl Refusals {
    fn report(&self, port: Port, from: IpAddr, why: String) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|_, at| at.elapsed() < REFUSAL_REPORT_EVERY);
        if last.insert((from, why.clone()), Instant::now()).is_none() {
            tracing::warn!(from = %from, "TLS connection to the {} refused: {why}", port.name());
        }
    }
}

/// Words for a failed server-side handshake.
fn handshake_refusal(port: Port, e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("peer sent no certificates")
        || text.contains("NoCertificatesPresented")
    {
        match port {
            Port::Client => " (the client presented no certificate; --tls-client-ca requires one)",
            Port::Peer => " (the caller presented no certificate: is it a node without --peer-tls-*, or a `cluster` command without --cert/--key?)",
        }
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        match port {
            Port::Client => " (the client's certificate is not from --tls-client-ca)",
            Port::Peer => " (the caller's certificate is not from the cluster CA, --peer-tls-ca)",
        }
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// A stream of TLS connections accepted on `listener` for tonic's
/// `serve_with_incoming`: each connection is handshaken with `source`'s
/// configuration at the time it arrived, in its own task. Connections
/// that fail the handshake (no certificate where one is required, one not
/// from the CA, plaintext HTTP/2) are closed and logged. Stops accepting
/// when `stop` turns true or the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    source: Arc<TlsSource>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let refusals = Arc::new(Refusals::default());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection on the {} failed", source.port.name());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(source.server_config());
            let (tx, refusals, port) = (tx.clone(), refusals.clone(), source.port);
            tokio::spawn(async move {
                // A TLS connection opens with a handshake record (0x16); a
                // plaintext gRPC client opens with the HTTP/2 preface.
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
                if let Ok(Ok(0)) = peeked {
                    // Closed before it said anything: a TCP probe (such as
                    // a Kubernetes tcpSocket startup probe).
                    return;
                }
                if let Ok(Ok(1)) = peeked {
                    if first[0] != 0x16 {
                        let why = match port {
                            Port::Client => "the client speaks plaintext; this port requires TLS (use https:// and --ca)".to_string(),
                            Port::Peer => "the caller speaks plaintext; this port requires TLS: every node needs --peer-tls-cert, --peer-tls-key and --peer-tls-ca, and `eventstore cluster` needs --ca, --cert and --key".to_string(),
                        };
                        refusals.report(port, remote.ip(), why);
                        answer_plaintext(tcp, port).await;
                        return;
                    }
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => refusals.report(port, remote.ip(), handshake_refusal(port, &e)),
                    Err(_) => refusals.report(
                        port,
                        remote.ip(),
                        format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Answers every request of a plaintext HTTP/2 caller of a TLS port with
/// UNAVAILABLE and the reason, so the caller (another node without peer
/// TLS, a client without TLS) reports why instead of a bare broken
/// connection; then closes it. Bounded by [`HANDSHAKE_TIMEOUT`].
async fn answer_plaintext(tcp: TcpStream, port: Port) {
    let message = match port {
        Port::Client => "this port requires TLS: connect with https:// or --ca",
        Port::Peer => {
            "this peer port requires TLS: every node needs --peer-tls-cert, --peer-tls-key \
             and --peer-tls-ca, and `eventstore cluster` needs --ca, --cert and --key"
        }
    };
    let service = hyper::service::service_fn(move |_req| async move {
        Ok::<_, std::convert::Infallible>(
            tonic::Status::unavailable(message).into_http::<tonic::body::Body>(),
        )
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn).await;
}

/// A hint for an error of an outgoing connection to another node's peer
/// port, when it looks like TLS set up differently on the two nodes.
pub fn peer_connection_hint(error: &str) -> Option<&'static str> {
    if error.contains("InvalidContentType") || error.contains("corrupt message") {
        Some("the other node does not speak TLS on its peer port: set --peer-tls-* on every node, or on none")
    } else if error.contains("UnknownIssuer") || error.contains("invalid peer certificate") {
        Some("the other node's certificate is not valid under this node's --peer-tls-ca (another CA, expired, or without this address in its subject alternative names)")
    } else if error.contains("CertificateRequired") || error.contains("certificate required") {
        Some("the other node requires a client certificate: set --peer-tls-* on every node")
    } else if error.contains("DecryptError")
        || error.contains("BadCertificate")
        || error.contains("UnknownCA")
    {
        Some("the other node refused this node's certificate: is it from the cluster CA the other node uses?")
    } else {
        None
    }
}

/// A hint for a client's failed connection to a node that looks like TLS
/// on one side only, or a certificate the other side does not accept;
/// `flags` says what to give for TLS.
pub fn client_connection_hint(error: &str, used_tls: bool, flags: &str) -> Option<String> {
    if !used_tls {
        // A TLS port closes a plaintext connection at once.
        return (error.contains("connection reset")
            || error.contains("connection closed")
            || error.contains("broken pipe")
            || error.contains("h2 protocol error"))
        .then(|| format!("if the node serves TLS on this port, use https:// or {flags}"));
    }
    if error.contains("InvalidContentType") || error.contains("corrupt message") {
        return Some(
            "the node does not serve TLS on this port; leave out https:// and the TLS flags".into(),
        );
    }
    if error.contains("UnknownIssuer") || error.contains("invalid peer certificate") {
        return Some(
            "the node's certificate is not valid under --ca (another CA, expired, or not for \
             this host name)"
                .into(),
        );
    }
    if error.contains("CertificateRequired") || error.contains("certificate required") {
        return Some(format!("the node requires a client certificate: {flags}"));
    }
    if error.contains("UnknownCA")
        || error.contains("BadCertificate")
        || error.contains("DecryptError")
    {
        return Some(format!("the node refused the client certificate: {flags}"));
    }
    if error.contains("connection closed")
        || error.contains("connection reset")
        || error.contains("broken pipe")
        || error.contains("connection was not ready")
    {
        // With TLS 1.3 the client finishes its handshake before the node
        // checks the client certificate, so a refusal shows up as whatever
        // happened to the connection next: closed, reset, a broken pipe, or
        // a connection that never became ready.
        return Some(format!(
            "the node closed the TLS connection: does it accept the client certificate? {flags}"
        ));
    }
    None
}

/// How messages name the client's key flag: `--key` (`health`, `bench`,
/// `cluster`), `--cert-key` (`client`, where `--key` is the value's key).
const KEY_FLAG: &str = "--key/--cert-key";

/// TLS settings of a client of a node (`--ca`, `--cert`, `--key` of the
/// command line, and the Rust client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// PEM CA certificates the server's certificate must chain to (none:
    /// the system's trusted roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM key of that certificate.
    pub key: Option<PathBuf>,
}

impl ClientFiles {
    /// Whether any file is set (then the connection uses TLS).
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Reads and checks the files into tonic's client configuration. The
    /// error names the flag, the file and what is wrong.
    pub fn client_config(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new().assume_http2(true);
        match &self.ca {
            Some(path) => {
                let pem = read_file("--ca", path)?;
                parse_roots("--ca", path, &pem)?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => config = config.with_native_roots(),
        }
        match (&self.cert, &self.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read_file("--cert", cert_path)?;
                let key = read_file(KEY_FLAG, key_path)?;
                let certs = parse_certs("--cert", cert_path, &cert)?;
                let parsed_key = parse_key(KEY_FLAG, key_path, &key)?;
                match rustls::sign::CertifiedKey::from_der(certs, parsed_key, &provider()) {
                    Ok(_) => {}
                    Err(rustls::Error::InconsistentKeys(_)) => anyhow::bail!(
                        "{KEY_FLAG} {} is not the key of the certificate in --cert {}",
                        key_path.display(),
                        cert_path.display()
                    ),
                    Err(e) => anyhow::bail!(
                        "--cert {} with {KEY_FLAG} {}: {e}",
                        cert_path.display(),
                        key_path.display()
                    ),
                }
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => anyhow::bail!("--cert and its key ({KEY_FLAG}) go together: give both or neither"),
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (Issuer::new(params, key), pem)
    }

    fn issue(issuer: &Issuer<'static, KeyPair>) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Every way a refused client certificate reached the CLI in the
    /// tests gets a hint that names the client certificate.
    #[test]
    fn a_refused_client_certificate_gets_a_hint_however_it_shows() {
        for error in [
            "transport error: connection error: received fatal alert: UnknownCA",
            "transport error: connection error: connection reset",
            "transport error: connection error: stream closed because of a broken pipe",
            "operation was canceled: transport error: connection was not ready",
        ] {
            let hint = super::client_connection_hint(error, true, "--cert").unwrap_or_default();
            assert!(hint.contains("client certificate"), "{error}: {hint:?}");
        }
    }

    #[test]
    fn peer_files_reload_when_they_change_and_a_bad_change_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: Some(dir.path().join("ca.crt")),
        };
        let write = |(cert, key): &(String, String)| {
            std::fs::write(&files.cert, cert).unwrap();
            std::fs::write(&files.key, key).unwrap();
        };
        let (cluster, cluster_pem) = ca();
        std::fs::write(files.ca.as_ref().unwrap(), &cluster_pem).unwrap();
        write(&issue(&cluster));
        let source = TlsSource::load(Port::Peer, files.clone()).unwrap();
        assert_eq!(source.reload(), Reload::Unchanged);
        assert_eq!(source.generation(), 0);

        // A certificate from another CA does not load: the old one stays,
        // and the failure is reported once.
        let (other, _) = ca();
        write(&issue(&other));
        match source.reload() {
            Reload::Failed(e) => assert!(e.contains("is not valid for peers"), "{e}"),
            r => panic!("{r:?}"),
        }
        assert_eq!(source.reload(), Reload::Unchanged);
        assert_eq!(source.generation(), 0);

        // A new certificate from the cluster CA is used, by the server and
        // for connections to other nodes (a new generation).
        let before = source.server_config();
        write(&issue(&cluster));
        assert_eq!(source.reload(), Reload::Reloaded);
        assert_eq!(source.generation(), 1);
        assert_eq!(source.client_config().0, 1);
        assert!(!Arc::ptr_eq(&before, &source.server_config()));
    }
}

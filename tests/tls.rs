//! TLS on both ports, against real nodes, with certificates made on the
//! fly by `rcgen`: a round trip over TLS, plaintext refused by a TLS port,
//! clients without a valid certificate refused where mTLS is on, a node
//! with a certificate from another CA that can neither join, nor vote, nor
//! call the admin service, peer TLS on one node only reported in the logs,
//! certificates rotated on disk picked up without a restart, and bad files
//! refused at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use eventstore::client::{Client, Error};
use eventstore::tls::ClientFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const LIMIT: Duration = Duration::from_secs(120);

/// A certificate authority that writes its certificate and the
/// certificates it issues as PEM files.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as files.
#[derive(Clone)]
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes the CA certificate to `dir/NAME.pem`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// Issues a certificate for 127.0.0.1 and localhost, good for servers
    /// and clients, and writes it to `dir/NAME.crt` and `dir/NAME.key`.
    fn issue(&self, dir: &Path, name: &str) -> Issued {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Client files: trust `ca`, present `id` if given.
fn trust(ca: &Path, id: Option<&Issued>) -> ClientFiles {
    ClientFiles {
        ca: Some(ca.to_path_buf()),
        cert: id.map(|i| i.cert.clone()),
        key: id.map(|i| i.key.clone()),
    }
}

/// Runs `eventstore ARGS` with no EVENTSTORE_* variables of the caller.
fn es(args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("EVENTSTORE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("run eventstore")
}

/// Like [`es`] for a command that should exit by itself: killed (and the
/// test failed) if it still runs after `limit`.
fn es_bounded(args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("EVENTSTORE_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run eventstore");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "eventstore {args:?} still ran after {limit:?}: it did not refuse to start; \
                 stderr:\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn log_of(node: &Server) -> String {
    std::fs::read_to_string(&node.log).unwrap_or_default()
}

/// Waits until `node`'s log contains `needle`.
async fn wait_log(node: &Server, needle: &str, limit: Duration) {
    let start = Instant::now();
    while !log_of(node).contains(needle) {
        if start.elapsed() > limit {
            panic!(
                "node {} logged no {needle:?} within {limit:?}; log:\n{}",
                node.id,
                node.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Save then load through the Rust client with `files`.
async fn round_trip(addr: &str, files: &ClientFiles, key: &str) -> Result<Vec<u8>, Error> {
    let client = Client::connect_with_tls(addr, Duration::from_secs(3), files)?;
    client
        .global()
        .save_value(key, key.as_bytes().to_vec(), 60)
        .await?;
    client.global().load_value(key).await
}

#[tokio::test]
async fn client_port_tls_round_trip_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("client CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let other_pem = Ca::new("other CA").write(dir.path(), "other");
    let server = ca.issue(dir.path(), "server");
    let mut node = Server::new(
        0,
        free_port(),
        free_port(),
        dir.path(),
        None,
        &["--tls-cert", &s(&server.cert), "--tls-key", &s(&server.key)],
    );
    node.use_tls(Some(trust(&ca_pem, None)), None);
    node.start();
    bounded(LIMIT, async {
        node.wait_ready(Duration::from_secs(20)).await;
        let addr = node.addr();

        // The Rust client over TLS, by --ca and by an https:// address.
        let files = trust(&ca_pem, None);
        assert_eq!(round_trip(&addr, &files, "a").await.unwrap(), b"a");
        let https = format!("https://{addr}");
        assert_eq!(round_trip(&https, &files, "b").await.unwrap(), b"b");

        // The command line over TLS.
        let ca_arg = s(&ca_pem);
        let out = es(&[
            "client",
            "--server",
            &addr,
            "--ca",
            &ca_arg,
            "--command",
            "save",
            "--key",
            "cli",
            "--value",
            "v1",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = es(&[
            "client",
            "--server",
            &https,
            "--ca",
            &ca_arg,
            "--command",
            "load",
            "--key",
            "cli",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "v1");
        let out = es(&["health", "--server", &addr, "--ca", &ca_arg]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

        // Plaintext to the TLS port fails, and the node says why.
        let plain = Client::connect(&addr, Duration::from_secs(1)).unwrap();
        let e = plain.global().load_value("a").await.unwrap_err();
        assert!(
            matches!(&e, Error::Unavailable(m) if m.contains("this port requires TLS")),
            "{e:?}"
        );
        let out = es(&["health", "--server", &addr, "--timeout", "1s"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        wait_log(
            &node,
            "the client speaks plaintext; this port requires TLS",
            Duration::from_secs(5),
        )
        .await;

        // A client that trusts another CA refuses the server's certificate.
        let out = es(&[
            "client",
            "--server",
            &addr,
            "--ca",
            &s(&other_pem),
            "--command",
            "load",
            "--key",
            "cli",
            "--timeout",
            "1s",
        ]);
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("not valid under --ca"),
            "{}",
            stderr(&out)
        );
    })
    .await;
}

#[tokio::test]
async fn client_port_mtls_refuses_clients_without_a_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("client CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server");
    let good = ca.issue(dir.path(), "good-client");
    let bad = Ca::new("other CA").issue(dir.path(), "bad-client");
    let mut node = Server::new(
        0,
        free_port(),
        free_port(),
        dir.path(),
        None,
        &[
            "--tls-cert",
            &s(&server.cert),
            "--tls-key",
            &s(&server.key),
            "--tls-client-ca",
            &s(&ca_pem),
        ],
    );
    node.use_tls(Some(trust(&ca_pem, Some(&good))), None);
    node.start();
    bounded(LIMIT, async {
        node.wait_ready(Duration::from_secs(20)).await;
        let addr = node.addr();
        assert_eq!(
            round_trip(&addr, &trust(&ca_pem, Some(&good)), "k")
                .await
                .unwrap(),
            b"k"
        );
        // No client certificate.
        let e = round_trip(&addr, &trust(&ca_pem, None), "k")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unavailable(_) | Error::Timeout(_) | Error::Server { .. }
            ),
            "{e:?}"
        );
        wait_log(&node, "presented no certificate", Duration::from_secs(5)).await;
        // A client certificate from another CA.
        let e = round_trip(&addr, &trust(&ca_pem, Some(&bad)), "k")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unavailable(_) | Error::Timeout(_) | Error::Server { .. }
            ),
            "{e:?}"
        );
        wait_log(&node, "not from --tls-client-ca", Duration::from_secs(5)).await;
        // The command line: refused without a certificate, served with one.
        let out = es(&[
            "client",
            "--server",
            &addr,
            "--ca",
            &s(&ca_pem),
            "--command",
            "load",
            "--key",
            "k",
            "--timeout",
            "1s",
        ]);
        assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
        let out = es(&[
            "client",
            "--server",
            &addr,
            "--ca",
            &s(&ca_pem),
            "--cert",
            &s(&good.cert),
            "--cert-key",
            &s(&good.key),
            "--command",
            "load",
            "--key",
            "k",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "k");
        let out = es(&[
            "health",
            "--server",
            &addr,
            "--ca",
            &s(&ca_pem),
            "--cert",
            &s(&good.cert),
            "--key",
            &s(&good.key),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    })
    .await;
}

/// Points `link` at `target` in one step (a new link renamed over the old
/// one), as Kubernetes swaps the files of a mounted Secret.
fn swap_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("swap");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (old_pem, new_pem) = (
        old_ca.write(dir.path(), "old"),
        new_ca.write(dir.path(), "new"),
    );
    let old = old_ca.issue(dir.path(), "old-server");
    let new = new_ca.issue(dir.path(), "new-server");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    swap_link(&cert, &old.cert);
    swap_link(&key, &old.key);
    let mut node = Server::new(
        0,
        free_port(),
        free_port(),
        dir.path(),
        None,
        &[
            "--tls-cert",
            &s(&cert),
            "--tls-key",
            &s(&key),
            "--tls-reload-ms",
            "200",
        ],
    );
    node.use_tls(Some(trust(&old_pem, None)), None);
    node.start();
    bounded(LIMIT, async {
        node.wait_ready(Duration::from_secs(20)).await;
        let addr = node.addr();
        let (trust_old, trust_new) = (trust(&old_pem, None), trust(&new_pem, None));
        assert_eq!(round_trip(&addr, &trust_old, "a").await.unwrap(), b"a");
        assert!(round_trip(&addr, &trust_new, "a").await.is_err());

        // Half a rotation (the new key, the old certificate) does not load:
        // the node keeps the old pair and says so.
        swap_link(&key, &new.key);
        wait_log(
            &node,
            "cannot be used; keeping the previous ones",
            Duration::from_secs(10),
        )
        .await;
        assert!(
            log_of(&node).contains("is not the key of the certificate"),
            "{}",
            node.log_tail()
        );
        assert_eq!(round_trip(&addr, &trust_old, "b").await.unwrap(), b"b");

        // The rest of it: new connections get the new certificate.
        swap_link(&cert, &new.cert);
        let start = Instant::now();
        loop {
            if let Ok(v) = round_trip(&addr, &trust_new, "c").await {
                assert_eq!(v, b"c");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the new certificate was not served within 10 s; log:\n{}",
                node.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "new certificate served {:?} after the swap",
            start.elapsed()
        );
        assert!(
            log_of(&node).contains("new connections use them"),
            "{}",
            node.log_tail()
        );
        assert!(round_trip(&addr, &trust_old, "d").await.is_err());
    })
    .await;
}

#[tokio::test]
async fn missing_unreadable_or_mismatched_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let one = ca.issue(dir.path(), "one");
    let two = ca.issue(dir.path(), "two");
    let foreign = Ca::new("another CA").issue(dir.path(), "foreign");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let (c1, k1, k2) = (s(&one.cert), s(&one.key), s(&two.key));
    let (ca_s, garbage_s, missing_s) = (s(&ca_pem), s(&garbage), s(&missing));
    let (fc, fk) = (s(&foreign.cert), s(&foreign.key));
    let cases: Vec<(&str, Vec<&str>, i32, Vec<&str>)> = vec![
        (
            "cert without key",
            vec!["--tls-cert", &c1],
            2,
            vec!["--tls-cert and --tls-key go together"],
        ),
        (
            "client CA without cert",
            vec!["--tls-client-ca", &ca_s],
            2,
            vec!["--tls-client-ca needs --tls-cert and --tls-key"],
        ),
        (
            "missing certificate",
            vec!["--tls-cert", &missing_s, "--tls-key", &k1],
            1,
            vec!["--tls-cert", &missing_s, "cannot read it", "No such file"],
        ),
        (
            "key of another certificate",
            vec!["--tls-cert", &c1, "--tls-key", &k2],
            1,
            vec![
                "--tls-key",
                &k2,
                "is not the key of the certificate in --tls-cert",
                &c1,
            ],
        ),
        (
            "client CA that is no certificate",
            vec![
                "--tls-cert",
                &c1,
                "--tls-key",
                &k1,
                "--tls-client-ca",
                &garbage_s,
            ],
            1,
            vec!["--tls-client-ca", &garbage_s, "no certificate in it"],
        ),
        (
            "peer TLS without a CA",
            vec!["--peer-tls-cert", &c1, "--peer-tls-key", &k1],
            2,
            vec!["give all three or none"],
        ),
        (
            "peer key that is no key",
            vec![
                "--peer-tls-cert",
                &c1,
                "--peer-tls-key",
                &garbage_s,
                "--peer-tls-ca",
                &ca_s,
            ],
            1,
            vec!["--peer-tls-key", &garbage_s, "no private key in it"],
        ),
        (
            "peer certificate from another CA",
            vec![
                "--peer-tls-cert",
                &fc,
                "--peer-tls-key",
                &fk,
                "--peer-tls-ca",
                &ca_s,
            ],
            1,
            vec![
                "--peer-tls-cert",
                &fc,
                "is not valid for peers under --peer-tls-ca",
                &ca_s,
            ],
        ),
    ];
    for (what, flags, code, fragments) in cases {
        let data = dir.path().join(format!("data-{}", what.replace(' ', "-")));
        let listen = format!("127.0.0.1:{}", free_port());
        let peer_listen = format!("127.0.0.1:{}", free_port());
        let data_s = s(&data);
        let mut args = vec![
            "serve",
            "--listen",
            listen.as_str(),
            "--peer-listen",
            peer_listen.as_str(),
            "--metrics-listen",
            "off",
            "--data-dir",
            data_s.as_str(),
        ];
        args.extend(flags.iter().copied());
        let out = es_bounded(&args, Duration::from_secs(20));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{what}: {err}");
        for f in fragments {
            assert!(err.contains(f), "{what}: {f:?} not in {err}");
        }
        assert!(!data.exists(), "{what}: the data directory was created");
    }
}

/// Flags of a node with peer mTLS from `id`, under `ca`.
fn peer_flags(id: &Issued, ca: &Path) -> Vec<String> {
    vec![
        "--peer-tls-cert".into(),
        s(&id.cert),
        "--peer-tls-key".into(),
        s(&id.key),
        "--peer-tls-ca".into(),
        s(ca),
    ]
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_can_neither_join_nor_vote_nor_administer() {
    use eventstore::proto::peer::raft_peer_client::RaftPeerClient;
    use eventstore::proto::peer::RaftPayload;
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let ca_pem = ca.write(certs.path(), "ca");
    let node_id = ca.issue(certs.path(), "node");
    let admin = ca.issue(certs.path(), "admin");
    let rogue_ca = Ca::new("rogue CA");
    let rogue_ca_pem = rogue_ca.write(certs.path(), "rogue-ca");
    let rogue = rogue_ca.issue(certs.path(), "rogue");

    let flags = peer_flags(&node_id, &ca_pem);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let operator = trust(&ca_pem, Some(&admin));
    let c = Cluster::start_with(3, &flags, |n| n.use_tls(None, Some(operator.clone()))).await;
    bounded(LIMIT, async {
        // The cluster formed over mTLS; a follower relays over it too.
        let leader = c.leader(Duration::from_secs(10)).await;
        let term = c.node(leader).status().await.unwrap().term;
        let follower = (0..3).find(|i| *i != leader).unwrap();
        c.node(follower)
            .client()
            .await
            .save(save_req(global("relayed"), b"r", 60))
            .await
            .unwrap();
        let got = c
            .node(leader)
            .client()
            .await
            .load(load_req(global("relayed")))
            .await
            .unwrap();
        assert_eq!(got.into_inner().value, b"r".to_vec());

        // The admin service: the operator's certificate from the cluster CA
        // is served; no certificate, or one from another CA, is refused.
        let leader_peer = c.node(leader).peer_addr();
        let (ca_s, admin_c, admin_k) = (s(&ca_pem), s(&admin.cert), s(&admin.key));
        let (rogue_c, rogue_k) = (s(&rogue.cert), s(&rogue.key));
        let out = es(&[
            "cluster",
            "status",
            "--server",
            &leader_peer,
            "--ca",
            &ca_s,
            "--cert",
            &admin_c,
            "--key",
            &admin_k,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("leader:    {leader}")),
            "{}",
            stdout(&out)
        );
        let out = es(&[
            "cluster",
            "status",
            "--server",
            &leader_peer,
            "--timeout",
            "2s",
        ]);
        assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
        wait_log(
            c.node(leader),
            "the caller speaks plaintext",
            Duration::from_secs(5),
        )
        .await;
        let out = es(&[
            "cluster",
            "status",
            "--server",
            &leader_peer,
            "--ca",
            &ca_s,
            "--cert",
            &rogue_c,
            "--key",
            &rogue_k,
            "--timeout",
            "2s",
        ]);
        assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
        // TLS 1.3 reports the refused certificate either as the node's
        // UnknownCA alert or as a closed connection, whichever the client
        // sees first; each gets its hint, and both name the certificate.
        let err = stderr(&out);
        assert!(
            err.contains("the node refused the client certificate")
                || err.contains("does it accept the client certificate?"),
            "{err}"
        );
        wait_log(
            c.node(leader),
            "not from the cluster CA",
            Duration::from_secs(5),
        )
        .await;

        // Raft RPCs: with the cluster's certificate a message reaches the
        // Raft service (which refuses it for naming node 99); with the
        // rogue's certificate it never gets past the handshake.
        let vote = RaftPayload {
            target: 99,
            payload: vec![0; 8],
            incarnation: 0,
            cluster_id: 0,
            sender: 0,
        };
        let legit = c.node(leader).peer_endpoint().connect_lazy();
        let st = RaftPeerClient::new(legit)
            .vote(vote.clone())
            .await
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
        let rogue_files = trust(&ca_pem, Some(&rogue));
        let ch = eventstore::client::endpoint(&format!("https://{leader_peer}"), &rogue_files)
            .unwrap()
            .connect_lazy();
        let st = RaftPeerClient::new(ch).vote(vote).await.unwrap_err();
        assert_ne!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
        assert!(!st.message().contains("node 99"), "{st:?}");

        // A node with the rogue CA's certificate, added by the operator,
        // never joins: the leader cannot replicate to it.
        let (rogue_port, rogue_peer_port) = (free_port(), free_port());
        let mut peers = std::collections::BTreeMap::new();
        for n in &c.nodes {
            peers.insert(n.id, n.peer_port);
        }
        peers.insert(3, rogue_peer_port);
        let rogue_flags = peer_flags(&rogue, &rogue_ca_pem);
        let rogue_flags: Vec<&str> = rogue_flags.iter().map(String::as_str).collect();
        let mut intruder = Server::new(
            3,
            rogue_port,
            rogue_peer_port,
            c.dir.path(),
            Some(&Cluster::peers_flag(&peers)),
            &rogue_flags,
        );
        intruder.use_tls(None, Some(trust(&rogue_ca_pem, Some(&rogue))));
        intruder.start();
        let rogue_addr = intruder.peer_addr();
        let out = es(&[
            "cluster",
            "add-learner",
            "--server",
            &leader_peer,
            "--ca",
            &ca_s,
            "--cert",
            &admin_c,
            "--key",
            &admin_k,
            "--node-id",
            "3",
            "--addr",
            &rogue_addr,
            "--timeout",
            "4s",
        ]);
        assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
        wait_log(
            c.node(leader),
            "certificate is not valid under this node's --peer-tls-ca",
            Duration::from_secs(10),
        )
        .await;
        let seen = intruder.status().await.unwrap();
        assert_eq!(seen.last_log_index, None, "{seen:?}");
        assert_eq!(seen.leader_id, None, "{seen:?}");
        let out = es(&[
            "cluster",
            "remove",
            "--server",
            &leader_peer,
            "--ca",
            &ca_s,
            "--cert",
            &admin_c,
            "--key",
            &admin_k,
            "--node-id",
            "3",
            "--timeout",
            "10s",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

        // The three nodes kept working, under the same leader and term.
        c.node(follower)
            .client()
            .await
            .save(save_req(global("after"), b"a", 60))
            .await
            .unwrap();
        let after = c.node(leader).status().await.unwrap();
        assert_eq!(
            (after.leader_id, after.term),
            (Some(leader), term),
            "{after:?}"
        );
        for n in &c.nodes {
            assert!(n.is_ready().await, "node {} not ready", n.id);
        }
    })
    .await;
}

#[tokio::test]
async fn peer_tls_on_some_nodes_only_is_reported_not_silent() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let ca_pem = ca.write(certs.path(), "ca");
    let id = ca.issue(certs.path(), "node");
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let peers: std::collections::BTreeMap<u64, u16> =
        (0..3).map(|i| (i, ports[i as usize].1)).collect();
    let peers = Cluster::peers_flag(&peers);
    let tls = peer_flags(&id, &ca_pem);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    // Nodes 0 (the bootstrapper) and 1 with peer TLS, node 2 without.
    let mut nodes: Vec<Server> = (0..3u64)
        .map(|i| {
            let extra: &[&str] = if i < 2 { &tls } else { &[] };
            Server::new(
                i,
                ports[i as usize].0,
                ports[i as usize].1,
                dir.path(),
                Some(&peers),
                extra,
            )
        })
        .collect();
    for n in nodes.iter_mut() {
        n.start();
    }
    bounded(LIMIT, async {
        // Node 0 cannot hear from node 2 and says why; no cluster forms.
        wait_log(
            &nodes[0],
            "does not speak TLS on its peer port",
            Duration::from_secs(20),
        )
        .await;
        assert!(!nodes[0].is_ready().await);
        // A plaintext caller (here the command line without TLS flags) is
        // refused by a TLS node, which names the flags to set.
        let out = es(&[
            "cluster",
            "status",
            "--server",
            &nodes[1].peer_addr(),
            "--timeout",
            "2s",
        ]);
        assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
        wait_log(
            &nodes[1],
            "every node needs --peer-tls-cert",
            Duration::from_secs(5),
        )
        .await;
    })
    .await;
}

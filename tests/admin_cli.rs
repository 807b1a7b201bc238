//! The command line as a user runs it against real nodes: health that
//! follows the quorum, a removed node that knows it, admin commands that
//! wait for what they promise and refuse what they cannot do, errors that
//! name the address and the port to use, and environment variables.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `eventstore ARGS` with no EVENTSTORE_* variables of the caller,
/// plus `env`.
fn es_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("EVENTSTORE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run eventstore")
}

fn es(args: &[&str]) -> Output {
    es_env(args, &[])
}

/// `eventstore cluster VERB --server SERVER --node-id NODE`.
fn cluster_cmd(verb: &str, server: &str, node: &str) -> Output {
    es(&["cluster", verb, "--server", server, "--node-id", node])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `eventstore health` until its exit code is `want`; returns how long it took.
fn health_until(addr: &str, want: i32, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let out = es(&["health", "--server", addr, "--timeout", "1s"]);
        if out.status.code() == Some(want) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!(
                "health of {addr} did not exit {want} within {limit:?}: {:?} {} {}",
                out.status.code(),
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn health_follows_the_quorum_and_client_reports_the_last_reason() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let addr = c.node(leader).addr();
        let out = es(&["health", "--server", &addr]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "SERVING");

        // Stop both followers: the leader still calls itself leader, but
        // no quorum acknowledges it once its lease (640 ms here) lapses.
        let followers: Vec<u64> = c
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| *id != leader)
            .collect();
        for f in &followers {
            c.node_mut(*f).kill9();
        }
        let took = health_until(&addr, 1, Duration::from_secs(5));
        println!("NOT_SERVING {took:?} after the followers were killed (lease 640 ms)");
        assert!(
            took < Duration::from_millis(1200),
            "health turned NOT_SERVING only after {took:?}"
        );
        let out = es(&["health", "--server", &addr]);
        assert_eq!(stdout(&out).trim(), "NOT_SERVING");
        let out = es(&["cluster", "status", "--server", &c.node(leader).peer_addr()]);
        assert!(
            stdout(&out).contains("NOT_SERVING: leader without a quorum"),
            "{}",
            stdout(&out)
        );

        // A client gives up after its timeout with the server's reason.
        let start = Instant::now();
        let out = es(&[
            "client",
            "--server",
            &addr,
            "--command",
            "save",
            "--key",
            "k",
            "--value",
            "v",
            "--timeout",
            "2s",
        ]);
        println!(
            "client without quorum: {:?} after {:?}: {}",
            out.status.code(),
            start.elapsed(),
            stderr(&out).trim()
        );
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach a quorum"),
            "the client did not print the server's reason: {}",
            stderr(&out)
        );

        // Back with a quorum: SERVING again.
        let restarted = Instant::now();
        for f in &followers {
            c.node_mut(*f).start();
        }
        let took = health_until(&addr, 0, Duration::from_secs(20));
        println!(
            "SERVING again {took:?} after the followers were restarted ({:?} in all)",
            restarted.elapsed()
        );
        for f in &followers {
            c.node(*f).wait_ready(Duration::from_secs(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_removed_node_knows_it_refuses_clients_and_never_campaigns() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let removed = c
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != leader)
            .unwrap();
        let out = cluster_cmd("remove", &c.node(leader).peer_addr(), &removed.to_string());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

        // It learns it was removed, and says so.
        let start = Instant::now();
        let status = loop {
            let out = es(&[
                "cluster",
                "status",
                "--server",
                &c.node(removed).peer_addr(),
            ]);
            if stdout(&out).contains("Removed") {
                break stdout(&out);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {removed} does not know it was removed: {}\n{}",
                stdout(&out),
                c.node(removed).log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "node {removed} knew it was removed {:?} after the removal:\n{status}",
            start.elapsed()
        );
        assert!(
            status.contains("this node was removed from the cluster; stop it"),
            "{status}"
        );
        assert!(status.contains("health:    NOT_SERVING"), "{status}");
        let out = es(&["health", "--server", &c.node(removed).addr()]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stdout(&out).trim(), "NOT_SERVING");
        let out = es(&[
            "client",
            "--server",
            &c.node(removed).addr(),
            "--command",
            "save",
            "--key",
            "k",
            "--value",
            "v",
            "--timeout",
            "2s",
        ]);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr(&out).contains("this node was removed from the cluster; stop it"),
            "{}",
            stderr(&out)
        );

        // It never campaigns: no term moves, the leader stays.
        let before_removed = c.node(removed).status().await.unwrap().term;
        let before_leader = c.node(leader).status().await.unwrap().term;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = c.node(removed).status().await.unwrap();
        assert_eq!(s.term, before_removed, "the removed node campaigned: {s:?}");
        let s = c.node(leader).status().await.unwrap();
        assert_eq!(s.term, before_leader, "{s:?}");
        assert_eq!(s.leader_id, Some(leader), "{s:?}");

        // The same id can be reused: an empty data directory, added back.
        c.node_mut(removed).kill9();
        std::fs::remove_dir_all(&c.node(removed).data_dir).unwrap();
        let earlier = std::fs::read(&c.node(removed).log).unwrap().len();
        c.node_mut(removed).start();
        let out = es(&[
            "cluster",
            "add-learner",
            "--server",
            &c.node(leader).peer_addr(),
            "--node-id",
            &removed.to_string(),
            "--addr",
            &c.node(removed).peer_addr(),
            "--timeout",
            "30s",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = cluster_cmd("promote", &c.node(leader).peer_addr(), &removed.to_string());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        c.node(removed).wait_ready(Duration::from_secs(20)).await;
        let out = es(&["health", "--server", &c.node(removed).addr()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        // Catching up through the memberships of its first life and its
        // removal is not taken for a removal.
        let log = String::from_utf8_lossy(&std::fs::read(&c.node(removed).log).unwrap()[earlier..])
            .to_string();
        assert!(!log.contains("removed from the cluster"), "{log}");
    })
    .await;
}

#[tokio::test]
async fn transfer_leader_and_add_learner_wait_and_refuse_with_reasons() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        let admin = c.node(leader).peer_addr();
        let mut cl = c.node(leader).client().await;
        for i in 0..200 {
            cl.save(save_req(global(&format!("k{i}")), &[7u8; 512], 600))
                .await
                .unwrap();
        }

        // Refusals: not a member, already the leader.
        let out = cluster_cmd("transfer-leader", &admin, "7");
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr(&out).contains("node 7 is not a member"),
            "{}",
            stderr(&out)
        );
        let out = cluster_cmd("transfer-leader", &admin, &leader.to_string());
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr(&out).contains("already the leader"),
            "{}",
            stderr(&out)
        );

        // add-learner returns once the learner holds what the leader held.
        let held = c
            .node(leader)
            .status()
            .await
            .unwrap()
            .last_log_index
            .unwrap();
        let (id, p, pp) = (3u64, free_port(), free_port());
        let mut peers: std::collections::BTreeMap<u64, u16> =
            c.nodes.iter().map(|n| (n.id, n.peer_port)).collect();
        peers.insert(id, pp);
        let mut s = Server::new(
            id,
            p,
            pp,
            c.dir.path(),
            Some(&Cluster::peers_flag(&peers)),
            &[],
        );
        s.start();
        c.nodes.push(s);
        let out = es(&[
            "cluster",
            "add-learner",
            "--server",
            &admin,
            "--node-id",
            "3",
            "--addr",
            &c.node(3).peer_addr(),
            "--json",
            "--timeout",
            "30s",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let members: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let learner = members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == 3)
            .unwrap_or_else(|| panic!("{members}"));
        assert_eq!(learner["voter"], false, "{members}");
        assert!(
            learner["matched"].as_u64().unwrap_or(0) >= held,
            "add-learner returned before the learner caught up (held {held}): {members}"
        );

        let log = std::fs::read_to_string(&c.node(3).log).unwrap();
        assert!(!log.contains("removed from the cluster"), "{log}");

        // A learner cannot lead.
        let out = cluster_cmd("transfer-leader", &admin, "3");
        assert_ne!(out.status.code(), Some(0));
        assert!(stderr(&out).contains("not a voter"), "{}", stderr(&out));

        // A voter: the command returns once it leads, with the state after.
        let to = c
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != leader && *id != 3)
            .unwrap();
        let start = Instant::now();
        let out = cluster_cmd("transfer-leader", &admin, &to.to_string());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        println!(
            "transfer-leader took {:?}:\n{}",
            start.elapsed(),
            stdout(&out)
        );
        assert!(
            stdout(&out).contains(&format!("leader:    {to}")),
            "{}",
            stdout(&out)
        );
        let s = c.node(to).status().await.unwrap();
        assert_eq!(s.leader_id, Some(to), "{s:?}");

        // A voter that is down (for longer than the lease): refused, and
        // the leader stays.
        let down = c
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != to && *id != 3)
            .unwrap();
        c.node_mut(down).kill9();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let out = es(&[
            "cluster",
            "transfer-leader",
            "--server",
            &c.node(to).peer_addr(),
            "--node-id",
            &down.to_string(),
            "--timeout",
            "3s",
        ]);
        println!(
            "transfer to a stopped voter: {:?} {}",
            out.status.code(),
            stderr(&out).trim()
        );
        assert_ne!(out.status.code(), Some(0));
        assert!(stderr(&out).contains("is it running?"), "{}", stderr(&out));
        assert_eq!(c.leader(Duration::from_secs(10)).await, to);
    })
    .await;
}

#[tokio::test]
async fn errors_name_the_address_and_the_port_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &["--max-value-bytes", "1000"]);
    s.wait_ready(Duration::from_secs(30)).await;

    // The client port where the peer port is needed, and the reverse.
    let out = es(&["cluster", "status", "--server", &s.addr()]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains(&s.addr()) && e.contains("client port") && e.contains("peer port"),
        "{e}"
    );
    let out = es(&["health", "--server", &s.peer_addr()]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains(&s.peer_addr())
            && e.contains("is a node's peer port")
            && e.contains("client port"),
        "{e}"
    );
    let out = es(&[
        "client",
        "--server",
        &s.peer_addr(),
        "--command",
        "load",
        "--key",
        "k",
    ]);
    assert!(stderr(&out).contains("peer port"), "{}", stderr(&out));

    // Nothing listening.
    let closed = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["cluster", "status", "--server", &closed],
        vec!["health", "--server", &closed],
        vec![
            "client",
            "--server",
            &closed,
            "--command",
            "load",
            "--key",
            "k",
            "--timeout",
            "1s",
        ],
    ] {
        let out = es(&args);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr(&out).contains(&format!("connection refused to {closed}")),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // bench against the wrong port says what the errors are.
    let out = es(&[
        "bench",
        "--server",
        &s.peer_addr(),
        "--duration",
        "300ms",
        "--concurrency",
        "2",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let e = stderr(&out);
    assert!(
        e.contains("UNIMPLEMENTED") && e.contains("peer port"),
        "{e}"
    );

    // Exit codes: a bad scheme is bad usage (2); a value over the
    // transport limit is OUT_OF_RANGE (4).
    let out = es(&[
        "client",
        "--server",
        "ftp://127.0.0.1:1",
        "--command",
        "load",
        "--key",
        "k",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 5 << 20]).unwrap();
    let out = es(&[
        "client",
        "--server",
        &s.addr(),
        "--command",
        "save",
        "--key",
        "k",
        "--value-file",
        big.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // Names a scope does not take: refused before sending, exit 2.
    let addr = s.addr();
    for scope in [
        &["--scope", "Global", "--bridge", "gb", "--instance", "gi"][..],
        &["--scope", "Global", "--bridge", "gb"][..],
        &["--scope", "Bridge", "--bridge", "b", "--instance", "i"][..],
    ] {
        let mut args = vec![
            "client",
            "--server",
            &addr,
            "--command",
            "save",
            "--key",
            "gk",
            "--value",
            "v",
        ];
        args.extend_from_slice(scope);
        let out = es(&args);
        assert_eq!(out.status.code(), Some(2), "{scope:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("takes no"), "{}", stderr(&out));
    }

    // A host alone gets the command's default port.
    let out = es(&[
        "cluster",
        "status",
        "--server",
        "127.0.0.1",
        "--timeout",
        "1s",
    ]);
    assert!(
        out.status.success() || stderr(&out).contains("127.0.0.1:9090"),
        "{}",
        stderr(&out)
    );
    let out = es(&[
        "client",
        "--server",
        "127.0.0.1",
        "--command",
        "load",
        "--key",
        "k",
        "--timeout",
        "1s",
    ]);
    assert!(
        out.status.code() == Some(3) || stderr(&out).contains("127.0.0.1:8080"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn every_subcommand_reads_the_server_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let env = [
        ("EVENTSTORE_SERVER", s.addr()),
        ("EVENTSTORE_ADMIN_SERVER", s.peer_addr()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = es_env(&["health"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = es_env(
        &["client", "--command", "save", "--key", "k", "--value", "v"],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = es_env(&["cluster", "status"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = es_env(
        &[
            "bench",
            "--duration",
            "200ms",
            "--concurrency",
            "2",
            "--phases",
            "save",
        ],
        &env,
    );
    assert!(
        stdout(&out).contains(&s.addr()),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // bench prints the README's table, column for column.
    let header =
        "| setup | phase | ops/s | p50 ms | p99 ms | ops/s vs baseline | p50 vs baseline |";
    assert!(stdout(&out).contains(header), "{}", stdout(&out));
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(header),
        "the README's Benchmarks table has other columns"
    );
}

#[tokio::test]
async fn a_refused_start_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // An id that --peers does not list.
    let data = dir.path().join("unlisted");
    let out = es(&[
        "serve",
        "--node-id",
        "5",
        "--peers",
        "0=127.0.0.1:1",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--peer-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("does not list this node's id 5"),
        "{}",
        stderr(&out)
    );
    assert!(!data.exists(), "a refused start created {}", data.display());
    // A busy port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let data = dir.path().join("busy");
    let out = es(&[
        "serve",
        "--listen",
        &busy.local_addr().unwrap().to_string(),
        "--peer-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!data.exists(), "a refused start created {}", data.display());
}

#[tokio::test]
async fn reflection_lists_only_what_each_port_serves() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    for (addr, want, never) in [
        (s.addr(), "protob.EventStore", "eventstore.peer"),
        (s.peer_addr(), "eventstore.peer.Admin", "protob.EventStore"),
    ] {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("{answer:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == want), "{addr}: {names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with(never)),
            "{addr}: {names:?}"
        );
    }
}

#[tokio::test]
async fn the_leader_gives_the_full_reason_for_a_wiped_node_once() {
    let mut c = Cluster::start(3, &[]).await;
    bounded(LIMIT, async {
        let leader = c.leader(Duration::from_secs(10)).await;
        // Wait until every member's incarnation is on record.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let wiped = c
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != leader)
            .unwrap();
        c.node_mut(wiped).kill9();
        std::fs::remove_dir_all(&c.node(wiped).data_dir).unwrap();
        let earlier = std::fs::read(&c.node(leader).log).unwrap().len();
        c.node_mut(wiped).start();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let log = String::from_utf8_lossy(&std::fs::read(&c.node(leader).log).unwrap()[earlier..])
            .to_string();
        // The full reason once; openraft's own lines carry only a one-line
        // summary.
        let full = log
            .lines()
            .filter(|l| l.contains("its data was lost"))
            .count();
        let short = log
            .lines()
            .filter(|l| l.contains(&format!("node {wiped} lost its data; replace it")))
            .count();
        let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
        println!(
            "in 8 s: {full} line(s) with the full reason, {short} one-line summaries, \
             {warnings} WARN lines in all"
        );
        for l in log.lines().filter(|l| l.contains(" WARN ")) {
            println!("  {l}");
        }
        assert_eq!(full, 1, "{log}");
        // The leader backs off from the node (1 s doubling) and lets
        // openraft's heartbeat warning through once a minute.
        assert!(warnings <= 8, "{log}");
        let wlog = c.node(wiped).log_tail();
        assert!(
            wlog.contains("Reusing a node id: remove the old member"),
            "{wlog}"
        );
    })
    .await;
}

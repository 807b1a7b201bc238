//! `eventstore client` against a real server: the original example
//! client's flags, all three scopes, binary values, and exit codes.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn client(server: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("client")
        .args(["--server", server])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn save_load_delete_in_all_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let forms = [
        s.addr(),
        format!("http://{}", s.addr()),
        format!("dns:///{}", s.addr()),
    ];
    let scopes: [&[&str]; 3] = [
        &["--scope", "Global"],
        &["--scope", "Bridge", "--bridge", "b"],
        &["--scope", "Instance", "--bridge", "b", "--instance", "i"],
    ];
    for (n, scope) in scopes.iter().enumerate() {
        let server = &forms[n];
        let value = format!("value-{n}");
        let mut args = vec![
            "--command",
            "save",
            "--key",
            "k",
            "--value",
            &value,
            "--ttl",
            "60",
        ];
        args.extend_from_slice(scope);
        let out = client(server, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut args = vec!["--command", "load", "--key", "k"];
        args.extend_from_slice(scope);
        let out = client(server, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, value.as_bytes());

        let mut args = vec!["--command", "delete", "--key", "k"];
        args.extend_from_slice(scope);
        assert!(client(server, &args).status.success());

        let mut args = vec!["--command", "load", "--key", "k"];
        args.extend_from_slice(scope);
        let out = client(server, &args);
        assert_eq!(out.status.code(), Some(3), "NOT_FOUND has exit code 3");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    }
}

#[tokio::test]
async fn binary_values_from_stdin_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let bytes: Vec<u8> = (0..=255u8).rev().chain([0u8, 10, 13]).collect();

    let mut child = Command::new(binary())
        .args([
            "client",
            "--server",
            &s.addr(),
            "--command",
            "save",
            "--key",
            "bin",
            "--value-file",
            "-",
            "--ttl",
            "60",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert!(child.wait().unwrap().success());
    let out = client(&s.addr(), &["--command", "load", "--key", "bin"]);
    assert_eq!(out.stdout, bytes);

    let file = dir.path().join("value.bin");
    std::fs::write(&file, &bytes[..100]).unwrap();
    let out = client(
        &s.addr(),
        &[
            "--command",
            "save",
            "--key",
            "file",
            "--value-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        client(&s.addr(), &["--command", "load", "--key", "file"]).stdout,
        &bytes[..100]
    );
}

#[tokio::test]
async fn exit_codes_tell_failures_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    // Invalid argument (checked before sending): 4.
    let out = client(
        &s.addr(),
        &["--command", "load", "--scope", "Bridge", "--key", "k"],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bridge"));
    // Negative TTL: 4.
    let out = client(
        &s.addr(),
        &[
            "--command",
            "save",
            "--key",
            "k",
            "--value",
            "v",
            "--ttl",
            "-3",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    // Save without a value: usage, 2.
    let out = client(&s.addr(), &["--command", "save", "--key", "k"]);
    assert_eq!(out.status.code(), Some(2));
    // Nobody listening: unavailable, 5, within the timeout (plus the
    // process's start).
    let start = std::time::Instant::now();
    let out = client(
        &format!("127.0.0.1:{}", free_port()),
        &["--command", "load", "--key", "k", "--timeout", "1s"],
    );
    let took = start.elapsed();
    eprintln!("a 1 s timeout with nobody listening took {took:?}");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It retries with backoff (25 ms doubling) while the next wait fits
    // in the timeout: 775 ms of waits, then gives up.
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1500),
        "a 1 s timeout took {took:?}"
    );
    // Health of a running node.
    let out = Command::new(binary())
        .args(["health", "--server", &s.addr()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
}

#[tokio::test]
async fn rust_client_library_round_trip() {
    use eventstore::client::{Client, Error};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::single(dir.path(), &[]);
    s.wait_ready(Duration::from_secs(30)).await;
    let c = Client::connect(&format!("dns:///{}", s.addr()), Duration::from_secs(5)).unwrap();
    c.global().save_value("g", b"1".to_vec(), 60).await.unwrap();
    c.bridge("b")
        .save_value("g", b"2".to_vec(), 60)
        .await
        .unwrap();
    c.instance("b", "i")
        .save_value("g", b"3".to_vec(), 60)
        .await
        .unwrap();
    assert_eq!(c.global().load_value("g").await.unwrap(), b"1");
    assert_eq!(c.bridge("b").load_value("g").await.unwrap(), b"2");
    assert_eq!(c.instance("b", "i").load_value("g").await.unwrap(), b"3");
    c.bridge("b").delete_value("g").await.unwrap();
    assert!(matches!(
        c.bridge("b").load_value("g").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        c.bridge("").load_value("g").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.global().save_value("g", vec![], -1).await,
        Err(Error::InvalidArgument(_))
    ));
    // Unreachable server: Unavailable (or Timeout) within the timeout.
    let down = Client::connect(
        &format!("127.0.0.1:{}", free_port()),
        Duration::from_millis(800),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let r = down.global().load_value("g").await;
    let took = start.elapsed();
    eprintln!("an 800 ms timeout with nobody listening took {took:?}");
    assert!(
        matches!(r, Err(Error::Unavailable(_)) | Err(Error::Timeout(_))),
        "{r:?}"
    );
    // Waits of 25 to 400 ms fit in 800 ms: 775 ms, then it gives up.
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1100),
        "an 800 ms timeout took {took:?}"
    );
}

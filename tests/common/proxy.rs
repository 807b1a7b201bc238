//! A peer-traffic proxy for tests: a TCP forwarder on 127.0.0.1 placed in
//! front of one node's peer port. The nodes advertise the proxies' addresses
//! in `--peers`, so every byte of Raft traffic and every relayed request
//! between two nodes passes through the receiver's proxy, where a test can
//! cut it (per sending process, or all of it) or delay the answers.
//!
//! All nodes connect from 127.0.0.1, so the proxy tells senders apart by
//! process: it finds the inode of the sender's socket in `/proc/net/tcp` and
//! looks for it among the file descriptors of the processes it was told to
//! refuse (Linux only, as are the signals the other tests use).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{free_port, Cluster, Server};

/// What a proxy lets through. Changes take effect on open connections too.
#[derive(Default)]
struct Rules {
    /// Processes whose connections are refused (and cut if open).
    refused: Mutex<HashSet<i32>>,
    /// Refuse every connection.
    refuse_all: AtomicBool,
    /// Delay of the bytes the node sends back to the connecting peer, in ms.
    reply_delay_ms: AtomicU64,
}

/// One proxy in front of one node's peer port; stops when dropped.
pub struct Proxy {
    /// The port the proxy listens on (what `--peers` lists for the node).
    pub port: u16,
    rules: Arc<Rules>,
    changed: watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy that forwards to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let rules = Arc::new(Rules::default());
        let (changed, _) = watch::channel(());
        let (r, ch) = (rules.clone(), changed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, from)) = listener.accept().await else {
                    return;
                };
                let local = inbound.local_addr().unwrap();
                tokio::spawn(forward(
                    inbound,
                    from,
                    local,
                    target,
                    r.clone(),
                    ch.subscribe(),
                ));
            }
        });
        Proxy {
            port,
            rules,
            changed,
            task,
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Refuses (and cuts) connections from process `pid`.
    pub fn refuse(&self, pid: Pid) {
        self.rules.refused.lock().unwrap().insert(pid.as_raw());
        let _ = self.changed.send(());
    }

    /// Refuses (and cuts) every connection.
    pub fn refuse_all(&self) {
        self.rules.refuse_all.store(true, Ordering::SeqCst);
        let _ = self.changed.send(());
    }

    /// Lets everything through again.
    pub fn heal(&self) {
        self.rules.refused.lock().unwrap().clear();
        self.rules.refuse_all.store(false, Ordering::SeqCst);
        let _ = self.changed.send(());
    }

    /// Holds back everything the node answers by `delay` (requests to it
    /// pass at once).
    pub fn delay_replies(&self, delay: Duration) {
        self.rules
            .reply_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rules {
    fn refuses(&self, sender_inode: Option<u64>) -> bool {
        if self.refuse_all.load(Ordering::SeqCst) {
            return true;
        }
        let Some(inode) = sender_inode else {
            return false;
        };
        let pids: Vec<i32> = self.refused.lock().unwrap().iter().copied().collect();
        pids.into_iter().any(|pid| owns_socket(pid, inode))
    }
}

async fn forward(
    inbound: TcpStream,
    from: SocketAddr,
    local: SocketAddr,
    target: u16,
    rules: Arc<Rules>,
    mut changed: watch::Receiver<()>,
) {
    // The sender's socket shows up in /proc/net/tcp as soon as it is connected.
    let mut inode = None;
    for _ in 0..5 {
        inode = socket_inode(from.port(), local.port());
        if inode.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if rules.refuses(inode) {
        return;
    }
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    let up = pump(ri, wo, None);
    let down = pump(ro, wi, Some(rules.clone()));
    tokio::pin!(up, down);
    loop {
        tokio::select! {
            _ = &mut up => return,
            _ = &mut down => return,
            r = changed.changed() => {
                if r.is_err() || rules.refuses(inode) {
                    return;
                }
            }
        }
    }
}

/// Copies `r` to `w`, holding each chunk back by the rules' reply delay if given.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Option<Arc<Rules>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let ms = delay
                        .as_ref()
                        .map(|d| d.reply_delay_ms.load(Ordering::SeqCst))
                        .unwrap_or(0);
                    let at = Instant::now() + Duration::from_millis(ms);
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}

/// The inode of the 127.0.0.1 TCP socket with local port `port` connected
/// to remote port `remote`, from `/proc/net/tcp`.
fn socket_inode(port: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let port_of = |a: &str| {
            a.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        if port_of(f[1]) == Some(port) && port_of(f[2]) == Some(remote) {
            return f[9].parse().ok();
        }
    }
    None
}

/// Whether process `pid` holds the socket with `inode`.
fn owns_socket(pid: i32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|t| t.to_string_lossy() == wanted)
            .unwrap_or(false)
    })
}

impl Cluster {
    /// Starts `n` nodes (ids 0..n) that form one cluster and reach each
    /// other only through one proxy per node (`proxies[id]`). Each node
    /// still binds its own peer port (`Server::peer_addr`, which tests use
    /// for admin calls that must not be cut).
    pub async fn start_behind_proxies(n: u64, extra: &[&str]) -> (Cluster, Vec<Proxy>) {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut proxies = Vec::new();
        for (_, peer_port) in &ports {
            proxies.push(Proxy::start(*peer_port).await);
        }
        let advertised: BTreeMap<u64, u16> =
            (0..n).map(|i| (i, proxies[i as usize].port)).collect();
        let flag = Cluster::peers_flag(&advertised);
        let mut nodes: Vec<Server> = (0..n)
            .map(|i| {
                let (p, pp) = ports[i as usize];
                Server::new(i, p, pp, dir.path(), Some(&flag), extra)
            })
            .collect();
        for node in nodes.iter_mut().rev() {
            node.start();
        }
        let mut c = Cluster { dir, nodes };
        c.wait_all_ready(Duration::from_secs(30)).await;
        (c, proxies)
    }
}

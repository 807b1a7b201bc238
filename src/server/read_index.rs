//! Follower reads: a follower serves a Load from its own state machine once
//! it has applied up to a read index that the leader confirmed after the
//! Load arrived, so the leader does not carry every value a follower serves.
//!
//! Asking is batched. One question to the leader is in flight at a time,
//! and its answer serves every Load that was waiting before it was sent;
//! Loads that arrive while it is in flight wait for the next one (an answer
//! given before a Load arrived could miss a write acknowledged in between).
//! The queue is bounded: a Load that finds it full, or whose question fails
//! (no leader, a leader that cannot confirm its lease, an older leader that
//! does not know the question), is relayed to the leader as before.

use std::future::Future;
use std::sync::Weak;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::handler::ReadIndex;

/// Where a round's question goes: the node, which knows its leader.
pub trait AskLeader: Send + Sync + 'static {
    /// Asks the current leader for a read index, or says why it cannot.
    fn ask_read_index(&self) -> impl Future<Output = Result<ReadIndex, String>> + Send;
}

/// Loads that may wait for one read index at a time; more are relayed.
const QUEUE: usize = 4096;

/// One waiting Load's place in the queue: where its answer goes.
type Waiter = oneshot::Sender<Result<ReadIndex, String>>;

/// The follower's side of the queue: where a Load asks for a read index.
pub struct ReadIndexQueue {
    tx: mpsc::Sender<Waiter>,
}

/// The other side of the queue, consumed by [`run`].
pub struct Rounds {
    rx: mpsc::Receiver<Waiter>,
}

/// A new, empty queue.
pub fn queue() -> (ReadIndexQueue, Rounds) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (ReadIndexQueue { tx }, Rounds { rx })
}

impl ReadIndexQueue {
    /// A read index the leader confirmed after this call began, or why
    /// there is none by `deadline` (the caller then relays the Load).
    pub async fn read_index(&self, deadline: Instant) -> Result<ReadIndex, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(tx)
            .map_err(|_| format!("more than {QUEUE} reads already wait for a read index"))?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the node is stopping".into()),
            Err(_) => Err("no read index before the request's deadline".into()),
        }
    }
}

/// Asks the leader one question per round, for all the Loads that waited
/// before it, until `stop` turns true or the node is gone.
pub async fn run<A: AskLeader>(mut rounds: Rounds, node: Weak<A>, mut stop: watch::Receiver<bool>) {
    loop {
        let first = tokio::select! {
            w = rounds.rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let mut waiters = vec![first];
        while let Ok(w) = rounds.rx.try_recv() {
            waiters.push(w);
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let answer = node.ask_read_index().await;
        drop(node);
        for w in waiters {
            // A Load whose deadline passed no longer listens.
            let _ = w.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full queue refuses at once instead of making the Load wait.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (q, _rounds) = queue();
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let mut waiting = Vec::new();
        for _ in 0..QUEUE {
            let (tx, rx) = oneshot::channel();
            q.tx.try_send(tx).unwrap();
            waiting.push(rx);
        }
        let started = std::time::Instant::now();
        let e = q.read_index(far).await.unwrap_err();
        assert!(e.contains("already wait"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Counts its questions and answers each with its number as the index,
    /// once the test lets it.
    struct Fake {
        asked: std::sync::atomic::AtomicU64,
        go: tokio::sync::Semaphore,
    }

    impl AskLeader for Fake {
        async fn ask_read_index(&self) -> Result<ReadIndex, String> {
            let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            self.go.acquire().await.unwrap().forget();
            Ok(ReadIndex {
                index: n,
                cluster_time_ms: 0,
            })
        }
    }

    /// Loads that wait together share one question; a Load that arrives
    /// while a question is in flight is answered by the next one, never by
    /// an answer the leader may have given before it arrived.
    #[tokio::test]
    async fn a_load_is_answered_by_a_question_asked_after_it_arrived() {
        let (q, rounds) = queue();
        let fake = std::sync::Arc::new(Fake {
            asked: 0.into(),
            go: tokio::sync::Semaphore::new(0),
        });
        let (_stop_tx, stop) = watch::channel(false);
        let runner = tokio::spawn(run(rounds, std::sync::Arc::downgrade(&fake), stop));
        let q = std::sync::Arc::new(q);
        let far = Instant::now() + std::time::Duration::from_secs(10);
        let load = |q: std::sync::Arc<ReadIndexQueue>| {
            tokio::spawn(async move { q.read_index(far).await })
        };

        let first = load(q.clone());
        while fake.asked.load(std::sync::atomic::Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        // The first question is in flight: these two arrive after it.
        let second = load(q.clone());
        let third = load(q.clone());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        fake.go.add_permits(1);
        assert_eq!(first.await.unwrap().unwrap().index, 1);
        let asked_again = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while fake.asked.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        if asked_again.is_err() {
            let got = second.await.unwrap();
            panic!("no second question: a Load that arrived during the first got {got:?}");
        }
        fake.go.add_permits(1);
        assert_eq!(second.await.unwrap().unwrap().index, 2);
        assert_eq!(
            third.await.unwrap().unwrap().index,
            2,
            "waiting Loads share a question"
        );
        assert_eq!(fake.asked.load(std::sync::atomic::Ordering::SeqCst), 2);

        drop(q);
        tokio::time::timeout(std::time::Duration::from_secs(5), runner)
            .await
            .expect("the rounds end when the queue is dropped")
            .unwrap();
    }

    /// A Load that nobody answers gives up at its deadline.
    #[tokio::test]
    async fn a_load_gives_up_at_its_deadline() {
        let (q, _rounds) = queue();
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        let e = q.read_index(soon).await.unwrap_err();
        assert!(e.contains("deadline"), "{e}");
    }
}

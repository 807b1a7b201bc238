//! Back-pressure: a node works on at most `--max-in-flight` client requests
//! and `--max-in-flight-mib` of request payload at once. A request beyond
//! either limit is refused at once with RESOURCE_EXHAUSTED, so a flood of
//! large Saves queues nowhere without bound: memory stays bounded and the
//! node keeps answering.
//!
//! The request count is checked by [`AdmissionLayer`] before the request's
//! body is read, so refused requests are never buffered; the payload size
//! is known only once the message is decoded, and is checked then by the
//! service ([`Admission::admit_bytes`]). Requests relayed by followers count
//! on the leader like any other: the leader is where the work piles up.
//! Health checks, reflection and Raft's own messages are never refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tonic::codegen::http;
use tonic::Status;

/// The two budgets of one node.
#[derive(Debug)]
pub struct Admission {
    requests: Arc<Semaphore>,
    bytes: Semaphore,
    max_requests: usize,
    max_bytes: usize,
}

impl Admission {
    /// Budgets of `max_requests` requests and `max_bytes` bytes (each at
    /// least 1).
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        let max_requests = max_requests.clamp(1, Semaphore::MAX_PERMITS);
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            requests: Arc::new(Semaphore::new(max_requests)),
            bytes: Semaphore::new(max_bytes),
            max_requests,
            max_bytes,
        }
    }

    /// Admits one more request, or says why not.
    pub fn admit_request(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.requests.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this node is serving its limit of {} requests at once (--max-in-flight); \
                 retry with backoff",
                self.max_requests
            ))
        })
    }

    /// Admits a request of `bytes` bytes, or says why not. A request
    /// larger than the whole budget needs the whole budget.
    pub fn admit_bytes(&self, bytes: usize) -> Result<Option<SemaphorePermit<'_>>, Status> {
        let need = bytes.min(self.max_bytes);
        if need == 0 {
            return Ok(None);
        }
        let n = u32::try_from(need).unwrap_or(u32::MAX);
        self.bytes.try_acquire_many(n).map(Some).map_err(|_| {
            Status::resource_exhausted(format!(
                "this node holds its limit of {} MiB of requests at once \
                 (--max-in-flight-mib); retry with backoff",
                self.max_bytes >> 20
            ))
        })
    }
}

/// The client methods, as clients call them on the client port.
pub const CLIENT_PREFIX: &str = "/protob.EventStore/";
/// The same methods relayed by a follower, on the peer port.
pub const RELAYED_PREFIX: &str = "/eventstore.peer.Forward/";

/// A tower layer that admits requests to the gRPC methods under the given
/// path prefixes (`/protob.EventStore/`, ...) against [`Admission`]'s
/// request budget, before their bodies are read.
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
    prefixes: &'static [&'static str],
}

impl AdmissionLayer {
    /// Governs the paths starting with one of `prefixes`.
    pub fn new(admission: Arc<Admission>, prefixes: &'static [&'static str]) -> Self {
        AdmissionLayer {
            admission,
            prefixes,
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind an [`AdmissionLayer`].
#[derive(Clone, Debug)]
pub struct Admitted<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Admitted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if !self.layer.prefixes.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(req));
        }
        match self.layer.admission.admit_request() {
            Ok(permit) => {
                let answer = self.inner.call(req);
                Box::pin(async move {
                    let answer = answer.await;
                    drop(permit);
                    answer
                })
            }
            Err(mut status) => {
                if path.starts_with(RELAYED_PREFIX) {
                    // The relaying node passes this answer on as it is.
                    status.metadata_mut().insert(
                        super::error::ANSWERED_KEY,
                        tonic::metadata::MetadataValue::from_static("1"),
                    );
                }
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_beyond_either_budget_are_refused_until_one_finishes() {
        let a = Admission::new(2, 1000);
        let first = a.admit_request().unwrap();
        let second = a.admit_request().unwrap();
        let st = a.admit_request().unwrap_err();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert!(st.message().contains("2 requests"), "{st:?}");
        drop(first);
        assert!(a.admit_request().is_ok());
        drop(second);

        let big = a.admit_bytes(600).unwrap();
        let st = a.admit_bytes(600).unwrap_err();
        assert!(st.message().contains("--max-in-flight-mib"), "{st:?}");
        let small = a.admit_bytes(100).unwrap();
        drop(big);
        drop(small);
        // A request larger than the byte budget takes all of it.
        let whole = a.admit_bytes(5000).unwrap();
        assert!(a.admit_bytes(1).is_err());
        drop(whole);
        assert!(a.admit_bytes(1).is_ok());
    }
}

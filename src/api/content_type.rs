//! Refuses requests to the client API whose content type is not gRPC.
//! tonic serves any content type as if it were `application/grpc`, so a
//! JSON or text body would be decoded as protobuf, and sometimes accepted.
//! The gRPC protocol asks servers to answer such requests with HTTP 415;
//! the answer also carries an INVALID_ARGUMENT status that names the
//! content type, for clients that read only the gRPC status.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use tonic::body::Body;
use tonic::codegen::http::{self, header::CONTENT_TYPE, StatusCode};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::Status;

/// Wraps a gRPC service: requests with a gRPC content type
/// (`application/grpc`, `application/grpc+proto`, ...) reach it, any other
/// is answered HTTP 415 with INVALID_ARGUMENT.
#[derive(Clone, Debug)]
pub struct RequireGrpc<S>(pub S);

impl<S: NamedService> NamedService for RequireGrpc<S> {
    const NAME: &'static str = S::NAME;
}

/// Whether `content_type` names gRPC (not gRPC-Web, which this server does
/// not speak).
pub fn is_grpc(content_type: &str) -> bool {
    content_type == "application/grpc"
        || content_type.starts_with("application/grpc+")
        || content_type.starts_with("application/grpc;")
}

impl<S> Service<http::Request<Body>> for RequireGrpc<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let content_type = req.headers().get(CONTENT_TYPE).map(|v| v.to_str());
        if let Some(Ok(ct)) = content_type {
            if is_grpc(ct) {
                return Either::Left(self.0.call(req));
            }
        }
        let shown = match content_type {
            None => "none".to_string(),
            Some(Ok(ct)) => format!("{ct:?}"),
            Some(Err(_)) => "not visible ASCII".to_string(),
        };
        let mut response = Status::invalid_argument(format!(
            "content-type must be application/grpc (or application/grpc+proto), got {shown}"
        ))
        .into_http::<Body>();
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        Either::Right(futures::future::ready(Ok(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::is_grpc;

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(ct), "{ct}");
        }
        for ct in [
            "",
            "application/json",
            "text/plain",
            "application/grpc-web",
            "application/grpcx",
        ] {
            assert!(!is_grpc(ct), "{ct}");
        }
    }
}

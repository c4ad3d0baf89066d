//! The client listener's gate: every gRPC request is checked against the node's tokens
//! ([`crate::auth`]) before any service sees it.
//!
//! Invariants: a refused request reaches no service, so it changes nothing; a method this table
//! does not name needs `admin` (a new RPC is closed until someone decides who may call it); the
//! token is read from `authorization: Bearer TOKEN` and never logged or echoed.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::Status;

use crate::auth::{Access, Role};
use crate::error::Error;

/// The role a gRPC method needs, by its path (`/SERVICE/METHOD`).
pub fn role_needed(path: &str) -> Role {
    use geocache_proto::{admin_server, cache_server};
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
    match (service, method) {
        (cache_server::SERVICE_NAME, "Get" | "Ttl") | (admin_server::SERVICE_NAME, "Status") => Role::Read,
        (cache_server::SERVICE_NAME, "Set" | "Delete" | "Expire" | "Flush") => Role::Write,
        _ => Role::Admin,
    }
}

/// The bearer token of a request's `authorization` header, if it has one.
fn bearer(request: &Request<impl Sized>) -> Option<&str> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// Wraps the client listener's services: refuses a request whose token does not allow it.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    access: Access,
}

impl<S> Authorized<S> {
    /// `inner`, guarded by `access`.
    pub fn new(inner: S, access: Access) -> Self {
        Authorized { inner, access }
    }
}

impl<S, B> Service<Request<B>> for Authorized<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.access.check(bearer(&request), role_needed(request.uri().path())) {
            Ok(_) => Box::pin(self.inner.call(request)),
            Err(denied) => {
                let status = Status::from(Error::from(denied));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_needs_the_role_the_docs_give_it() {
        for (path, role) in [
            ("/geocache.v1.Cache/Get", Role::Read),
            ("/geocache.v1.Cache/Ttl", Role::Read),
            ("/geocache.v1.Admin/Status", Role::Read),
            ("/geocache.v1.Cache/Set", Role::Write),
            ("/geocache.v1.Cache/Delete", Role::Write),
            ("/geocache.v1.Cache/Expire", Role::Write),
            ("/geocache.v1.Cache/Flush", Role::Write),
            ("/geocache.v1.Admin/Init", Role::Admin),
            ("/geocache.v1.Admin/AddLearner", Role::Admin),
            ("/geocache.v1.Admin/ChangeMembership", Role::Admin),
            ("/geocache.v1.Admin/Remove", Role::Admin),
            ("/geocache.v1.Admin/Configure", Role::Admin),
            ("/geocache.v1.Admin/SetClockOffset", Role::Admin),
            ("/geocache.v1.Raft/Vote", Role::Admin),
            ("/geocache.Cache/Get", Role::Admin),
            ("/grpc.health.v1.Health/Check", Role::Admin),
        ] {
            assert_eq!(role_needed(path), role, "{path}");
        }
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        let with = |value: &str| Request::builder().header("authorization", value).body(()).unwrap();
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&Request::builder().body(()).unwrap()), None);
    }
}

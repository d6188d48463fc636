//! One request → one [`ApiReply`]: routes, authorises, enforces the body cap, calls the handlers or
//! the backend, and survives their panics. Says what it did with the body ([`BodyState`]) so the
//! connection knows whether it can serve another request.
//!
//! Knows nothing of sockets, framing or time limits (`conn` does); reads the body only through
//! [`Body`], and only after routing and authorisation passed (so `100 Continue` is sent, and a
//! body read, only for a request that can succeed).

use super::auth::{authorize, AuthConfig};
use super::conn::{Body, BodyState, Head};
use super::handlers;
use super::page;
use super::reply::{ApiReply, ErrorCode};
use super::route::{route, Query, Route};
use super::{ApiRequest, Backend};
use serde_json::json;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

pub(super) struct App {
    pub(super) auth: AuthConfig,
    pub(super) max_body: usize,
    /// `server.ui`: serve the status page at `/`.
    pub(super) ui: bool,
    pub(super) backend: Arc<dyn Backend>,
}

impl App {
    pub(super) fn max_body(&self) -> usize {
        self.max_body
    }

    pub(super) fn respond(&self, head: &Head, body: &mut Body<'_>) -> (ApiReply, BodyState) {
        let started = Instant::now();
        let (method, path) = (head.method.as_str(), head.path.as_str());
        let (reply, state) = match catch_unwind(AssertUnwindSafe(|| self.dispatch(head, body))) {
            Ok(done) => done,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                log::error!(component = "api", method = method, path = path;
                    "handler panicked: {what}");
                let reply = ApiReply::error(
                    ErrorCode::Internal,
                    format!("internal error while handling {method} {path}"),
                );
                (reply, BodyState::Abandon)
            }
        };
        log::debug!(component = "api", method = method, path = path,
            status = reply.status, durationMs = started.elapsed().as_millis() as u64; "request");
        (reply, state)
    }

    fn dispatch(&self, head: &Head, body: &mut Body<'_>) -> (ApiReply, BodyState) {
        let (method, path) = (head.method.as_str(), head.path.as_str());
        let r = route(method, path);
        match r {
            Route::NotFound => {
                let msg = format!("no endpoint {method} {path}");
                return (ApiReply::error(ErrorCode::NotFound, msg), BodyState::Unread);
            }
            Route::MethodNotAllowed { allow } => {
                let msg = format!("{method} is not allowed on {path} (allowed: {allow})");
                let reply =
                    ApiReply::error(ErrorCode::MethodNotAllowed, msg).with_header("Allow", allow);
                return (reply, BodyState::Unread);
            }
            _ => {}
        }

        // Authorisation comes before anything is read from the body.
        let admin = match authorize(r.access(), head.authorization.as_deref(), &self.auth) {
            Ok(admin) => admin,
            Err(reply) => return (reply, BodyState::Unread),
        };
        let query = match Query::parse(head.query.as_deref()) {
            Ok(q) => q,
            Err(e) => {
                let reply = ApiReply::error(ErrorCode::BadRequest, e.to_string());
                return (reply, BodyState::Unread);
            }
        };
        // The declared length is only compared, never used to size anything.
        if body
            .declared_len()
            .is_some_and(|declared| declared > self.max_body as u64)
        {
            return (too_large(self.max_body), BodyState::Abandon);
        }

        let backend = &self.backend;
        let reply = match &r {
            Route::Healthz => ApiReply::ok(json!({ "status": "ok" })),
            Route::Readyz => match backend.engine_ready() {
                Ok(()) => ApiReply::ok(json!({ "status": "ready" })),
                Err(msg) => ApiReply::error(ErrorCode::DockerError, msg).with_status(503),
            },
            Route::ListContainers => handlers::list_containers(&backend.snapshot(), &query),
            Route::GetContainer(key) => handlers::get_container(&backend.snapshot(), key),
            Route::ListImages => handlers::list_images(&backend.snapshot()),
            Route::Version => ApiReply::ok(backend.version()),
            Route::Page if self.ui => page::reply(),
            Route::Page => page::disabled(),
            _ => return self.delegate(body, r, head, query, admin),
        };
        (reply, BodyState::Unread)
    }

    /// Routes answered by [`Backend::handle`]: read (and check) the body of a mutation first.
    fn delegate(
        &self,
        body: &mut Body<'_>,
        r: Route,
        head: &Head,
        query: Query,
        admin: bool,
    ) -> (ApiReply, BodyState) {
        let (method, path) = (head.method.as_str(), head.path.as_str());
        let (bytes, state) = if method == "GET" {
            (Vec::new(), BodyState::Unread)
        } else {
            match body.read_capped(self.max_body) {
                Ok(Some(bytes)) => (bytes, BodyState::Consumed),
                Ok(None) => return (too_large(self.max_body), BodyState::Abandon),
                Err(e) => {
                    let msg = format!("reading the request body: {e}");
                    return (
                        ApiReply::error(ErrorCode::BadRequest, msg),
                        BodyState::Abandon,
                    );
                }
            }
        };
        if !bytes.trim_ascii().is_empty() {
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                let msg = format!("request body is not valid JSON: {e}");
                return (ApiReply::error(ErrorCode::BadRequest, msg), state);
            }
        }
        let request = ApiRequest {
            route: r,
            method: method.to_string(),
            path: path.to_string(),
            query,
            body: bytes,
            admin,
        };
        let reply = match self.backend.handle(request) {
            Some(reply) => reply,
            None => ApiReply::error(
                ErrorCode::NotFound,
                format!("{method} {path} is not implemented yet"),
            )
            .with_status(501),
        };
        (reply, state)
    }
}

fn too_large(max: usize) -> ApiReply {
    ApiReply::error(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {max} bytes"),
    )
}

//! The HTTP API (SPEC.md §8): binding, routing, authentication, body limits, `BaseRes` replies,
//! the read endpoints answered from the snapshot, and the HTTP/1.1 server they run on. Everything
//! that needs the engine, a registry or a job goes through [`Backend`]; this module never talks to
//! Docker or a registry and never waits for a job.
//!
//! Layout: `route` (method + path → [`Route`], query), `auth` (tokens → allowed/401/403),
//! `handlers` (snapshot → reply, `:id` resolution), `reply` ([`ApiReply`], [`ErrorCode`]),
//! `app` (one request → one reply: routing, auth, body cap, panics), `conn` (one connection:
//! HTTP/1.1 framing on `httparse`, deadlines, keep-alive, pipelining), `server` (listeners, the
//! accept loops, the connection cap, shutdown), `bind` (`server.addr` → socket addresses).
//!
//! Against abuse (issue 5): the request head is capped at 8 KiB and 100 fields (431) and must
//! arrive within `server.readTimeout` of its first byte (408); bodies are capped at `max_body`
//! (413, a declared length is never allocated) and must arrive within `server.readTimeout`; an
//! idle connection closes after `server.readTimeout`; malformed or ambiguous framing is 400; at
//! most `server.maxConnections` connections, the least busy closed first to admit a new one; the
//! open-file soft limit is raised to the hard limit when serving starts.

mod app;
mod auth;
mod bind;
mod conn;
mod handlers;
mod page;
mod reply;
mod route;
mod server;
#[cfg(test)]
mod tests;

pub use auth::{authorize, ct_eq, AuthConfig};
pub use handlers::{resolve_container, ResolveError};
pub use reply::{ApiReply, ErrorCode, ReplyBody};
pub use route::{percent_decode, route, Access, Query, QueryError, Route};

use crate::config::Secret;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the API needs from the rest of the daemon. Implementations must answer quickly: the API
/// thread of a connection waits for them.
pub trait Backend: Send + Sync + 'static {
    /// The current snapshot (never blocks on a job).
    fn snapshot(&self) -> Arc<crate::state::Snapshot>;
    /// Engine reachable? Err(message) when not. May do a quick ping; must be bounded in time.
    fn engine_ready(&self) -> Result<(), String>;
    /// Static build/runtime facts for /api/version (our version, engine summary).
    fn version(&self) -> serde_json::Value;
    /// Mutations, jobs, `/metrics`, `/api/registries` and the page. None: not available in this
    /// build (the server answers 501, or 404 for `GET /`).
    fn handle(&self, req: ApiRequest) -> Option<ApiReply> {
        let _ = req;
        None
    }
}

/// A request handed to [`Backend::handle`]: already routed, authorised and size-checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub route: Route,
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The request path as sent (still percent-encoded), for messages.
    pub path: String,
    pub query: Query,
    /// The body, at most `max_body` bytes; empty for GET. When not blank it is syntactically JSON.
    pub body: Vec<u8>,
    /// The caller holds the admin token (or no token is configured and unauthenticated use is on).
    pub admin: bool,
}

impl ApiRequest {
    /// The body as `T`; `Ok(None)` for an empty (or blank) body; a 400 `40000` naming the parser's
    /// complaint otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiReply> {
        if self.body.trim_ascii().is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| ApiReply::error(ErrorCode::BadRequest, format!("request body: {e}")))
    }
}

/// Server settings (from `server.*` in the config).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// How long a client may take to send a request head, to send a body, to take a response, or
    /// to start its next request on a kept-alive connection (`server.readTimeout`). Must be > 0.
    pub read_timeout: Duration,
    /// Connections served at once (`server.maxConnections`). Must be > 0.
    pub max_connections: usize,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    pub token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub allow_unauthenticated: bool,
    /// Serve the status page at `GET /` (`server.ui`); when false `/` answers 404.
    pub ui: bool,
}

/// 64 KiB: the largest body we expect is `{"image": "..."}`.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_body: DEFAULT_MAX_BODY,
            token: None,
            read_token: None,
            allow_unauthenticated: false,
            ui: true,
        }
    }
}

/// Why the API could not start.
#[derive(Debug)]
pub enum ApiError {
    /// `server.addr` is not `:PORT` or `HOST:PORT`.
    Addr { addr: String, reason: String },
    /// The host of `server.addr` did not resolve.
    Resolve { addr: String, source: io::Error },
    /// Binding one address failed (port taken, no permission...).
    Bind { addr: SocketAddr, source: io::Error },
    /// An option is out of range.
    Options(String),
    /// The server threads could not be started.
    Start { source: io::Error },
    /// An accept thread ended abnormally ([`Running::join`]) or did not stop ([`Running::shutdown`]).
    Join { source: io::Error },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Addr { addr, reason } => write!(f, "server.addr {addr:?}: {reason}"),
            ApiError::Resolve { addr, source } => {
                write!(f, "server.addr {addr:?}: cannot resolve the host: {source}")
            }
            ApiError::Bind { addr, source } => write!(f, "bind the API to {addr}: {source}"),
            ApiError::Options(msg) => write!(f, "API options: {msg}"),
            ApiError::Start { source } => write!(f, "start the API server: {source}"),
            ApiError::Join { source } => write!(f, "API server: {source}"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Resolve { source, .. }
            | ApiError::Bind { source, .. }
            | ApiError::Start { source }
            | ApiError::Join { source } => Some(source),
            ApiError::Addr { .. } | ApiError::Options(_) => None,
        }
    }
}

/// `server.addr` → the addresses to bind. `":8080"` is every interface: `[::]:8080` alone when
/// that socket also accepts IPv4 (the Linux default), `[::]:8080` and `0.0.0.0:8080` when IPv6
/// sockets are IPv6-only here, `0.0.0.0:8080` when there is no IPv6. `"host:port"` is that address
/// (every address a host name resolves to).
pub fn bind_addrs(addr: &str) -> Result<Vec<SocketAddr>, ApiError> {
    bind::bind_addrs(addr)
}

/// Binds every address, then serves on background threads; returns once all are bound. An
/// address already in use is an error naming it, and nothing stays bound. Port 0 picks a free
/// port: [`Running::addrs`] says which.
pub fn serve(
    addrs: &[SocketAddr],
    opts: ApiOptions,
    backend: Arc<dyn Backend>,
) -> Result<Running, ApiError> {
    server::serve(addrs, opts, backend).map(|server| Running { server })
}

/// The running server. Dropping it leaves the server running until the process exits; call
/// [`Running::shutdown`] to stop it.
pub struct Running {
    server: server::Handle,
}

impl Running {
    /// The addresses being served, as bound (with the real port when `0` was asked for).
    pub fn addrs(&self) -> &[SocketAddr] {
        self.server.addrs()
    }

    /// Stops accepting (the ports are free when this returns), closes idle connections, lets
    /// requests being handled finish (waiting at most `server.readTimeout` and a second), and joins
    /// the accept threads.
    pub fn shutdown(self) -> Result<(), ApiError> {
        self.server.shutdown()
    }

    /// Blocks while the server runs (in practice, forever: only [`Running::shutdown`] stops it).
    pub fn join(self) -> Result<(), ApiError> {
        self.server.join()
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("addrs", &self.addrs())
            .finish()
    }
}

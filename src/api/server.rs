//! The oxhttp glue: one function per request that routes, authorises, enforces the body cap, calls
//! the handlers or the backend, survives their panics, and turns an [`ApiReply`] into a response.
//!
//! oxhttp reads whatever body the handler left unread after it returns (to reuse the connection),
//! with no limit. So every request leaves here with its body either consumed, drained up to
//! `max_body`, or replaced by an empty one with `Connection: close` set on the *request*, which
//! makes oxhttp close the connection after the response instead of reading the rest.

use super::auth::{authorize, AuthConfig};
use super::handlers;
use super::page;
use super::reply::{ApiReply, ErrorCode, ReplyBody};
use super::route::{route, Query, Route};
use super::{ApiError, ApiOptions, ApiRequest, Backend, Running};
use oxhttp::model::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use oxhttp::model::{Body, Request, Response, StatusCode};
use serde_json::json;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

struct Ctx {
    auth: AuthConfig,
    max_body: usize,
    ui: bool,
    backend: Arc<dyn Backend>,
}

pub(super) fn serve(
    addrs: &[SocketAddr],
    opts: ApiOptions,
    backend: Arc<dyn Backend>,
) -> Result<Running, ApiError> {
    if addrs.is_empty() {
        return Err(ApiError::Options("no address to bind".into()));
    }
    if opts.read_timeout.is_zero() {
        // std rejects a zero socket timeout, which would fail every connection.
        return Err(ApiError::Options(
            "server.readTimeout must be more than 0s".into(),
        ));
    }
    if opts.max_connections == 0 {
        // oxhttp's accept thread would wait forever for a free slot.
        return Err(ApiError::Options(
            "server.maxConnections must be at least 1".into(),
        ));
    }
    // oxhttp's bind error does not say which address failed, and it leaves the addresses bound
    // before the failing one serving. Bind them all here first (together, so `[::]` and `0.0.0.0`
    // on one dual-stack port conflict as they would for real), release, then let oxhttp bind.
    {
        let mut held = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let l = TcpListener::bind(addr).map_err(|source| ApiError::Bind {
                addr: *addr,
                source,
            })?;
            held.push(l);
        }
    }
    let ctx = Arc::new(Ctx {
        auth: AuthConfig {
            token: opts.token,
            read_token: opts.read_token,
            allow_unauthenticated: opts.allow_unauthenticated,
        },
        max_body: opts.max_body,
        ui: opts.ui,
        backend,
    });
    let mut server = oxhttp::Server::new(move |req| respond(req, &ctx))
        .with_global_timeout(opts.read_timeout)
        .with_max_concurrent_connections(opts.max_connections);
    for addr in addrs {
        server = server.bind(*addr);
    }
    let server = server.spawn().map_err(|source| match addrs {
        [one] => ApiError::Bind { addr: *one, source },
        _ => ApiError::Start { source },
    })?;
    log::info!(component = "api", addrs:? = addrs; "API listening");
    Ok(Running {
        server,
        addrs: addrs.to_vec(),
    })
}

/// What happened to the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Read to its end.
    Consumed,
    /// Not touched: drain it (bounded) so the connection can be reused.
    Unread,
    /// Too large, broken, or unknown after a panic: close the connection without reading more.
    Abandon,
}

fn respond(req: &mut Request<Body>, ctx: &Ctx) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let (reply, state) = match catch_unwind(AssertUnwindSafe(|| dispatch(req, ctx))) {
        Ok(done) => done,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!(component = "api", method = method.as_str(), path = path.as_str();
                "handler panicked: {what}");
            let reply = ApiReply::error(
                ErrorCode::Internal,
                format!("internal error while handling {method} {path}"),
            );
            (reply, BodyState::Abandon)
        }
    };
    settle_body(req, state, ctx.max_body);
    log::debug!(component = "api", method = method.as_str(), path = path.as_str(),
        status = reply.status, durationMs = started.elapsed().as_millis() as u64; "request");
    to_response(reply)
}

fn dispatch(req: &mut Request<Body>, ctx: &Ctx) -> (ApiReply, BodyState) {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let r = route(&method, &path);
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
    let authz = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let admin = match authorize(r.access(), authz, &ctx.auth) {
        Ok(admin) => admin,
        Err(reply) => return (reply, BodyState::Unread),
    };
    let query = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => {
            let reply = ApiReply::error(ErrorCode::BadRequest, e.to_string());
            return (reply, BodyState::Unread);
        }
    };
    // The declared length is only compared, never used to size anything.
    if let Some(declared) = req.body().len() {
        if declared > ctx.max_body as u64 {
            return (too_large(ctx.max_body), BodyState::Abandon);
        }
    }

    let backend = &ctx.backend;
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
        Route::Page if ctx.ui => page::reply(),
        Route::Page => page::disabled(),
        _ => return delegate(req, ctx, r, method, path, query, admin),
    };
    (reply, BodyState::Unread)
}

/// Routes answered by [`Backend::handle`]: read (and check) the body of a mutation first.
fn delegate(
    req: &mut Request<Body>,
    ctx: &Ctx,
    r: Route,
    method: String,
    path: String,
    query: Query,
    admin: bool,
) -> (ApiReply, BodyState) {
    let (body, state) = if method == "GET" {
        (Vec::new(), BodyState::Unread)
    } else {
        match read_capped(req.body_mut(), ctx.max_body) {
            Ok(Some(body)) => (body, BodyState::Consumed),
            Ok(None) => return (too_large(ctx.max_body), BodyState::Abandon),
            Err(e) => {
                let msg = format!("reading the request body: {e}");
                return (
                    ApiReply::error(ErrorCode::BadRequest, msg),
                    BodyState::Abandon,
                );
            }
        }
    };
    if !body.trim_ascii().is_empty() {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            let msg = format!("request body is not valid JSON: {e}");
            return (ApiReply::error(ErrorCode::BadRequest, msg), state);
        }
    }
    let is_page = r == Route::Page;
    let request = ApiRequest {
        route: r,
        method: method.clone(),
        path: path.clone(),
        query,
        body,
        admin,
    };
    let reply = match ctx.backend.handle(request) {
        Some(reply) => reply,
        None if is_page => ApiReply::error(ErrorCode::NotFound, "no status page in this build"),
        None => ApiReply::error(
            ErrorCode::NotFound,
            format!("{method} {path} is not implemented yet"),
        )
        .with_status(501),
    };
    (reply, state)
}

fn too_large(max: usize) -> ApiReply {
    ApiReply::error(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {max} bytes"),
    )
}

/// Reads at most `max` bytes; `Ok(None)` when the body is longer. The buffer grows with what
/// arrives, never with what the client declared.
fn read_capped(body: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    body.take(max as u64 + 1).read_to_end(&mut buf)?;
    Ok((buf.len() <= max).then_some(buf))
}

fn settle_body(req: &mut Request<Body>, state: BodyState, max: usize) {
    let keep = match state {
        BodyState::Consumed => true,
        BodyState::Abandon => false,
        BodyState::Unread => {
            req.body().len().is_none_or(|n| n <= max as u64)
                && matches!(io::copy(&mut req.body_mut().take(max as u64 + 1), &mut io::sink()),
                    Ok(n) if n <= max as u64)
        }
    };
    if !keep {
        *req.body_mut() = Body::empty();
        req.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

fn to_response(reply: ApiReply) -> Response<Body> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (content_type, bytes) = match reply.body {
        // Serialising a Value cannot fail.
        ReplyBody::Json(v) => (
            "application/json".to_string(),
            serde_json::to_vec(&v).unwrap_or_default(),
        ),
        ReplyBody::Raw {
            content_type,
            bytes,
        } => (content_type, bytes),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::try_from(content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    for (name, value) in reply.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => log::warn!(component = "api"; "dropping an invalid response header {name:?}"),
        }
    }
    response
}

//! The Engine API client: version negotiation, typed calls for what discovery reads, and generic
//! request/stream building blocks for everything else (pull, create, start, stop, events...).
//!
//! It owns the wire rules of the Engine API (every path prefixed with the negotiated `/v1.NN`,
//! errors read from the `{"message"}` body, chunked JSON streams) and knows nothing of policies,
//! registries or updates. Sockets and pooling live in `transport`.

use std::fmt;
use std::io::{self, BufReader};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use ureq::http;

use super::model::{ContainerInspect, ContainerSummary, ImageInspect, ImageSummary, Info, Version};
use super::transport::{self, Endpoint};

/// The newest API version this client is written against. The engine is asked for
/// `min(this, engine max, docker.apiVersion)`.
pub const API_MAX: (u32, u32) = (1, 47);
/// The oldest API version this client can drive (Docker 1.12, 2016): its JSON shapes are the
/// ones modelled here.
pub const API_MIN: (u32, u32) = (1, 24);

/// Bodies we read whole (lists, inspect data) are capped, so a confused peer cannot exhaust
/// memory. A host with thousands of containers stays far below this.
const BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Error bodies are short messages; keep at most this much.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// A client for one engine. Cheap to clone; clones share connections and the negotiated version.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// As configured, for messages.
    host: String,
    endpoint: Endpoint,
    base_url: String,
    agent: ureq::Agent,
    api_cap: Option<(u32, u32)>,
    timeout: Duration,
    /// None until negotiation succeeds; a failed negotiation is retried by the next call.
    api: RwLock<Option<(u32, u32)>>,
    /// Held while negotiating, so concurrent first calls negotiate once while readers of
    /// `api` are never kept waiting on I/O.
    negotiating: Mutex<()>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("host", &self.inner.host)
            .field("api_version", &self.api_version())
            .finish()
    }
}

/// A finished request: status (2xx or 3xx) and the whole body.
#[derive(Debug, Clone)]
pub struct EngineResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl EngineResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Engine {
    /// A client for `unix:///path` or `tcp://host:port`. Does no I/O: the engine may be down
    /// now and up later.
    pub fn new(
        host: &str,
        api_cap: Option<(u32, u32)>,
        timeout: Duration,
    ) -> Result<Engine, EngineError> {
        let endpoint = Endpoint::parse(host).map_err(|reason| EngineError::InvalidHost {
            host: host.to_string(),
            reason,
        })?;
        Ok(Engine {
            inner: Arc::new(Inner {
                host: host.to_string(),
                base_url: endpoint.base_url(),
                agent: transport::agent(&endpoint),
                endpoint,
                api_cap,
                timeout,
                api: RwLock::new(None),
                negotiating: Mutex::new(()),
            }),
        })
    }

    /// The configured host string.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The negotiated version, once a call has negotiated it.
    pub fn api_version(&self) -> Option<(u32, u32)> {
        // A plain Copy value: a panic elsewhere cannot leave it half-written, so poison is moot.
        *self
            .inner
            .api
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Negotiates the API version (once; cached): `GET /_ping` gives the engine's maximum
    /// (`Api-Version` header), `GET /version` its minimum. Uses
    /// `min(API_MAX, engine max, api_cap)` and refuses a version the engine would reject.
    pub fn negotiate(&self) -> Result<(u32, u32), EngineError> {
        if let Some(v) = self.api_version() {
            return Ok(v);
        }
        let _negotiating = self
            .inner
            .negotiating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have finished while we waited.
        if let Some(v) = self.api_version() {
            return Ok(v);
        }
        let op = "negotiate API version";
        let ping = self.exchange(op, "GET", "/_ping", None, &[], None, false)?;
        let version: Version = self
            .exchange(op, "GET", "/version", None, &[], None, false)
            .and_then(|r| parse_body(op, &r.body))?;
        let server_max = ping
            .header("api-version")
            .and_then(parse_api_version)
            .or_else(|| parse_api_version(&version.api_version));
        let server_min = parse_api_version(&version.min_api_version);
        let chosen =
            choose_api_version(server_max, server_min, self.inner.api_cap).map_err(|detail| {
                EngineError::Unsupported {
                    host: self.inner.host.clone(),
                    detail,
                }
            })?;
        log::debug!(
            host = self.inner.host.as_str(), api = format_api(chosen).as_str();
            "engine API version negotiated"
        );
        *self
            .inner
            .api
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(chosen);
        Ok(chosen)
    }

    /// `GET /_ping`: is the engine answering? Unversioned, so it works before negotiation.
    pub fn ping(&self) -> Result<(), EngineError> {
        self.exchange("ping engine", "GET", "/_ping", None, &[], None, false)
            .map(|_| ())
    }

    pub fn version(&self) -> Result<Version, EngineError> {
        self.get_json_op("engine version", "/version")
    }

    pub fn info(&self) -> Result<Info, EngineError> {
        self.get_json_op("engine info", "/info")
    }

    /// `all`: stopped containers too.
    pub fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>, EngineError> {
        let q = query(&[("all", if all { "1" } else { "0" })]);
        self.get_json_op("list containers", &format!("/containers/json{q}"))
    }

    /// By id, short id or name (a leading `/` as in `Names` is accepted).
    pub fn inspect_container(&self, id: &str) -> Result<ContainerInspect, EngineError> {
        self.inspect_container_with_raw(id).map(|(typed, _)| typed)
    }

    /// The whole inspect document, for recreating the container from it.
    pub fn inspect_container_raw(&self, id: &str) -> Result<Value, EngineError> {
        let id = id.strip_prefix('/').unwrap_or(id);
        let op = format!("inspect container {id}");
        self.get_json_op(&op, &format!("/containers/{}/json", path_segment(id)))
    }

    /// Both views of one inspect request.
    pub fn inspect_container_with_raw(
        &self,
        id: &str,
    ) -> Result<(ContainerInspect, Value), EngineError> {
        let raw = self.inspect_container_raw(id)?;
        let typed = ContainerInspect::deserialize(&raw).map_err(|e| EngineError::Protocol {
            op: format!("inspect container {}", id.strip_prefix('/').unwrap_or(id)),
            detail: format!("unexpected inspect data: {e}"),
        })?;
        Ok((typed, raw))
    }

    pub fn list_images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        self.get_json_op("list images", "/images/json")
    }

    /// By id or reference (`sha256:...`, `nginx:1.27`, `localhost:5000/app:v1`).
    pub fn inspect_image(&self, id: &str) -> Result<ImageInspect, EngineError> {
        let op = format!("inspect image {id}");
        self.get_json_op(&op, &format!("/images/{}/json", path_segment(id)))
    }

    /// `GET` a versioned path (without the `/v1.NN` prefix) and decode its JSON.
    pub fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, EngineError> {
        self.get_json_op(&format!("GET {path_and_query}"), path_and_query)
    }

    /// `POST` with an optional JSON body. `None` when the engine answers without a body
    /// (204 No Content, 304 Not Modified: already started/stopped).
    pub fn post_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>, EngineError> {
        let op = format!("POST {path_and_query}");
        let response = self.exchange(&op, "POST", path_and_query, body, &[], None, true)?;
        if matches!(response.status, 204 | 304) || response.body.iter().all(u8::is_ascii_whitespace)
        {
            return Ok(None);
        }
        parse_body(&op, &response.body).map(Some)
    }

    /// Any method on a versioned path. 2xx and 3xx come back as a response; anything else is
    /// [`EngineError::Api`] with the engine's message. `timeout` replaces the client's default
    /// for this request (e.g. a stop with `t=N` needs more than N seconds).
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<EngineResponse, EngineError> {
        let op = format!("{method} {path_and_query}");
        self.exchange(&op, method, path_and_query, body, headers, timeout, true)
    }

    /// A long response of concatenated JSON objects (`/images/create` progress, `/events`),
    /// read as it arrives. Fails only when the engine sends nothing for `idle_timeout`;
    /// there is no limit on the whole.
    pub fn stream(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        idle_timeout: Duration,
    ) -> Result<JsonStream, EngineError> {
        let op = format!("{method} {path_and_query}");
        let url = self.url(&op, path_and_query, true)?;
        let request = self.build(&op, method, &url, None, headers)?;
        let request = self
            .inner
            .agent
            .configure_request(request)
            .timeout_global(None)
            .timeout_connect(Some(self.inner.timeout))
            .timeout_per_write(Some(self.inner.timeout))
            .timeout_per_read(Some(idle_timeout))
            .build();
        let response = self.run(&op, method, request, idle_timeout)?;
        let status = response.status().as_u16();
        if status >= 400 {
            return Err(api_error(&op, status, read_error_body(response)));
        }
        let reader = BufReader::new(response.into_body().into_reader());
        Ok(JsonStream {
            op,
            idle_timeout,
            host: self.inner.host.clone(),
            unix: self.is_unix(),
            values: serde_json::Deserializer::from_reader(reader).into_iter(),
            finished: false,
        })
    }

    fn get_json_op<T: DeserializeOwned>(&self, op: &str, path: &str) -> Result<T, EngineError> {
        let response = self.exchange(op, "GET", path, None, &[], None, true)?;
        parse_body(op, &response.body)
    }

    fn url(&self, op: &str, path_and_query: &str, versioned: bool) -> Result<String, EngineError> {
        if !path_and_query.starts_with('/') {
            return Err(EngineError::Protocol {
                op: op.to_string(),
                detail: format!("path {path_and_query:?} must start with /"),
            });
        }
        if versioned {
            let (major, minor) = self.negotiate().map_err(|e| e.context(op))?;
            Ok(format!(
                "{}/v{major}.{minor}{path_and_query}",
                self.inner.base_url
            ))
        } else {
            Ok(format!("{}{path_and_query}", self.inner.base_url))
        }
    }

    fn build(
        &self,
        op: &str,
        method: &str,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<http::Request<Vec<u8>>, EngineError> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let bytes = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                serde_json::to_vec(body).map_err(|e| EngineError::Protocol {
                    op: op.to_string(),
                    detail: format!("cannot encode request body: {e}"),
                })?
            }
            None => Vec::new(),
        };
        builder.body(bytes).map_err(|e| EngineError::Protocol {
            op: op.to_string(),
            detail: format!("invalid request: {e}"),
        })
    }

    /// Sends the request; retries once when an idempotent request met a connection that
    /// died between the pool's liveness probe and our write.
    fn run(
        &self,
        op: &str,
        method: &str,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
    ) -> Result<http::Response<ureq::Body>, EngineError> {
        let retry = matches!(method, "GET" | "HEAD").then(|| request.clone());
        match self.inner.agent.run(request) {
            Ok(response) => Ok(response),
            Err(e) => match retry {
                Some(again) if is_stale_connection(&e) => {
                    log::debug!(op = op; "engine connection closed under us; retrying once");
                    self.inner
                        .agent
                        .run(again)
                        .map_err(|e| self.transport_error(op, e, timeout))
                }
                _ => Err(self.transport_error(op, e, timeout)),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &self,
        op: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        timeout: Option<Duration>,
        versioned: bool,
    ) -> Result<EngineResponse, EngineError> {
        let url = self.url(op, path_and_query, versioned)?;
        let request = self.build(op, method, &url, body, headers)?;
        let timeout = timeout.unwrap_or(self.inner.timeout);
        let request = self
            .inner
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build();
        let response = self.run(op, method, request, timeout)?;
        let status = response.status().as_u16();
        if status >= 400 {
            return Err(api_error(op, status, read_error_body(response)));
        }
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_vec()
            .map_err(|e| self.transport_error(op, e, timeout))?;
        Ok(EngineResponse {
            status,
            headers,
            body,
        })
    }

    fn is_unix(&self) -> bool {
        matches!(self.inner.endpoint, Endpoint::Unix(_))
    }

    fn transport_error(&self, op: &str, e: ureq::Error, timeout: Duration) -> EngineError {
        classify(op, &self.inner.host, self.is_unix(), e, timeout)
    }
}

/// Maps a ureq failure to what the caller needs to decide: engine not there, too slow,
/// connection broken, or nonsense on the wire.
fn classify(op: &str, host: &str, unix: bool, e: ureq::Error, timeout: Duration) -> EngineError {
    let op = op.to_string();
    match e {
        ureq::Error::Timeout(_) => EngineError::Timeout { op, after: timeout },
        ureq::Error::Io(source) => match source.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable => EngineError::Unreachable {
                op,
                host: host.to_string(),
                unix,
                source,
            },
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                EngineError::Timeout { op, after: timeout }
            }
            _ => EngineError::Io { op, source },
        },
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => EngineError::Unreachable {
            op,
            host: host.to_string(),
            unix: false,
            source: io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        },
        other => EngineError::Protocol {
            op,
            detail: other.to_string(),
        },
    }
}

fn is_stale_connection(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn read_error_body(response: http::Response<ureq::Body>) -> Vec<u8> {
    // A body we cannot read still leaves the status to report.
    response
        .into_body()
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_vec()
        .unwrap_or_default()
}

fn parse_body<T: DeserializeOwned>(op: &str, body: &[u8]) -> Result<T, EngineError> {
    serde_json::from_slice(body).map_err(|e| EngineError::Protocol {
        op: op.to_string(),
        detail: format!("unexpected JSON from the engine: {e}"),
    })
}

fn api_error(op: &str, status: u16, body: Vec<u8>) -> EngineError {
    EngineError::Api {
        op: op.to_string(),
        status,
        message: error_message(status, &body),
    }
}

/// The engine's `{"message": "..."}`, else the body's text, else the status's reason.
fn error_message(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    if let Ok(ErrorBody { message }) = serde_json::from_slice::<ErrorBody>(body) {
        if !message.trim().is_empty() {
            return message.trim().to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() {
        // Whatever answered is not speaking the Engine API; keep the start of what it said.
        return text.chars().take(300).collect();
    }
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("no message")
        .to_string()
}

/// `"1.41"` → `(1, 41)`.
pub fn parse_api_version(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn format_api((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

/// The version to speak: `min(API_MAX, server_max, cap)`, which must not be below what
/// the engine accepts (`server_min`) nor below what this client can drive (`API_MIN`).
fn choose_api_version(
    server_max: Option<(u32, u32)>,
    server_min: Option<(u32, u32)>,
    cap: Option<(u32, u32)>,
) -> Result<(u32, u32), String> {
    let server_max =
        server_max.ok_or_else(|| "the engine did not report its API version".to_string())?;
    let mut chosen = API_MAX.min(server_max);
    if let Some(cap) = cap {
        chosen = chosen.min(cap);
    }
    if let Some(min) = server_min {
        if chosen < min {
            return Err(match cap {
                Some(cap) if cap < min && cap < server_max.min(API_MAX) => format!(
                    "docker.apiVersion {} is below the oldest API version the engine accepts ({})",
                    format_api(cap),
                    format_api(min)
                ),
                _ => format!(
                    "the engine accepts API {} or newer, but watch-docker speaks at most {}",
                    format_api(min),
                    format_api(API_MAX)
                ),
            });
        }
    }
    if chosen < API_MIN {
        return Err(format!(
            "API {} is older than the oldest watch-docker supports ({})",
            format_api(chosen),
            format_api(API_MIN)
        ));
    }
    Ok(chosen)
}

/// Percent-encodes query pairs: `"?a=1&b=x%20y"`, or `""` for no pairs. Everything but
/// unreserved characters is encoded, so JSON `filters` values travel intact.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        percent_encode(key, b"", &mut out);
        out.push('=');
        percent_encode(value, b"", &mut out);
    }
    out
}

/// Percent-encodes an id, name or image reference for use in a path. `/`, `:` and `@` stay:
/// the engine routes image references with their slashes (`/images/ghcr.io/a/b:1/json`).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    percent_encode(s, b"/:@", &mut out);
    out
}

fn percent_encode(s: &str, keep: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

type Values = serde_json::StreamDeserializer<
    'static,
    serde_json::de::IoRead<BufReader<ureq::BodyReader<'static>>>,
    Value,
>;

/// The JSON objects of a streamed response, one per item, read as they arrive. Ends after
/// the last object (or the first error). Dropping it closes the connection.
pub struct JsonStream {
    op: String,
    host: String,
    unix: bool,
    idle_timeout: Duration,
    values: Values,
    finished: bool,
}

impl fmt::Debug for JsonStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonStream")
            .field("op", &self.op)
            .field("finished", &self.finished)
            .finish()
    }
}

impl Iterator for JsonStream {
    type Item = Result<Value, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.values.next() {
            None => {
                self.finished = true;
                None
            }
            Some(Ok(value)) => Some(Ok(value)),
            Some(Err(e)) => {
                // The parser cannot resync after an error; report it once and stop.
                self.finished = true;
                let error = if e.is_io() {
                    let e = ureq::Error::from(io::Error::from(e));
                    classify(&self.op, &self.host, self.unix, e, self.idle_timeout)
                } else {
                    EngineError::Protocol {
                        op: self.op.clone(),
                        detail: format!("bad JSON in stream: {e}"),
                    }
                };
                Some(Err(error))
            }
        }
    }
}

/// Why an engine call failed. The first field of each variant names the operation and its
/// subject (`inspect container web`).
#[derive(Debug)]
pub enum EngineError {
    /// `docker.host` is not something we can connect to.
    InvalidHost { host: String, reason: &'static str },
    /// No engine at the address: socket missing, connection refused, permission denied.
    Unreachable {
        op: String,
        host: String,
        unix: bool,
        source: io::Error,
    },
    /// The engine answered 4xx/5xx; `message` is its own explanation.
    Api {
        op: String,
        status: u16,
        message: String,
    },
    /// No answer in time (for streams: no data for the idle timeout).
    Timeout { op: String, after: Duration },
    /// The connection broke mid-exchange.
    Io { op: String, source: io::Error },
    /// The engine said something we cannot read (bad JSON, bad HTTP).
    Protocol { op: String, detail: String },
    /// No API version both sides (and `docker.apiVersion`) accept.
    Unsupported { host: String, detail: String },
}

impl EngineError {
    /// The engine said 404 (no such container, image or network).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The engine's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth retrying later: the engine is restarting, slow, or overloaded. A permission
    /// problem, a refusal or a bad request will not fix itself.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Unreachable { source, .. } => {
                source.kind() != io::ErrorKind::PermissionDenied
            }
            EngineError::Timeout { .. } | EngineError::Io { .. } => true,
            EngineError::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            EngineError::InvalidHost { .. }
            | EngineError::Protocol { .. }
            | EngineError::Unsupported { .. } => false,
        }
    }

    /// Renames the operation, for callers that know better what they were doing
    /// (`stop container web` instead of `POST /containers/1a2b/stop?t=10`).
    pub fn context(mut self, op: impl Into<String>) -> Self {
        let new = op.into();
        match &mut self {
            EngineError::Unreachable { op, .. }
            | EngineError::Api { op, .. }
            | EngineError::Timeout { op, .. }
            | EngineError::Io { op, .. }
            | EngineError::Protocol { op, .. } => *op = new,
            EngineError::InvalidHost { .. } | EngineError::Unsupported { .. } => {}
        }
        self
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::InvalidHost { host, reason } => {
                write!(f, "docker host {host:?} is not usable: {reason}")
            }
            EngineError::Unreachable {
                op,
                host,
                unix,
                source,
            } => {
                write!(
                    f,
                    "{op}: cannot reach the Docker engine at {host}: {source}"
                )?;
                match source.kind() {
                    io::ErrorKind::PermissionDenied if *unix => write!(
                        f,
                        " (run as root, or as a user in the socket's group, e.g. `docker`; \
                         in a container add that group id with --group-add)"
                    ),
                    io::ErrorKind::NotFound if *unix => write!(
                        f,
                        " (is the engine running, and the socket mounted at that path?)"
                    ),
                    _ => write!(f, " (is the engine running?)"),
                }
            }
            EngineError::Api {
                op,
                status,
                message,
            } => write!(f, "{op}: engine answered {status}: {message}"),
            EngineError::Timeout { op, after } => {
                write!(f, "{op}: the engine did not answer within {after:?}")
            }
            EngineError::Io { op, source } => {
                write!(f, "{op}: connection to the engine failed: {source}")
            }
            EngineError::Protocol { op, detail } => write!(f, "{op}: {detail}"),
            EngineError::Unsupported { host, detail } => {
                write!(f, "negotiate API version with {host}: {detail}")
            }
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Unreachable { source, .. } | EngineError::Io { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_arithmetic() {
        let check = |max, min, cap, want: Result<(u32, u32), &str>| {
            let got = choose_api_version(max, min, cap);
            match (&got, want) {
                (Ok(v), Ok(w)) => assert_eq!(*v, w, "{max:?} {min:?} {cap:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e:?} should mention {w:?}"),
                _ => panic!("{max:?} {min:?} {cap:?}: got {got:?}, want {want:?}"),
            }
        };
        // Engine 20.10: its max is below ours.
        check(Some((1, 41)), Some((1, 12)), None, Ok((1, 41)));
        check(Some((1, 41)), Some((1, 12)), Some((1, 40)), Ok((1, 40)));
        // A cap above what the engine speaks is harmless.
        check(Some((1, 41)), Some((1, 12)), Some((1, 45)), Ok((1, 41)));
        // Docker 29: max above ours, min 1.44 — never below the engine's minimum.
        check(Some((1, 52)), Some((1, 44)), None, Ok(API_MAX));
        check(Some((1, 52)), Some((1, 44)), Some((1, 44)), Ok((1, 44)));
        check(
            Some((1, 52)),
            Some((1, 44)),
            Some((1, 43)),
            Err("docker.apiVersion 1.43"),
        );
        // An engine that outgrew us.
        check(Some((1, 60)), Some((1, 50)), None, Err("at most 1.47"));
        // No minimum reported: assume the engine accepts what it can speak.
        check(Some((1, 30)), None, None, Ok((1, 30)));
        check(
            Some((1, 20)),
            Some((1, 12)),
            None,
            Err("older than the oldest"),
        );
        check(None, Some((1, 12)), None, Err("did not report"));
        // Minor versions compare as numbers, not strings.
        check(
            Some((1, 100)),
            Some((1, 9)),
            Some((1, 9)),
            Err("older than"),
        );
    }

    #[test]
    fn api_versions_parse() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version(" 1.9 "), Some((1, 9)));
        assert_eq!(parse_api_version("1"), None);
        assert_eq!(parse_api_version("1.x"), None);
        assert_eq!(parse_api_version(""), None);
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(404, br#"{"message":"No such container: web"}"#),
            "No such container: web"
        );
        assert_eq!(error_message(500, b"plain failure\n"), "plain failure");
        assert_eq!(error_message(404, b""), "Not Found");
        assert_eq!(
            error_message(404, br#"{"message":""}"#),
            r#"{"message":""}"#
        );
        assert_eq!(error_message(599, b""), "no message");
        let long = "x".repeat(1000);
        assert_eq!(error_message(502, long.as_bytes()).len(), 300);
    }

    #[test]
    fn errors_name_operation_and_subject() {
        let e = api_error(
            "inspect container web",
            404,
            br#"{"message":"No such container: web"}"#.to_vec(),
        );
        assert_eq!(
            e.to_string(),
            "inspect container web: engine answered 404: No such container: web"
        );
        assert!(e.is_not_found());
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_transient());
        let e = e.context("stop container web");
        assert!(e.to_string().starts_with("stop container web: "));

        let denied = EngineError::Unreachable {
            op: "list containers".into(),
            host: "unix:///var/run/docker.sock".into(),
            unix: true,
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let text = denied.to_string();
        assert!(text.contains("unix:///var/run/docker.sock"), "{text}");
        assert!(text.contains("group"), "{text}");
        assert!(!denied.is_transient());
        assert!(std::error::Error::source(&denied).is_some());

        let refused = EngineError::Unreachable {
            op: "ping engine".into(),
            host: "tcp://h:2375".into(),
            unix: false,
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(refused.is_transient());
        assert_eq!(refused.status(), None);
        assert!(api_error("x", 503, vec![]).is_transient());
    }

    #[test]
    fn query_encoding() {
        assert_eq!(query(&[]), "");
        assert_eq!(query(&[("all", "1")]), "?all=1");
        assert_eq!(
            query(&[("fromImage", "ghcr.io/a/b"), ("tag", "1.2-alpine")]),
            "?fromImage=ghcr.io%2Fa%2Fb&tag=1.2-alpine"
        );
        assert_eq!(
            query(&[("filters", r#"{"label":["a=b c"]}"#)]),
            "?filters=%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D"
        );
        assert_eq!(query(&[("name", "é&=")]), "?name=%C3%A9%26%3D");
    }

    #[test]
    fn path_segments() {
        assert_eq!(path_segment("web"), "web");
        assert_eq!(
            path_segment("localhost:5000/app@sha256:ab"),
            "localhost:5000/app@sha256:ab"
        );
        assert_eq!(path_segment("a b?c#d%"), "a%20b%3Fc%23d%25");
    }

    #[test]
    fn new_rejects_bad_hosts_without_io() {
        let e = Engine::new("ssh://me@box", None, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("ssh://me@box"), "{e}");
        let engine = Engine::new("unix:///nonexistent/x.sock", None, Duration::from_secs(1))
            .expect("valid host");
        assert_eq!(engine.api_version(), None);
    }

    #[test]
    fn engine_is_send_sync_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Engine>();
        fn send<T: Send>() {}
        send::<JsonStream>();
        send::<EngineError>();
    }
}

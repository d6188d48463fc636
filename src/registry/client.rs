//! The registry HTTP client (SPEC.md §5): tag → digest by HEAD, per-platform confirmation by GET (once
//! per remote change, verdicts remembered), tag lists, the Bearer/Basic token flow with tokens cached
//! and shared across repositories, retries with back-off for transient errors, `429` + `Retry-After`
//! pauses, a registry that gave no answer left alone until the next scan, and per-registry statistics.
//! Sync (ureq), one agent and connection pool for all registries.
//! Knows nothing of containers, policy or the engine: it answers questions about references.

use super::challenge::{self, Challenge};
use super::credentials::{Credential, CredentialError, CredentialStore};
use super::platform::{self, Manifest, MANIFEST_ACCEPT};
use super::reference::Reference;
use super::token::{self, TokenAnswer, TokenCache};
use crate::config::{RegistryConfig, Secret};
use crate::model::Platform;
use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Manifests are small (an index of 50 platforms is ~20 KB); anything this big is not one.
const MANIFEST_MAX: u64 = 4 * 1024 * 1024;
const TOKEN_MAX: u64 = 1024 * 1024;
const TAGS_PAGE_MAX: u64 = 8 * 1024 * 1024;
const ERROR_BODY_MAX: u64 = 64 * 1024;
/// Page size asked for when listing tags (registries may answer with fewer).
const TAGS_PAGE: usize = 1000;
/// A `Retry-After` longer than this is capped: a registry must not silence us for days.
const MAX_PAUSE: Duration = Duration::from_secs(6 * 3600);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// How long a credential lookup is reused (helpers may hand out short-lived secrets).
const CREDENTIAL_TTL: Duration = Duration::from_secs(300);
/// How long a registry that gave no answer is not asked again, unless a scan starts before (see
/// `prepare`): a backstop for callers that never call `prepare`.
const UNREACHABLE_HOLD: Duration = Duration::from_secs(300);

/// The digest a registry gives for a reference's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDigest {
    /// `sha256:...`: of the index for a multi-platform tag, else of the manifest.
    pub digest: String,
    /// The manifest's media type (Content-Type), when the registry said.
    pub media_type: Option<String>,
}

impl RemoteDigest {
    pub fn is_index(&self) -> bool {
        matches!(
            self.media_type.as_deref(),
            Some(platform::OCI_INDEX) | Some(platform::DOCKER_MANIFEST_LIST)
        )
    }
}

/// Per-registry figures for `GET /api/registries` and `/metrics`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStats {
    /// The registry as references name it (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub host: String,
    /// HTTP requests sent (token requests included).
    pub requests: u64,
    /// Operations that ended in an error.
    pub errors: u64,
    /// Last `ratelimit-remaining` seen (Docker Hub: `100;w=21600` → 100).
    pub rate_limit_remaining: Option<u64>,
    /// RFC 3339, while the registry is paused after a `429` with `Retry-After`.
    pub paused_until: Option<String>,
    pub last_error: Option<String>,
    /// Requests by outcome: `ok`, `unauthorized`, `not_found`, `rate_limited`, `client_error`,
    /// `server_error`, `error` (no answer).
    pub requests_by_outcome: BTreeMap<String, u64>,
    /// Sum of request latencies, for a Prometheus summary with `requests`.
    pub latency_seconds_sum: f64,
}

/// What went wrong, without the operation and subject (see [`RegistryError`]).
#[derive(Debug)]
pub enum ErrorKind {
    /// No usable answer: connect error, timeout, truncated body, TLS failure.
    Transport(ureq::Error),
    /// The registry answered with an unexpected status.
    Status {
        status: u16,
        /// The registry's own error code and message, when it sent some.
        detail: Option<String>,
        retry_after: Option<Duration>,
        paused_until: Option<String>,
    },
    /// The registry is paused after a 429; no request was sent.
    Paused {
        until: String,
    },
    /// Another request to the registry (or its token endpoint) got no answer after its retries since
    /// the scan began; no request was sent.
    Unreachable {
        detail: String,
    },
    Credentials(CredentialError),
    Challenge(challenge::ChallengeError),
    /// 401 without a `WWW-Authenticate` header.
    NoChallenge,
    /// The token endpoint refused or answered nonsense.
    Token {
        status: Option<u16>,
        detail: String,
    },
    /// A body that is not what the protocol says (garbage, wrong digest, no platform entry...).
    BadAnswer(String),
    NoPlatform(Platform),
    /// Client construction: CA file and the like.
    Setup(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Transport(e) => write!(f, "no answer from registry: {e}"),
            ErrorKind::Status {
                status,
                detail,
                retry_after,
                paused_until,
            } => {
                write!(f, "registry answered {status}")?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                if let Some(r) = retry_after {
                    write!(f, " (retry after {}s)", r.as_secs())?;
                }
                if let Some(p) = paused_until {
                    write!(f, "; registry paused until {p}")?;
                }
                Ok(())
            }
            ErrorKind::Paused { until } => {
                write!(
                    f,
                    "registry paused until {until} after a 429 (rate limited)"
                )
            }
            ErrorKind::Unreachable { detail } => write!(
                f,
                "no answer from registry ({detail}); not asked again until the next scan"
            ),
            ErrorKind::Credentials(e) => write!(f, "credentials: {e}"),
            ErrorKind::Challenge(e) => write!(f, "{e}"),
            ErrorKind::NoChallenge => {
                f.write_str("registry answered 401 without a WWW-Authenticate challenge")
            }
            ErrorKind::Token { status, detail } => match status {
                Some(s) => write!(f, "token endpoint answered {s}: {detail}"),
                None => write!(f, "token: {detail}"),
            },
            ErrorKind::BadAnswer(d) => write!(f, "unexpected answer: {d}"),
            ErrorKind::NoPlatform(p) => write!(
                f,
                "the index has no manifest for platform {}/{}{}",
                p.os,
                p.architecture,
                p.variant
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            ),
            ErrorKind::Setup(d) => f.write_str(d),
        }
    }
}

/// A failed registry operation: `check docker.io/library/nginx:latest: registry answered 500`.
#[derive(Debug)]
pub struct RegistryError {
    /// `check`, `confirm platform of`, `list tags of`, `token for`, `configure`.
    pub operation: &'static str,
    /// The reference or registry concerned.
    pub subject: String,
    pub kind: ErrorKind,
}

impl RegistryError {
    fn new(operation: &'static str, subject: impl Into<String>, kind: ErrorKind) -> Self {
        RegistryError {
            operation,
            subject: subject.into(),
            kind,
        }
    }

    /// Worth trying again later in the same way: no answer, 5xx, 429.
    pub fn is_transient(&self) -> bool {
        kind_is_transient(&self.kind)
    }

    /// The HTTP status the registry answered, if that is what failed.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Status { status, .. } => Some(*status),
            ErrorKind::Token { status, .. } => *status,
            _ => None,
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.subject, self.kind)
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Transport(e) => Some(e),
            ErrorKind::Credentials(e) => Some(e),
            ErrorKind::Challenge(e) => Some(e),
            _ => None,
        }
    }
}

fn kind_is_transient(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Transport(e) => transport_is_transient(e),
        ErrorKind::Status { status, .. } => status_is_transient(*status),
        ErrorKind::Unreachable { .. } => true,
        ErrorKind::Token {
            status: Some(s), ..
        } => status_is_transient(*s),
        _ => false,
    }
}

fn status_is_transient(status: u16) -> bool {
    status == 429 || (status >= 500 && status != 501)
}

/// Nothing came back at all: the registry is down, blackholed or too slow. (A truncated or reset
/// answer is not this: the registry is there.)
fn is_no_answer(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as Io;
    match e {
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        // ureq reports a failed connect as the socket's own error.
        ureq::Error::Io(e) => matches!(
            e.kind(),
            Io::ConnectionRefused
                | Io::TimedOut
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::AddrNotAvailable
        ),
        _ => false,
    }
}

fn transport_is_transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Io(_)
            | ureq::Error::BodyStalled
    )
}

/// Hosts reached over plain HTTP: listed by name (`myreg:5000`, `myreg`) or by CIDR for IP literals.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InsecureRule {
    Host(String),
    Cidr(IpAddr, u8),
}

impl InsecureRule {
    fn parse(s: &str) -> Option<InsecureRule> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        if let Some((ip, prefix)) = s.split_once('/') {
            if let (Ok(ip), Ok(prefix)) = (ip.parse::<IpAddr>(), prefix.parse::<u8>()) {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                return (prefix <= max).then_some(InsecureRule::Cidr(ip, prefix));
            }
        }
        let s = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        Some(InsecureRule::Host(
            s.trim_end_matches('/').to_ascii_lowercase(),
        ))
    }

    fn matches(&self, host_port: &str, host: &str, ip: Option<IpAddr>) -> bool {
        match self {
            InsecureRule::Host(h) => h == host_port || h == host,
            InsecureRule::Cidr(net, prefix) => ip.is_some_and(|ip| in_cidr(ip, *net, *prefix)),
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// `host[:port]` → (host lowercased without brackets, IP if it is one). `localhost` counts as
/// loopback, as it does for the engine (which resolves names before matching its CIDRs).
fn split_host(host_port: &str) -> (String, Option<IpAddr>) {
    let hp = host_port.to_ascii_lowercase();
    let host = if let Some(rest) = hp.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest).to_string()
    } else {
        hp.rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or(hp.clone())
    };
    let ip = if host == "localhost" {
        Some(IpAddr::from([127, 0, 0, 1]))
    } else {
        host.parse().ok()
    };
    (host, ip)
}

#[derive(Debug, Clone)]
enum Access {
    /// `/v2/` answered 200: no authentication.
    Open,
    Challenged(Challenge),
}

#[derive(Debug, Default)]
struct RegistryState {
    requests: u64,
    errors: u64,
    rate_limit_remaining: Option<u64>,
    paused: Option<(Instant, jiff::Timestamp)>,
    /// Until when, and why: a request to the registry itself got no answer after its retries.
    unreachable: Option<(Instant, String)>,
    last_error: Option<String>,
    outcomes: BTreeMap<&'static str, u64>,
    latency: Duration,
}

/// One HTTP answer, body read whole (bounded) so that a truncated body is a retryable failure.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Get,
    Post,
}

struct Request<'a> {
    method: Method,
    url: &'a str,
    accept: Option<&'a str>,
    authorization: Option<&'a Secret>,
    form: &'a [(&'a str, &'a str)],
    limit: u64,
}

/// The registry client. Send + Sync: share one per process (an `Arc`) between scan workers.
pub struct RegistryClient {
    agent: ureq::Agent,
    credentials: CredentialStore,
    /// Lookups per registry, kept a while: a Basic registry needs them on every request, and a
    /// lookup may read config.json or run a helper program.
    credential_cache: Mutex<HashMap<String, (Instant, Option<Credential>)>>,
    insecure: Vec<InsecureRule>,
    max_retries: u32,
    backoff: Duration,
    access: Mutex<HashMap<String, Access>>,
    tokens: Mutex<TokenCache>,
    verdicts: Mutex<HashMap<(String, String, String), bool>>,
    registries: Mutex<BTreeMap<String, RegistryState>>,
    observer: Option<RequestObserver>,
}

/// Told of every request sent (registry, outcome as in [`RegistryStats::requests_by_outcome`],
/// latency): how metrics see registry traffic without this module knowing about metrics.
pub type RequestObserver = Arc<dyn Fn(&str, &'static str, Duration) + Send + Sync>;

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.insecure)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex even if a panicking thread poisoned it: the data are caches and counters.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RegistryClient {
    /// `insecure_from_engine`: hosts and CIDRs the engine treats as insecure (from `/info`);
    /// 127.0.0.0/8 and ::1 are always insecure, as for the engine. `pool_size`: at least the scan
    /// concurrency, so that parallel checks keep their connections.
    pub fn new(
        cfg: &RegistryConfig,
        insecure_from_engine: Vec<String>,
        pool_size: usize,
    ) -> Result<Self, RegistryError> {
        Self::with_credentials(
            cfg,
            insecure_from_engine,
            pool_size,
            CredentialStore::new(cfg),
        )
    }

    /// As [`RegistryClient::new`] with a given credential store.
    pub fn with_credentials(
        cfg: &RegistryConfig,
        insecure_from_engine: Vec<String>,
        pool_size: usize,
        credentials: CredentialStore,
    ) -> Result<Self, RegistryError> {
        let pool = pool_size.max(3);
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(pool)
            .max_idle_connections(pool * 4)
            .timeout_global(Some(cfg.timeout))
            .user_agent(concat!("watch-docker/", env!("CARGO_PKG_VERSION")));
        let extra = match &cfg.ca_file {
            Some(path) => ca_file_certs(path)?,
            None => Vec::new(),
        };
        builder = builder.tls_config(tls_config(extra));
        let insecure = ["127.0.0.0/8", "::1/128"]
            .iter()
            .map(|s| s.to_string())
            .chain(cfg.insecure.iter().cloned())
            .chain(insecure_from_engine)
            .filter_map(|s| InsecureRule::parse(&s))
            .collect();
        Ok(RegistryClient {
            agent: builder.build().new_agent(),
            credentials,
            credential_cache: Mutex::default(),
            insecure,
            max_retries: cfg.max_retries,
            backoff: DEFAULT_BACKOFF,
            access: Mutex::default(),
            tokens: Mutex::default(),
            verdicts: Mutex::default(),
            registries: Mutex::default(),
            observer: None,
        })
    }

    /// Reports every request to `observer` (for metrics).
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Changes the first back-off delay (doubled at each retry, with jitter). Default 500 ms.
    pub fn with_backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// `http://` for insecure hosts, `https://` for the others.
    fn base_url(&self, api_host: &str) -> String {
        let (host, ip) = split_host(api_host);
        let lower = api_host.to_ascii_lowercase();
        let insecure = self.insecure.iter().any(|r| r.matches(&lower, &host, ip));
        format!("{}://{api_host}", if insecure { "http" } else { "https" })
    }

    /// Gets ready for a scan of `refs` (call it at every scan, even with none): forgets which
    /// registries gave no answer during the last scan, learns each registry's challenge (one
    /// `GET /v2/` per unknown registry) and asks ONE token per registry for all the repositories not
    /// yet covered (several `scope` parameters, split in batches when the URL would grow past 7 KB).
    /// Failures are not errors here: a repository without a token gets its own when it is checked.
    pub fn prepare(&self, refs: &[Reference]) {
        let mut by_registry: BTreeMap<&str, (&str, BTreeSet<String>)> = BTreeMap::new();
        for r in refs {
            by_registry
                .entry(r.registry.as_str())
                .or_insert_with(|| (r.api_host(), BTreeSet::new()))
                .1
                .insert(token::pull_scope(&r.repository));
        }
        // A new scan asks again the registries that did not answer during the last one.
        for s in lock(&self.registries).values_mut() {
            s.unreachable = None;
        }
        let prepare_one = |registry: &str, api_host: &str, scopes: BTreeSet<String>| {
            if let Err(e) = self.prepare_registry(registry, api_host, scopes) {
                log::debug!(component = "registry"; "{e}");
            }
        };
        if by_registry.len() == 1 {
            for (registry, (api_host, scopes)) in by_registry {
                prepare_one(registry, api_host, scopes);
            }
            return;
        }
        // Registries in parallel: one that does not answer costs its timeouts once, not on top of
        // all the others'. Should a thread not start, its repositories get their tokens when checked.
        std::thread::scope(|s| {
            for (registry, (api_host, scopes)) in by_registry {
                let prepare_one = &prepare_one;
                let spawned = std::thread::Builder::new()
                    .name("registry-prepare".into())
                    .spawn_scoped(s, move || prepare_one(registry, api_host, scopes));
                if let Err(e) = spawned {
                    log::warn!(component = "registry"; "spawn a thread to prepare {registry}: {e}");
                }
            }
        });
    }

    fn prepare_registry(
        &self,
        registry: &str,
        api_host: &str,
        scopes: BTreeSet<String>,
    ) -> Result<(), RegistryError> {
        let err = |kind| RegistryError::new("token for", registry, kind);
        let access = match self.known_access(api_host) {
            Some(a) => a,
            None => self.probe(registry, api_host).map_err(err)?,
        };
        let Access::Challenged(Challenge::Bearer { realm, service, .. }) = access else {
            return Ok(());
        };
        let now = Instant::now();
        let missing: BTreeSet<String> = {
            let tokens = lock(&self.tokens);
            scopes
                .into_iter()
                .filter(|s| {
                    tokens
                        .find(&realm, service.as_deref(), Some(s), now)
                        .is_none()
                })
                .collect()
        };
        for batch in token::batches(&realm, service.as_deref(), &missing, token::MAX_TOKEN_URL) {
            let answer = self
                .fetch_token(registry, api_host, &realm, service.as_deref(), &batch)
                .map_err(err)?;
            lock(&self.tokens).insert(&realm, service.as_deref(), batch, answer, Instant::now());
        }
        Ok(())
    }

    fn known_access(&self, api_host: &str) -> Option<Access> {
        lock(&self.access).get(api_host).cloned()
    }

    /// `GET /v2/`: 200 means open, 401 carries the challenge.
    fn probe(&self, registry: &str, api_host: &str) -> Result<Access, ErrorKind> {
        let url = format!("{}/v2/", self.base_url(api_host));
        let a = self.send_or_mark(
            registry,
            &Request {
                method: Method::Get,
                url: &url,
                accept: None,
                authorization: None,
                form: &[],
                limit: ERROR_BODY_MAX,
            },
            None,
        )?;
        let access = match a.status {
            401 => Access::Challenged(challenge_of(&a)?),
            200..=299 => Access::Open,
            _ => return Err(self.status_error(registry, &a)),
        };
        lock(&self.access).insert(api_host.to_string(), access.clone());
        Ok(access)
    }

    /// The Authorization value for a request on `r` under what we know of its registry.
    fn authorization(
        &self,
        r: &Reference,
        scope: &str,
        fresh: bool,
    ) -> Result<Option<Secret>, ErrorKind> {
        match self.known_access(r.api_host()) {
            None | Some(Access::Open) => Ok(None),
            Some(Access::Challenged(Challenge::Basic { .. })) => {
                match self.credential(&r.registry)? {
                    Some(Credential::Basic { username, password }) => {
                        Ok(Some(basic_auth(&username, &password)))
                    }
                    _ => Ok(None),
                }
            }
            Some(Access::Challenged(Challenge::Bearer { realm, service, .. })) => {
                let service = service.as_deref();
                if !fresh {
                    if let Some(t) =
                        lock(&self.tokens).find(&realm, service, Some(scope), Instant::now())
                    {
                        return Ok(Some(bearer(&t)));
                    }
                }
                let scopes = BTreeSet::from([scope.to_string()]);
                let answer =
                    self.fetch_token(&r.registry, r.api_host(), &realm, service, &scopes)?;
                let header = bearer(&answer.token);
                lock(&self.tokens).insert(&realm, service, scopes, answer, Instant::now());
                Ok(Some(header))
            }
        }
    }

    /// The credential for `registry`, from the cache or the store.
    fn credential(&self, registry: &str) -> Result<Option<Credential>, ErrorKind> {
        let now = Instant::now();
        if let Some((at, c)) = lock(&self.credential_cache).get(registry) {
            if now.duration_since(*at) < CREDENTIAL_TTL {
                return Ok(c.clone());
            }
        }
        let c = self
            .credentials
            .lookup(registry)
            .map_err(ErrorKind::Credentials)?;
        lock(&self.credential_cache).insert(registry.to_string(), (now, c.clone()));
        Ok(c)
    }

    /// Asks the realm for a token covering `scopes`, with the registry's credentials when it is safe
    /// to send them there (same host as the registry, on any port, or HTTPS).
    fn fetch_token(
        &self,
        registry: &str,
        api_host: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<String>,
    ) -> Result<TokenAnswer, ErrorKind> {
        let (realm_scheme, realm_host) =
            url_scheme_host(realm).ok_or_else(|| ErrorKind::Token {
                status: None,
                detail: format!("realm {realm:?} is not an http(s) URL"),
            })?;
        // The host without the port: a token server beside the registry on another port (docker_auth's
        // usual `myreg:5001` next to `myreg:5000`) is the same machine, hence the same trust.
        let trusted = realm_scheme == "https" || split_host(realm_host).0 == split_host(api_host).0;
        let credential = if trusted {
            self.credential(registry)?
        } else {
            None
        };
        let endpoint = format!("token endpoint {realm_host}");
        let answer = match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant, as docker does with an identity token.
                let scope = scopes.iter().cloned().collect::<Vec<_>>().join(" ");
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.expose()),
                    ("client_id", "watch-docker"),
                    ("scope", scope.as_str()),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                self.send_or_mark(
                    registry,
                    &Request {
                        method: Method::Post,
                        url: realm,
                        accept: Some("application/json"),
                        authorization: None,
                        form: &form,
                        limit: TOKEN_MAX,
                    },
                    Some(&endpoint),
                )?
            }
            other => {
                let auth = match other {
                    Some(Credential::Basic { username, password }) => {
                        Some(basic_auth(username, password))
                    }
                    _ => None,
                };
                let url = token::token_url(realm, service, scopes);
                self.send_or_mark(
                    registry,
                    &Request {
                        method: Method::Get,
                        url: &url,
                        accept: Some("application/json"),
                        authorization: auth.as_ref(),
                        form: &[],
                        limit: TOKEN_MAX,
                    },
                    Some(&endpoint),
                )?
            }
        };
        if answer.status != 200 {
            return Err(ErrorKind::Token {
                status: Some(answer.status),
                detail: error_detail(&answer.body).unwrap_or_else(|| "no token".into()),
            });
        }
        token::parse_token(&answer.body, jiff::Timestamp::now()).map_err(|detail| {
            ErrorKind::Token {
                status: None,
                detail,
            }
        })
    }

    /// A request on `r`'s repository with authentication: on 401 learns the challenge (or that the
    /// token did not cover this repository) and tries once more with a fresh token for this scope.
    fn authorized(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        accept: &str,
        limit: u64,
    ) -> Result<Answer, ErrorKind> {
        let scope = token::pull_scope(&r.repository);
        let url = format!("{}{path}", self.base_url(r.api_host()));
        let mut fresh = false;
        loop {
            let auth = self.authorization(r, &scope, fresh)?;
            let answer = self.send_or_mark(
                &r.registry,
                &Request {
                    method,
                    url: &url,
                    accept: Some(accept),
                    authorization: auth.as_ref(),
                    form: &[],
                    limit,
                },
                None,
            )?;
            if answer.status != 401 || fresh {
                return Ok(answer);
            }
            let c = challenge_of(&answer)?;
            let basic = matches!(c, Challenge::Basic { .. });
            lock(&self.access).insert(r.api_host().to_string(), Access::Challenged(c));
            // Basic: credentials we sent were refused, or we have none; asking again is useless.
            if basic
                && (auth.is_some()
                    || !matches!(
                        self.credential(&r.registry)?,
                        Some(Credential::Basic { .. })
                    ))
            {
                return Ok(answer);
            }
            fresh = true;
        }
    }

    /// The digest of `r`'s tag, by `HEAD` (free on Docker Hub's pull quota); by `GET` and sha256 of
    /// the body only when the registry sends no `Docker-Content-Digest`.
    pub fn head_digest(&self, r: &Reference) -> Result<RemoteDigest, RegistryError> {
        let result = self.head_digest_inner(r);
        self.finish(r, "check", result)
    }

    fn head_digest_inner(&self, r: &Reference) -> Result<RemoteDigest, ErrorKind> {
        let path = format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref());
        let a = self.authorized(r, Method::Head, &path, MANIFEST_ACCEPT, 0)?;
        match a.status {
            200 => {
                if let Some(d) = a
                    .header("docker-content-digest")
                    .filter(|d| valid_digest(d))
                {
                    return Ok(RemoteDigest {
                        digest: d.to_string(),
                        media_type: content_type(&a),
                    });
                }
            }
            // Some registries and proxies do not implement HEAD on manifests.
            405 | 501 => {}
            _ => return Err(self.status_error(&r.registry, &a)),
        }
        let a = self.authorized(r, Method::Get, &path, MANIFEST_ACCEPT, MANIFEST_MAX)?;
        if a.status != 200 {
            return Err(self.status_error(&r.registry, &a));
        }
        platform::parse_manifest(&a.body, content_type(&a).as_deref())
            .map_err(|e| ErrorKind::BadAnswer(e.to_string()))?;
        let digest = a
            .header("docker-content-digest")
            .filter(|d| valid_digest(d))
            .map(str::to_string)
            .unwrap_or_else(|| platform::sha256_digest(&a.body));
        Ok(RemoteDigest {
            digest,
            media_type: content_type(&a),
        })
    }

    /// Whether the image for `platform` behind `remote_digest` differs from the local image
    /// `local_image_id` (classic store: the image id is the config digest; containerd store: it is
    /// the manifest or index digest — both are recognised). GETs the index and the platform's
    /// manifest once; the verdict is remembered per (local image id, remote digest) for the life of
    /// the process, so later scans send nothing while the remote digest stays the same.
    pub fn platform_changed(
        &self,
        r: &Reference,
        remote_digest: &str,
        platform: &Platform,
        local_image_id: &str,
    ) -> Result<bool, RegistryError> {
        // The platform is in the key too: a local image id implies one, but a caller mixing them up
        // must not get another platform's verdict.
        let key = (
            local_image_id.to_string(),
            remote_digest.to_string(),
            format!(
                "{}/{}/{}",
                platform.os,
                platform.architecture,
                platform.variant.as_deref().unwrap_or("")
            ),
        );
        if let Some(v) = lock(&self.verdicts).get(&key) {
            return Ok(*v);
        }
        let result = self.platform_changed_inner(r, remote_digest, platform, local_image_id);
        let verdict = self.finish(r, "confirm platform of", result)?;
        lock(&self.verdicts).insert(key, verdict);
        Ok(verdict)
    }

    fn platform_changed_inner(
        &self,
        r: &Reference,
        remote_digest: &str,
        platform: &Platform,
        local_image_id: &str,
    ) -> Result<bool, ErrorKind> {
        if remote_digest == local_image_id {
            return Ok(false);
        }
        let manifest = self.manifest_by_digest(r, remote_digest)?;
        let (manifest_digest, manifest) = match manifest {
            Manifest::Image { .. } => (remote_digest.to_string(), manifest),
            Manifest::Index(entries) => {
                let entry = platform::select(&entries, platform)
                    .ok_or_else(|| ErrorKind::NoPlatform(platform.clone()))?;
                if entry.digest == local_image_id {
                    return Ok(false);
                }
                let child = self.manifest_by_digest(r, &entry.digest)?;
                (entry.digest.clone(), child)
            }
        };
        match manifest {
            Manifest::Image { config_digest } => {
                Ok(config_digest != local_image_id && manifest_digest != local_image_id)
            }
            Manifest::Index(_) => Err(ErrorKind::BadAnswer(format!(
                "{manifest_digest} is an index inside an index"
            ))),
        }
    }

    /// GET a manifest by digest and check that the body has that digest.
    fn manifest_by_digest(&self, r: &Reference, digest: &str) -> Result<Manifest, ErrorKind> {
        let path = format!("/v2/{}/manifests/{digest}", r.repository);
        let a = self.authorized(r, Method::Get, &path, MANIFEST_ACCEPT, MANIFEST_MAX)?;
        if a.status != 200 {
            return Err(self.status_error(&r.registry, &a));
        }
        if let Some(hex) = digest.strip_prefix("sha256:") {
            let got = platform::sha256_digest(&a.body);
            if got[7..] != *hex {
                return Err(ErrorKind::BadAnswer(format!(
                    "manifest {digest} has digest {got} (truncated or altered)"
                )));
            }
        }
        platform::parse_manifest(&a.body, content_type(&a).as_deref())
            .map_err(|e| ErrorKind::BadAnswer(format!("manifest {digest}: {e}")))
    }

    /// The tags of `r`'s repository, following `Link: <...>; rel="next"` pages, at most `max_pages`
    /// pages and until `deadline` has passed (then the tags seen so far are returned).
    pub fn list_tags(
        &self,
        r: &Reference,
        max_pages: usize,
        deadline: Duration,
    ) -> Result<Vec<String>, RegistryError> {
        let result = self.list_tags_inner(r, max_pages, deadline);
        self.finish(r, "list tags of", result)
    }

    fn list_tags_inner(
        &self,
        r: &Reference,
        max_pages: usize,
        deadline: Duration,
    ) -> Result<Vec<String>, ErrorKind> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let started = Instant::now();
        let base = self.base_url(r.api_host());
        let mut path = format!("/v2/{}/tags/list?n={TAGS_PAGE}", r.repository);
        let mut tags = Vec::new();
        for _ in 0..max_pages {
            let a = self.authorized(r, Method::Get, &path, "application/json", TAGS_PAGE_MAX)?;
            if a.status != 200 {
                return Err(self.status_error(&r.registry, &a));
            }
            let page: Page = serde_json::from_slice(&a.body)
                .map_err(|e| ErrorKind::BadAnswer(format!("tag list is not JSON ({e})")))?;
            tags.extend(page.tags.unwrap_or_default());
            match a.header("link").and_then(|l| next_link(l, &base)) {
                Some(next) if started.elapsed() < deadline => path = next,
                _ => break,
            }
        }
        Ok(tags)
    }

    /// Statistics per registry, sorted by host.
    pub fn stats(&self) -> Vec<RegistryStats> {
        let now = Instant::now();
        lock(&self.registries)
            .iter()
            .map(|(host, s)| RegistryStats {
                host: host.clone(),
                requests: s.requests,
                errors: s.errors,
                rate_limit_remaining: s.rate_limit_remaining,
                paused_until: s
                    .paused
                    .filter(|(until, _)| *until > now)
                    .map(|(_, ts)| ts.to_string()),
                last_error: s.last_error.clone(),
                requests_by_outcome: s
                    .outcomes
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                latency_seconds_sum: s.latency.as_secs_f64(),
            })
            .collect()
    }

    /// Turns an operation's result into the public error and records it.
    fn finish<T>(
        &self,
        r: &Reference,
        operation: &'static str,
        result: Result<T, ErrorKind>,
    ) -> Result<T, RegistryError> {
        result.map_err(|kind| {
            let e = RegistryError::new(operation, r.to_string(), kind);
            let mut regs = lock(&self.registries);
            let s = regs.entry(r.registry.clone()).or_default();
            s.errors += 1;
            s.last_error = Some(e.to_string());
            e
        })
    }

    /// The error for an unexpected status, with the pause it caused if it was a 429.
    fn status_error(&self, registry: &str, a: &Answer) -> ErrorKind {
        ErrorKind::Status {
            status: a.status,
            detail: error_detail(&a.body).or_else(|| {
                (a.status == 401).then(|| {
                    format!("authentication failed; check the credentials for {registry} in registry.auth or docker config.json")
                })
            }),
            retry_after: (a.status == 429)
                .then(|| retry_after(a, jiff::Timestamp::now()))
                .flatten(),
            paused_until: self.paused_until(registry).map(|t| t.to_string()),
        }
    }

    /// When `registry` is paused, until when.
    fn paused_until(&self, registry: &str) -> Option<jiff::Timestamp> {
        let regs = lock(&self.registries);
        let (until, ts) = regs.get(registry)?.paused?;
        (until > Instant::now()).then_some(ts)
    }

    /// `send` for a request the registry's checks depend on (its API, its token realm): when nothing
    /// answers even after the retries, the registry's other requests fail at once until the next
    /// scan instead of each waiting out its own timeouts and retries. `what` names the token
    /// endpoint when it is that which did not answer.
    fn send_or_mark(
        &self,
        registry: &str,
        req: &Request,
        what: Option<&str>,
    ) -> Result<Answer, ErrorKind> {
        let result = self.send(registry, req);
        if let Err(ErrorKind::Transport(e)) = &result {
            if is_no_answer(e) {
                let detail = match what {
                    Some(w) => format!("{w}: {e}"),
                    None => e.to_string(),
                };
                lock(&self.registries)
                    .entry(registry.to_string())
                    .or_default()
                    .unreachable = Some((Instant::now() + UNREACHABLE_HOLD, detail));
            }
        }
        result
    }

    /// Why `registry` is not asked now, after a request to it got no answer.
    fn unreachable(&self, registry: &str) -> Option<String> {
        let regs = lock(&self.registries);
        let (until, why) = regs.get(registry)?.unreachable.as_ref()?;
        (*until > Instant::now()).then(|| why.clone())
    }

    /// Sends one request with retries for transient failures (no answer, 5xx, 429 without
    /// `Retry-After`). A 429 with `Retry-After` pauses the registry and is returned as is.
    fn send(&self, registry: &str, req: &Request) -> Result<Answer, ErrorKind> {
        let mut attempt = 0;
        loop {
            if let Some(until) = self.paused_until(registry) {
                return Err(ErrorKind::Paused {
                    until: until.to_string(),
                });
            }
            if let Some(detail) = self.unreachable(registry) {
                return Err(ErrorKind::Unreachable { detail });
            }
            let started = Instant::now();
            let result = self.send_once(req);
            self.record(registry, &result, started.elapsed());
            let retry = match &result {
                Ok(a) if a.status == 429 => match retry_after(a, jiff::Timestamp::now()) {
                    Some(pause) => {
                        self.pause(registry, pause);
                        false
                    }
                    None => true,
                },
                Ok(a) => status_is_transient(a.status),
                Err(e) => transport_is_transient(e),
            };
            if !retry || attempt >= self.max_retries {
                return result.map_err(ErrorKind::Transport);
            }
            std::thread::sleep(backoff(self.backoff, attempt));
            attempt += 1;
        }
    }

    fn send_once(&self, req: &Request) -> Result<Answer, ureq::Error> {
        let mut response = match req.method {
            Method::Head | Method::Get => {
                let mut b = if req.method == Method::Head {
                    self.agent.head(req.url)
                } else {
                    self.agent.get(req.url)
                };
                if let Some(a) = req.accept {
                    b = b.header("Accept", a);
                }
                if let Some(auth) = req.authorization {
                    b = b.header("Authorization", auth.expose());
                }
                b.call()?
            }
            Method::Post => {
                let mut b = self.agent.post(req.url);
                if let Some(a) = req.accept {
                    b = b.header("Accept", a);
                }
                b.send_form(req.form.iter().copied())?
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = if req.method == Method::Head {
            Vec::new()
        } else {
            // Error answers keep a bounded body for their message.
            let limit = if status >= 400 {
                ERROR_BODY_MAX
            } else {
                req.limit
            };
            response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()?
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn record(&self, registry: &str, result: &Result<Answer, ureq::Error>, took: Duration) {
        let outcome = self.record_stats(registry, result, took);
        if let Some(observe) = &self.observer {
            observe(registry, outcome, took);
        }
    }

    fn record_stats(
        &self,
        registry: &str,
        result: &Result<Answer, ureq::Error>,
        took: Duration,
    ) -> &'static str {
        let mut regs = lock(&self.registries);
        let s = regs.entry(registry.to_string()).or_default();
        s.requests += 1;
        s.latency += took;
        let outcome = match result {
            Ok(a) => {
                if let Some(n) = a.header("ratelimit-remaining").and_then(parse_rate_limit) {
                    s.rate_limit_remaining = Some(n);
                }
                match a.status {
                    0..=399 => "ok",
                    401 | 403 => "unauthorized",
                    404 => "not_found",
                    429 => "rate_limited",
                    400..=499 => "client_error",
                    _ => "server_error",
                }
            }
            Err(_) => "error",
        };
        *s.outcomes.entry(outcome).or_default() += 1;
        outcome
    }

    fn pause(&self, registry: &str, pause: Duration) {
        let pause = pause.min(MAX_PAUSE);
        let until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(pause.as_secs() as i64))
            .unwrap_or(jiff::Timestamp::MAX)
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::MAX);
        log::warn!(
            component = "registry", registry = registry;
            "registry {registry} answered 429 (rate limited); no requests to it until {until}"
        );
        lock(&self.registries)
            .entry(registry.to_string())
            .or_default()
            .paused = Some((Instant::now() + pause, until));
    }
}

fn challenge_of(a: &Answer) -> Result<Challenge, ErrorKind> {
    let h = a.header("www-authenticate").ok_or(ErrorKind::NoChallenge)?;
    challenge::parse(h).map_err(ErrorKind::Challenge)
}

/// The registry's `{"errors":[{"code","message"}]}`, shortened.
fn error_detail(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let first = e.errors.into_iter().next()?;
    let text = match (first.code.is_empty(), first.message.is_empty()) {
        (false, false) => format!("{}: {}", first.code, first.message),
        (false, true) => first.code,
        (true, false) => first.message,
        (true, true) => return None,
    };
    Some(text.chars().take(200).collect())
}

fn content_type(a: &Answer) -> Option<String> {
    a.header("content-type")
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| !c.is_empty())
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn basic_auth(username: &str, password: &Secret) -> Secret {
    let raw = format!("{username}:{}", password.expose());
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

fn bearer(token: &Secret) -> Secret {
    Secret::new(format!("Bearer {}", token.expose()))
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn retry_after(a: &Answer, now: jiff::Timestamp) -> Option<Duration> {
    let v = a.header("retry-after")?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    Some(Duration::try_from(when.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// `100;w=21600` → 100.
fn parse_rate_limit(v: &str) -> Option<u64> {
    v.split(';').next()?.trim().parse().ok()
}

/// Exponential back-off from `first`, with up to 50 % jitter so that parallel workers spread out.
fn backoff(first: Duration, attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = first
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = (h.finish() % 1000) as u32; // 0..1000 per mille of half the base
    base + base / 2 * jitter / 1000
}

/// (scheme, authority) of an absolute http(s) URL.
fn url_scheme_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then_some((scheme, host))
}

/// The path of the `rel="next"` link, if it stays on `base` (relative links are the common case).
fn next_link(header: &str, base: &str) -> Option<String> {
    for part in header.split(',') {
        let (target, params) = part.split_once(';').unwrap_or((part, ""));
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        if !is_next {
            continue;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        if target.starts_with('/') {
            return Some(target.to_string());
        }
        return target
            .strip_prefix(base)
            .filter(|p| p.starts_with('/'))
            .map(str::to_string);
    }
    None
}

/// TLS for every HTTPS agent (registries, webhooks): rustls with ring, verifying against the
/// compiled-in Mozilla roots plus `extra` (the `registry.caFile` certificates). ureq's own default
/// roots are not compiled in, so an agent without this config cannot make TLS connections.
pub fn tls_config(extra: Vec<ureq::tls::Certificate<'static>>) -> ureq::tls::TlsConfig {
    // The root list (~70 KB once encoded) is built once and shared by the agents that add nothing.
    static PUBLIC: std::sync::OnceLock<ureq::tls::TlsConfig> = std::sync::OnceLock::new();
    if extra.is_empty() {
        return PUBLIC.get_or_init(|| build_tls_config(Vec::new())).clone();
    }
    build_tls_config(extra)
}

fn build_tls_config(extra: Vec<ureq::tls::Certificate<'static>>) -> ureq::tls::TlsConfig {
    let roots: Vec<ureq::tls::Certificate<'static>> = webpki_roots::TLS_SERVER_ROOTS
        .iter()
        .map(|anchor| ureq::tls::Certificate::from_der(&anchor_certificate(anchor)).to_owned())
        .chain(extra)
        .collect();
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: AES_GCM_SUITES.to_vec(),
            kx_groups: rustls::crypto::ring::DEFAULT_KX_GROUPS.to_vec(),
            signature_verification_algorithms: SIGNATURE_ALGORITHMS,
            secure_random: &SystemRandom,
            key_provider: &NoClientKeys,
        }))
        .build()
}

/// rustls's own table for ring (`rustls::crypto::ring::default_provider`), which is not public:
/// building the provider by hand is what keeps ring's default suite list (and ChaCha20) out.
static SIGNATURE_ALGORITHMS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as S;
    use webpki::ring as alg;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        // For TLS 1.2 the curve is not fixed by the scheme; for TLS 1.3 it is.
        mapping: &[
            (
                S::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                S::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (S::ED25519, &[alg::ED25519]),
            (
                S::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

#[derive(Debug)]
struct SystemRandom;

impl rustls::crypto::SecureRandom for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// A minimal X.509 v3 certificate carrying a trust anchor. ureq takes roots only as certificates,
/// and the Mozilla roots are compiled in as trust anchors (subject, key, name constraints: less than
/// half the size of the full certificates). From a root, webpki reads back exactly those three
/// fields and ignores the rest (signature, validity), so the anchor it gets is the original one.
fn anchor_certificate(anchor: &rustls::pki_types::TrustAnchor<'_>) -> Vec<u8> {
    const SEQUENCE: u8 = 0x30;
    // ecdsa-with-SHA256; any algorithm will do as long as the inner and outer ones match.
    const ALGORITHM: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    const VERSION_3: &[u8] = &[0xa0, 0x03, 0x02, 0x01, 0x02];
    const SERIAL: &[u8] = &[0x02, 0x01, 0x01];
    const EMPTY_VALIDITY: &[u8] = &[0x30, 0x00];
    const NAME_CONSTRAINTS_OID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x1e];
    const EMPTY_SIGNATURE: &[u8] = &[0x03, 0x01, 0x00];
    let name = der(SEQUENCE, &[&anchor.subject]);
    let key = der(SEQUENCE, &[&anchor.subject_public_key_info]);
    let extensions = match &anchor.name_constraints {
        Some(constraints) => {
            let value = der(0x04, &[&der(SEQUENCE, &[constraints])]);
            let extension = der(SEQUENCE, &[NAME_CONSTRAINTS_OID, &value]);
            der(0xa3, &[&der(SEQUENCE, &[&extension])])
        }
        None => Vec::new(),
    };
    let tbs = der(
        SEQUENCE,
        &[
            VERSION_3,
            SERIAL,
            ALGORITHM,
            &name,
            EMPTY_VALIDITY,
            &name,
            &key,
            &extensions,
        ],
    );
    der(SEQUENCE, &[&tbs, ALGORITHM, EMPTY_SIGNATURE])
}

/// One DER element: `tag`, the definite length of the concatenated `parts`, then the parts.
fn der(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 10);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// ring's default suites minus ChaCha20-Poly1305: every TLS 1.3 server must offer AES-128-GCM
/// (RFC 8446 §9.1) and TLS 1.2 registries offer ECDHE with AES-GCM, so the ChaCha20 code is left out.
const AES_GCM_SUITES: [rustls::SupportedCipherSuite; 6] = {
    use rustls::crypto::ring::cipher_suite as cs;
    [
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ]
};

/// No agent presents a client certificate, so the provider loads no private keys: ring's key
/// parsing and signing code stays out of the binary.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "client certificates are not supported".into(),
        ))
    }
}

/// The certificates of `registry.caFile` (PEM); a file without any is an error.
fn ca_file_certs(
    path: &std::path::Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>, RegistryError> {
    let err = |d: String| RegistryError::new("configure", "registry.caFile", ErrorKind::Setup(d));
    let pem = std::fs::read(path).map_err(|e| err(format!("read {}: {e}", path.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(err(format!("{}: {e}", path.display()))),
        }
    }
    if certs.is_empty() {
        return Err(err(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;

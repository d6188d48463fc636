//! Routing (SPEC.md §8): method + path → [`Route`], and the query string → [`Query`]. Pure: no I/O,
//! no knowledge of the snapshot, the backend or authentication.
//!
//! Path rules: one trailing slash is tolerated (`/api/containers/` is `/api/containers`); empty
//! segments (`//`) are not. `:id` segments are percent-decoded as UTF-8 (`+` stays `+`); a segment
//! that does not decode is not found.

use std::fmt;

/// Every endpoint of SPEC.md §8, plus the two ways of missing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    /// `GET /`: the status page.
    Page,
    Metrics,
    ListContainers,
    GetContainer(String),
    UpdateContainer(String),
    StopContainer(String),
    StartContainer(String),
    RemoveContainer(String),
    RollbackContainer(String),
    RunUpdates,
    ListJobs,
    GetJob(String),
    Scan,
    ListImages,
    ListRegistries,
    Version,
    /// No endpoint has this path.
    NotFound,
    /// The path exists, not with this method; `allow` is the `Allow` header value.
    MethodNotAllowed {
        allow: &'static str,
    },
}

/// What a caller must prove to use a route (SPEC.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/healthz`, `/readyz`, `/`, and the 404/405 answers.
    Open,
    /// `/api/*` reads and `/metrics`: the read token when one is configured.
    Read,
    /// POST and DELETE: the admin token.
    Admin,
}

impl Route {
    pub fn access(&self) -> Access {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Page
            | Route::NotFound
            | Route::MethodNotAllowed { .. } => Access::Open,
            Route::Metrics
            | Route::ListContainers
            | Route::GetContainer(_)
            | Route::ListJobs
            | Route::GetJob(_)
            | Route::ListImages
            | Route::ListRegistries
            | Route::Version => Access::Read,
            Route::UpdateContainer(_)
            | Route::StopContainer(_)
            | Route::StartContainer(_)
            | Route::RemoveContainer(_)
            | Route::RollbackContainer(_)
            | Route::RunUpdates
            | Route::Scan => Access::Admin,
        }
    }
}

/// Maps a request line to its route. `path` is the path alone, without the query string.
pub fn route(method: &str, path: &str) -> Route {
    let Some(segs) = segments(path) else {
        return Route::NotFound;
    };
    // Each arm: (the methods this path allows, the route for `method` if allowed).
    let (allow, found): (&'static str, Option<Route>) = match segs.as_slice() {
        [] => get(method, Route::Page),
        ["healthz"] => get(method, Route::Healthz),
        ["readyz"] => get(method, Route::Readyz),
        ["metrics"] => get(method, Route::Metrics),
        ["api", "containers"] => get(method, Route::ListContainers),
        ["api", "containers", id] => {
            let Some(id) = decode_segment(id) else {
                return Route::NotFound;
            };
            let r = match method {
                "GET" => Some(Route::GetContainer(id)),
                "DELETE" => Some(Route::RemoveContainer(id)),
                _ => None,
            };
            ("GET, DELETE", r)
        }
        ["api", "containers", id, action] => {
            let make: fn(String) -> Route = match *action {
                "update" => Route::UpdateContainer,
                "stop" => Route::StopContainer,
                "start" => Route::StartContainer,
                "rollback" => Route::RollbackContainer,
                _ => return Route::NotFound,
            };
            let Some(id) = decode_segment(id) else {
                return Route::NotFound;
            };
            post(method, make(id))
        }
        ["api", "updates", "run"] => post(method, Route::RunUpdates),
        ["api", "jobs"] => get(method, Route::ListJobs),
        ["api", "jobs", id] => {
            let Some(id) = decode_segment(id) else {
                return Route::NotFound;
            };
            get(method, Route::GetJob(id))
        }
        ["api", "scan"] => post(method, Route::Scan),
        ["api", "images"] => get(method, Route::ListImages),
        ["api", "registries"] => get(method, Route::ListRegistries),
        ["api", "version"] => get(method, Route::Version),
        _ => return Route::NotFound,
    };
    found.unwrap_or(Route::MethodNotAllowed { allow })
}

fn get(method: &str, r: Route) -> (&'static str, Option<Route>) {
    ("GET", (method == "GET").then_some(r))
}

fn post(method: &str, r: Route) -> (&'static str, Option<Route>) {
    ("POST", (method == "POST").then_some(r))
}

/// `/a/b/` → `["a", "b"]`; `/` → `[]`; None for a path not starting with `/` or with an empty segment.
fn segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(segs)
}

fn decode_segment(seg: &str) -> Option<String> {
    let s = percent_decode(seg, false)?;
    (!s.is_empty()).then_some(s)
}

/// Percent-decodes `s` as UTF-8; with `plus_is_space`, `+` means a space (form encoding, queries).
/// None when a `%` is not followed by two hex digits or the bytes are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The query string, parsed. Flags accept `true`/`1`/`yes`, `false`/`0`/`no`, or a bare key (`?wait`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `wait=true`: answer with the finished result instead of `202` + job id.
    pub wait: bool,
    /// `dryRun=true`: report the plan, change nothing.
    pub dry_run: bool,
    /// `force=true`: e.g. remove a running container.
    pub force: bool,
    /// `status=UpdateAvailable[,Error...]` filter for `GET /api/containers`, as given.
    pub status: Option<String>,
    /// Every parameter, decoded, in order (unknown ones are kept, not rejected).
    pub params: Vec<(String, String)>,
}

/// A query string that cannot be understood; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

impl Query {
    /// Parses the part after `?` (None or empty: no parameters).
    pub fn parse(query: Option<&str>) -> Result<Query, QueryError> {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || {
                QueryError(format!(
                    "query parameter {pair:?} is not valid percent-encoded UTF-8"
                ))
            };
            let key = percent_decode(raw_key, true).ok_or_else(bad)?;
            let value = percent_decode(raw_value, true).ok_or_else(bad)?;
            match key.as_str() {
                "wait" => q.wait = flag(&key, &value)?,
                "dryRun" => q.dry_run = flag(&key, &value)?,
                "force" => q.force = flag(&key, &value)?,
                "status" => q.status = Some(value.clone()),
                _ => {}
            }
            q.params.push((key, value));
        }
        Ok(q)
    }

    /// The first value of parameter `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn flag(key: &str, value: &str) -> Result<bool, QueryError> {
    match value {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(QueryError(format!(
            "query parameter {key}={value:?}: expected true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn every_endpoint_routes() {
        let table: &[(&str, &str, Route)] = &[
            ("GET", "/", Route::Page),
            ("GET", "/healthz", Route::Healthz),
            ("GET", "/readyz", Route::Readyz),
            ("GET", "/metrics", Route::Metrics),
            ("GET", "/api/containers", Route::ListContainers),
            ("GET", "/api/containers/abc", Route::GetContainer(id("abc"))),
            (
                "DELETE",
                "/api/containers/abc",
                Route::RemoveContainer(id("abc")),
            ),
            (
                "POST",
                "/api/containers/abc/update",
                Route::UpdateContainer(id("abc")),
            ),
            (
                "POST",
                "/api/containers/abc/stop",
                Route::StopContainer(id("abc")),
            ),
            (
                "POST",
                "/api/containers/abc/start",
                Route::StartContainer(id("abc")),
            ),
            (
                "POST",
                "/api/containers/abc/rollback",
                Route::RollbackContainer(id("abc")),
            ),
            ("POST", "/api/updates/run", Route::RunUpdates),
            ("GET", "/api/jobs", Route::ListJobs),
            ("GET", "/api/jobs/17", Route::GetJob(id("17"))),
            ("POST", "/api/scan", Route::Scan),
            ("GET", "/api/images", Route::ListImages),
            ("GET", "/api/registries", Route::ListRegistries),
            ("GET", "/api/version", Route::Version),
        ];
        for (method, path, want) in table {
            assert_eq!(route(method, path), *want, "{method} {path}");
        }
    }

    #[test]
    fn trailing_slash_is_tolerated_empty_segments_are_not() {
        assert_eq!(route("GET", "/api/containers/"), Route::ListContainers);
        assert_eq!(route("GET", "/healthz/"), Route::Healthz);
        assert_eq!(
            route("POST", "/api/containers/web/stop/"),
            Route::StopContainer(id("web"))
        );
        assert_eq!(route("GET", "/api/containers//"), Route::NotFound);
        assert_eq!(route("GET", "//healthz"), Route::NotFound);
        assert_eq!(route("POST", "/api/containers//stop"), Route::NotFound);
        assert_eq!(route("GET", "healthz"), Route::NotFound);
    }

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(
            route("GET", "/api/containers/my%20app"),
            Route::GetContainer(id("my app"))
        );
        assert_eq!(
            route("GET", "/api/containers/a+b"),
            Route::GetContainer(id("a+b"))
        );
        assert_eq!(
            route("GET", "/api/containers/%2Fweb"),
            Route::GetContainer(id("/web"))
        );
        assert_eq!(
            route("GET", "/api/containers/caf%C3%A9"),
            Route::GetContainer(id("café"))
        );
        // Bad escapes and non-UTF-8 are not found, never a panic.
        assert_eq!(route("GET", "/api/containers/%"), Route::NotFound);
        assert_eq!(route("GET", "/api/containers/%zz"), Route::NotFound);
        assert_eq!(route("GET", "/api/containers/%ff"), Route::NotFound);
        assert_eq!(route("POST", "/api/containers/%ff/stop"), Route::NotFound);
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        let nf: &[(&str, &str)] = &[
            ("GET", "/api"),
            ("GET", "/api/"),
            ("GET", "/api/nope"),
            ("POST", "/api/containers/abc/explode"),
            ("GET", "/api/containers/abc/logs"),
            ("GET", "/api/containers/a/b/c"),
            ("GET", "/API/containers"),
            ("GET", "/index.html"),
            ("GET", ""),
        ];
        for (m, p) in nf {
            assert_eq!(route(m, p), Route::NotFound, "{m} {p}");
        }
        let na: &[(&str, &str, &str)] = &[
            ("POST", "/healthz", "GET"),
            ("HEAD", "/readyz", "GET"),
            ("DELETE", "/", "GET"),
            ("POST", "/api/containers", "GET"),
            ("PUT", "/api/containers/abc", "GET, DELETE"),
            ("POST", "/api/containers/abc", "GET, DELETE"),
            ("GET", "/api/containers/abc/update", "POST"),
            ("DELETE", "/api/containers/abc/rollback", "POST"),
            ("GET", "/api/scan", "POST"),
            ("GET", "/api/updates/run", "POST"),
            ("POST", "/api/jobs/1", "GET"),
            ("post", "/api/scan", "POST"),
        ];
        for (m, p, allow) in na {
            assert_eq!(route(m, p), Route::MethodNotAllowed { allow }, "{m} {p}");
        }
    }

    #[test]
    fn access_levels() {
        assert_eq!(route("GET", "/healthz").access(), Access::Open);
        assert_eq!(route("GET", "/").access(), Access::Open);
        assert_eq!(route("GET", "/metrics").access(), Access::Read);
        assert_eq!(route("GET", "/api/jobs").access(), Access::Read);
        assert_eq!(route("DELETE", "/api/containers/x").access(), Access::Admin);
        assert_eq!(route("POST", "/api/scan").access(), Access::Admin);
        assert_eq!(route("GET", "/nope").access(), Access::Open);
    }

    #[test]
    fn query_flags() {
        let q = Query::parse(Some("wait=true&dryRun=1&force")).unwrap();
        assert!(q.wait && q.dry_run && q.force);
        let q = Query::parse(Some("wait=false&dryRun=0")).unwrap();
        assert!(!q.wait && !q.dry_run && !q.force);
        assert_eq!(Query::parse(None).unwrap(), Query::default());
        assert_eq!(Query::parse(Some("")).unwrap(), Query::default());
        let q = Query::parse(Some("status=UpdateAvailable&x=a%20b+c&&")).unwrap();
        assert_eq!(q.status.as_deref(), Some("UpdateAvailable"));
        assert_eq!(q.get("x"), Some("a b c"));
        assert_eq!(q.get("missing"), None);
        let err = Query::parse(Some("wait=maybe")).unwrap_err();
        assert!(err.0.contains("wait") && err.0.contains("maybe"), "{err}");
        assert!(Query::parse(Some("x=%zz")).is_err());
    }
}

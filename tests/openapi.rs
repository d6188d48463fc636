//! `openapi.json` against the real router, so the published description cannot drift from the
//! code: every path and method it lists is a route, every route is listed, each operation's
//! `x-access` is the route's access level, and every `ErrorCode` is described.
//!
//! The router is pure (`watch_docker::api::route`), so this needs no server, engine or network.

use serde_json::Value;
use std::collections::BTreeSet;
use watch_docker::api::{route, Access, ErrorCode, Route};

/// Every method the probes try. The router answers only GET, POST and DELETE today; the others are
/// here so that a route added under another method shows up as missing from the spec.
const METHODS: [&str; 6] = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"];

/// Concrete paths that reach every endpoint, plus near misses that must stay unrouted unless the
/// spec lists them. `{id}` placeholders of the spec become `abc`.
const PROBES: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api",
    "/api/containers",
    "/api/containers/abc",
    "/api/containers/abc/update",
    "/api/containers/abc/stop",
    "/api/containers/abc/start",
    "/api/containers/abc/rollback",
    "/api/containers/abc/restart",
    "/api/containers/abc/remove",
    "/api/containers/abc/logs",
    "/api/updates",
    "/api/updates/run",
    "/api/updates/abc",
    "/api/jobs",
    "/api/jobs/abc",
    "/api/jobs/abc/cancel",
    "/api/scan",
    "/api/scan/abc",
    "/api/images",
    "/api/images/abc",
    "/api/registries",
    "/api/registries/abc",
    "/api/version",
    "/api/config",
    "/api/events",
    "/version",
    "/status",
];

const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// `/api/containers/{id}/stop` → `/api/containers/abc/stop`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "abc"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// (METHOD, path template, operation) for every operation of the spec.
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let paths = spec["paths"].as_object().expect("openapi.json has paths");
    let mut out = Vec::new();
    for (template, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for key in item.keys() {
            if OPERATION_KEYS.contains(&key.as_str()) {
                out.push((
                    key.to_ascii_uppercase(),
                    template.clone(),
                    item[key].clone(),
                ));
            }
        }
    }
    out
}

/// The spec's path template of a route. No wildcard arm: a new `Route` variant does not compile
/// here until it is given its place in `openapi.json`.
fn template_of(r: &Route) -> Option<&'static str> {
    Some(match r {
        Route::Page => "/",
        Route::Healthz => "/healthz",
        Route::Readyz => "/readyz",
        Route::Metrics => "/metrics",
        Route::ListContainers => "/api/containers",
        Route::GetContainer(_) | Route::RemoveContainer(_) => "/api/containers/{id}",
        Route::UpdateContainer(_) => "/api/containers/{id}/update",
        Route::StopContainer(_) => "/api/containers/{id}/stop",
        Route::StartContainer(_) => "/api/containers/{id}/start",
        Route::RollbackContainer(_) => "/api/containers/{id}/rollback",
        Route::RunUpdates => "/api/updates/run",
        Route::ListJobs => "/api/jobs",
        Route::GetJob(_) => "/api/jobs/{id}",
        Route::Scan => "/api/scan",
        Route::ListImages => "/api/images",
        Route::ListRegistries => "/api/registries",
        Route::Version => "/api/version",
        Route::NotFound | Route::MethodNotAllowed { .. } => return None,
    })
}

fn is_route(r: &Route) -> bool {
    !matches!(r, Route::NotFound | Route::MethodNotAllowed { .. })
}

#[test]
fn every_operation_of_the_spec_is_a_route_of_the_router() {
    let spec = spec();
    let ops = operations(&spec);
    assert!(!ops.is_empty(), "openapi.json lists no operation");
    for (method, template, _) in &ops {
        let path = concrete(template);
        let r = route(method, &path);
        assert!(
            is_route(&r),
            "openapi.json lists {method} {template}, the router answers {r:?} for {method} {path}"
        );
        assert_eq!(
            template_of(&r),
            Some(template.as_str()),
            "{method} {template} reaches {r:?}, which belongs to another path"
        );
    }
}

#[test]
fn every_route_of_the_router_is_in_the_spec() {
    let spec = spec();
    let listed: BTreeSet<(String, String)> = operations(&spec)
        .into_iter()
        .map(|(m, t, _)| (m, concrete(&t)))
        .collect();
    let mut probes: BTreeSet<String> = PROBES.iter().map(|p| p.to_string()).collect();
    probes.extend(listed.iter().map(|(_, p)| p.clone()));
    for path in &probes {
        for method in METHODS {
            let routed = is_route(&route(method, path));
            let in_spec = listed.contains(&(method.to_string(), path.clone()));
            assert_eq!(
                routed,
                in_spec,
                "{method} {path}: router {} it, openapi.json {} it",
                if routed { "serves" } else { "does not serve" },
                if in_spec { "lists" } else { "does not list" },
            );
        }
    }
}

#[test]
fn access_levels_and_security_match_the_router() {
    let spec = spec();
    for (method, template, op) in operations(&spec) {
        let r = route(&method, &concrete(&template));
        let want = match r.access() {
            Access::Open => "open",
            Access::Read => "read",
            Access::Admin => "admin",
        };
        assert_eq!(
            op["x-access"].as_str(),
            Some(want),
            "{method} {template}: x-access"
        );
        let schemes: BTreeSet<&str> = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {template}: no security list"))
            .iter()
            .flat_map(|req| req.as_object().into_iter().flat_map(|o| o.keys()))
            .map(String::as_str)
            .collect();
        let want_schemes: BTreeSet<&str> = match r.access() {
            Access::Open => BTreeSet::new(),
            Access::Read => ["adminToken", "readToken"].into(),
            Access::Admin => ["adminToken"].into(),
        };
        assert_eq!(schemes, want_schemes, "{method} {template}: security");
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {template}: no responses"));
        let needs: &[&str] = match r.access() {
            Access::Open => &[],
            Access::Read => &["401"],
            Access::Admin => &["401", "403"],
        };
        for status in needs {
            assert!(
                responses.contains_key(*status),
                "{method} {template}: no {status} response"
            );
        }
    }
    for name in ["adminToken", "readToken"] {
        let scheme = &spec["components"]["securitySchemes"][name];
        assert_eq!(scheme["type"], "http", "{name}");
        assert_eq!(scheme["scheme"], "bearer", "{name}");
    }
}

/// Every variant, by an exhaustive match: a new `ErrorCode` does not compile here until it is
/// added, and then fails below until `openapi.json` describes it.
fn all_error_codes() -> Vec<ErrorCode> {
    let all = [
        ErrorCode::BadRequest,
        ErrorCode::ImageRequired,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ScanFailed,
        ErrorCode::UpdateFailed,
        ErrorCode::DockerError,
        ErrorCode::RegistryError,
        ErrorCode::Internal,
    ];
    for c in all {
        match c {
            ErrorCode::BadRequest
            | ErrorCode::ImageRequired
            | ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Conflict
            | ErrorCode::PayloadTooLarge
            | ErrorCode::ScanFailed
            | ErrorCode::UpdateFailed
            | ErrorCode::DockerError
            | ErrorCode::RegistryError
            | ErrorCode::Internal => {}
        }
    }
    all.to_vec()
}

#[test]
fn every_error_code_is_described_with_its_http_status() {
    let spec = spec();
    let schema = &spec["components"]["schemas"]["ErrorCode"];
    let listed: BTreeSet<u64> = schema["enum"]
        .as_array()
        .expect("ErrorCode has an enum")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let descriptions = [
        schema["description"].as_str().unwrap_or(""),
        spec["info"]["description"].as_str().unwrap_or(""),
    ];
    let mut known = BTreeSet::new();
    for code in all_error_codes() {
        let n = u64::from(code.code());
        known.insert(n);
        assert!(listed.contains(&n), "{code:?} ({n}) missing from the enum");
        let line = format!("`{n}` {code:?} — HTTP {}", code.http_status());
        for d in descriptions {
            assert!(d.contains(&line), "no line {line:?} in:\n{d}");
        }
    }
    assert_eq!(listed, known, "the enum lists codes the server never sends");
}

#[test]
fn every_reference_resolves() {
    let spec = spec();
    fn walk(v: &Value, spec: &Value, at: &str) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    let pointer = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("{at}: external $ref {r}"));
                    assert!(
                        spec.pointer(pointer).is_some(),
                        "{at}: $ref {r} points nowhere"
                    );
                }
                for (k, v) in o {
                    walk(v, spec, &format!("{at}/{k}"));
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, spec, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    walk(&spec, &spec, "");
    assert_eq!(spec["openapi"], "3.0.3");
}

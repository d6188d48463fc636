//! Pulling an image by tag through the engine (SPEC §6 step 1): the `/images/create` query, the
//! `X-Registry-Auth` header, and reading the progress stream to its end.
//!
//! The header and the summary are pure and tested here; `pull` is the one engine call. It knows
//! the credential shapes, not where credentials come from (the caller looks them up).

use crate::docker::{query, Engine, EngineError};
use crate::registry::{Credential, Reference};
use base64::Engine as _;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Docker Hub's server address in `X-Registry-Auth` (the engine's legacy key for the Hub).
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// A pull may sit silent while a big layer is extracted; more than this without a byte is a hang.
const PULL_IDLE: Duration = Duration::from_secs(300);

/// Why a pull failed.
#[derive(Debug)]
pub enum PullError {
    /// The request could not be made or the stream broke.
    Engine(EngineError),
    /// The engine reported an `errorDetail` in the progress stream.
    Stream { reference: String, message: String },
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PullError::Engine(e) => write!(f, "{e}"),
            PullError::Stream { reference, message } => write!(f, "pull {reference}: {message}"),
        }
    }
}

impl std::error::Error for PullError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PullError::Engine(e) => Some(e),
            PullError::Stream { .. } => None,
        }
    }
}

/// The query of `POST /images/create`: `fromImage` without the tag and the tag (or digest) given
/// separately, always, or the engine pulls every tag of the repository.
pub fn pull_query(reference: &Reference) -> String {
    let repo = reference.repo_key();
    let tag = reference
        .digest
        .as_deref()
        .or(reference.tag.as_deref())
        .unwrap_or("latest");
    query(&[("fromImage", &repo), ("tag", tag)])
}

/// `X-Registry-Auth`: base64url (padded) JSON. `registry` is the normalised registry host.
pub fn registry_auth_header(registry: &str, credential: &Credential) -> String {
    let server = if registry == "docker.io" {
        DOCKER_HUB_SERVER
    } else {
        registry
    };
    let body = match credential {
        Credential::Basic { username, password } => json!({
            "username": username,
            "password": password.expose(),
            "serveraddress": server,
        }),
        Credential::IdentityToken(token) => json!({
            "identitytoken": token.expose(),
            "serveraddress": server,
        }),
    };
    base64::engine::general_purpose::URL_SAFE.encode(body.to_string())
}

/// What the progress stream said, for a one-line log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PullSummary {
    /// The last `status` line (`Status: Downloaded newer image for ...`).
    pub last_status: String,
    /// Layers reported `Pull complete`.
    pub layers_pulled: usize,
    /// Layers reported `Already exists`.
    pub layers_present: usize,
    /// The first `errorDetail.message` (or `error`), if any.
    pub error: Option<String>,
}

impl PullSummary {
    /// Folds one progress object into the summary.
    pub fn add(&mut self, item: &Value) {
        if self.error.is_none() {
            let message = item
                .pointer("/errorDetail/message")
                .or_else(|| item.get("error"))
                .and_then(Value::as_str);
            if let Some(m) = message {
                self.error = Some(m.to_string());
            } else if item.get("errorDetail").is_some() {
                self.error = Some(item["errorDetail"].to_string());
            }
        }
        if let Some(status) = item.get("status").and_then(Value::as_str) {
            match status {
                "Pull complete" => self.layers_pulled += 1,
                "Already exists" => self.layers_present += 1,
                _ => {}
            }
            if item.get("id").is_none() || status.starts_with("Status:") {
                self.last_status = status.to_string();
            }
        }
    }
}

/// Pulls `reference` and reads the stream to its end. `auth` is the `X-Registry-Auth` value.
pub fn pull(
    engine: &Engine,
    reference: &Reference,
    auth: Option<&str>,
) -> Result<PullSummary, PullError> {
    let path = format!("/images/create{}", pull_query(reference));
    let headers: Vec<(&str, &str)> = auth.map(|a| ("X-Registry-Auth", a)).into_iter().collect();
    let op = format!("pull {reference}");
    let stream = engine
        .stream("POST", &path, &headers, PULL_IDLE)
        .map_err(|e| PullError::Engine(e.context(op.clone())))?;
    let mut summary = PullSummary::default();
    for item in stream {
        let item = item.map_err(|e| PullError::Engine(e.context(op.clone())))?;
        summary.add(&item);
    }
    match summary.error.take() {
        Some(message) => Err(PullError::Stream {
            reference: reference.to_string(),
            message,
        }),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn query_always_carries_the_tag() {
        let r = Reference::parse("127.0.0.1:5000/app").expect("ref");
        assert_eq!(
            pull_query(&r),
            "?fromImage=127.0.0.1%3A5000%2Fapp&tag=latest"
        );
        let r = Reference::parse("nginx:1.27").expect("ref");
        assert_eq!(
            pull_query(&r),
            "?fromImage=docker.io%2Flibrary%2Fnginx&tag=1.27"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("app:v1@{digest}")).expect("ref");
        assert!(pull_query(&r).ends_with(&format!("&tag=sha256%3A{}", "a".repeat(64))));
    }

    fn decode(header: &str) -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(header)
            .expect("base64url, padded");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn auth_header_is_base64url_json() {
        let basic = Credential::Basic {
            username: "u".into(),
            password: Secret::new("p?>~"),
        };
        let h = registry_auth_header("docker.io", &basic);
        assert!(!h.contains('+') && !h.contains('/'), "{h}");
        assert_eq!(
            decode(&h),
            json!({"username":"u","password":"p?>~","serveraddress":"https://index.docker.io/v1/"})
        );
        let token = Credential::IdentityToken(Secret::new("tok"));
        assert_eq!(
            decode(&registry_auth_header("ghcr.io", &token)),
            json!({"identitytoken":"tok","serveraddress":"ghcr.io"})
        );
    }

    #[test]
    fn summary_counts_layers_and_finds_errors() {
        let mut s = PullSummary::default();
        for item in [
            json!({"status":"Pulling from app","id":"v2"}),
            json!({"status":"Already exists","id":"a"}),
            json!({"status":"Pull complete","id":"b"}),
            json!({"status":"Digest: sha256:x"}),
            json!({"status":"Status: Downloaded newer image for app:v2"}),
        ] {
            s.add(&item);
        }
        assert_eq!(s.layers_pulled, 1);
        assert_eq!(s.layers_present, 1);
        assert_eq!(s.last_status, "Status: Downloaded newer image for app:v2");
        assert_eq!(s.error, None);
        s.add(&json!({"errorDetail":{"message":"toomanyrequests: slow down"},"error":"x"}));
        s.add(&json!({"errorDetail":{"message":"second"}}));
        assert_eq!(s.error.as_deref(), Some("toomanyrequests: slow down"));
    }
}

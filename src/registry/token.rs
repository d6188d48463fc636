//! Bearer tokens: the token endpoint's answer, the cache of tokens per (realm, service, scope set)
//! and the token request URLs (several `scope` parameters, in batches under a URL size limit).
//! Pure: the clock is a parameter; knows nothing of HTTP clients or credentials.

use crate::config::Secret;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Lifetime when the answer gives none, and the floor docker/distribution applies to short ones.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// A token is dropped this long before it expires, so a request never carries one that dies in flight.
const SKEW: Duration = Duration::from_secs(10);
/// Token URLs longer than this are split. Proxies and registries refuse request lines of 8 KB and
/// more (nginx's default buffer); 7 KB keeps a margin and still carries ~150 repository scopes, so
/// a scan of a typical host needs one token request per registry (SPEC.md §11: N + 2).
pub const MAX_TOKEN_URL: usize = 7 * 1024;

/// `repository:<name>:pull`
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

#[derive(serde::Deserialize)]
struct RawToken {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<i64>,
    issued_at: Option<String>,
}

/// A parsed token answer: the token and how long it may be used from now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    pub token: Secret,
    pub usable_for: Duration,
}

/// Parses `{"token"|"access_token", "expires_in"?, "issued_at"?}`; `now` is the wall clock, to
/// shorten the lifetime of a token issued a while ago.
pub fn parse_token(body: &[u8], now: jiff::Timestamp) -> Result<TokenAnswer, String> {
    let raw: RawToken = serde_json::from_slice(body)
        .map_err(|e| format!("token answer is not the expected JSON ({e})"))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or("token answer has neither token nor access_token")?;
    let lifetime = raw
        .expires_in
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME)
        .max(DEFAULT_LIFETIME);
    let age = raw
        .issued_at
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .and_then(|issued| Duration::try_from(now.duration_since(issued)).ok())
        .unwrap_or(Duration::ZERO);
    let skew = SKEW.min(lifetime / 2);
    Ok(TokenAnswer {
        token: Secret::new(token),
        usable_for: lifetime.saturating_sub(age).saturating_sub(skew),
    })
}

#[derive(Debug)]
struct Entry {
    realm: String,
    service: Option<String>,
    scopes: BTreeSet<String>,
    token: Secret,
    expires: Instant,
}

/// Tokens per (realm, service, scope set). A token covers every scope of its set, so the token a
/// scan asked for many repositories serves each of them.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Vec<Entry>,
}

impl TokenCache {
    /// A live token for `scope` (None scope: any live token of that realm and service). The newest
    /// wins: after a batch token was refused for one repository, that repository's own token is used.
    pub fn find(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        now: Instant,
    ) -> Option<Secret> {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.realm == realm && e.service.as_deref() == service && e.expires > now)
            .find(|e| scope.is_none_or(|s| e.scopes.contains(s)))
            .map(|e| e.token.clone())
    }

    pub fn insert(
        &mut self,
        realm: &str,
        service: Option<&str>,
        scopes: BTreeSet<String>,
        answer: TokenAnswer,
        now: Instant,
    ) {
        self.entries.retain(|e| {
            e.expires > now
                && !(e.realm == realm && e.service.as_deref() == service && e.scopes == scopes)
        });
        self.entries.push(Entry {
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scopes,
            token: answer.token,
            expires: now + answer.usable_for,
        });
    }

    /// Forgets the token that was refused for `scope` (a registry may grant less than asked).
    pub fn forget(&mut self, realm: &str, service: Option<&str>, scope: &str) {
        self.entries.retain(|e| {
            !(e.realm == realm && e.service.as_deref() == service && e.scopes.contains(scope))
        });
    }
}

/// The token URL for `scopes`: `realm?service=..&scope=..&scope=..` (percent-encoded).
pub fn token_url<'a>(
    realm: &str,
    service: Option<&str>,
    scopes: impl IntoIterator<Item = &'a String>,
) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    if let Some(s) = service {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&encode(s));
        sep = '&';
    }
    for scope in scopes {
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&encode(scope));
        sep = '&';
    }
    url
}

/// Splits `scopes` into batches whose token URL stays under `max_url` (a single scope longer than
/// that still gets its own batch).
pub fn batches(
    realm: &str,
    service: Option<&str>,
    scopes: &BTreeSet<String>,
    max_url: usize,
) -> Vec<BTreeSet<String>> {
    let base = token_url(realm, service, []).len();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    let mut current = BTreeSet::new();
    let mut len = base;
    for s in scopes {
        let add = "&scope=".len() + encode(s).len();
        if !current.is_empty() && len + add > max_url {
            out.push(std::mem::take(&mut current));
            len = base;
        }
        len += add;
        current.insert(s.clone());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_token_answers() {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        type Want = Result<(&'static str, u64), &'static str>;
        let cases: &[(&str, Want)] = &[
            (r#"{"token":"t1"}"#, Ok(("t1", 50))),
            (r#"{"access_token":"t2","expires_in":300}"#, Ok(("t2", 290))),
            (
                r#"{"token":"","access_token":"t3","expires_in":5}"#,
                Ok(("t3", 50)),
            ),
            (
                r#"{"token":"t4","expires_in":300,"issued_at":"2024-12-31T23:58:00Z"}"#,
                Ok(("t4", 170)),
            ),
            (
                r#"{"token":"t5","expires_in":300,"issued_at":"2025-01-01T00:01:00Z"}"#,
                Ok(("t5", 290)),
            ),
            (
                r#"{"token":"t6","expires_in":300,"issued_at":"yesterday"}"#,
                Ok(("t6", 290)),
            ),
            (r#"{"token":"t7","expires_in":-1}"#, Ok(("t7", 50))),
            (r#"{"expires_in":300}"#, Err("neither")),
            ("<html>", Err("JSON")),
            (r#"{"token":"#, Err("JSON")),
        ];
        for (body, want) in cases {
            let got = parse_token(body.as_bytes(), now);
            match (got, want) {
                (Ok(a), Ok((t, secs))) => {
                    assert_eq!(a.token.expose(), *t, "{body}");
                    assert_eq!(a.usable_for, Duration::from_secs(*secs), "{body}");
                }
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{body}: {e}"),
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn cache_covers_subsets_and_expires() {
        let t0 = Instant::now();
        let mut c = TokenCache::default();
        let answer = |t: &str, secs| TokenAnswer {
            token: Secret::new(t),
            usable_for: Duration::from_secs(secs),
        };
        c.insert("r", Some("s"), set(&["a", "b"]), answer("ab", 100), t0);
        assert_eq!(
            c.find("r", Some("s"), Some("a"), t0)
                .map(|t| t.expose().to_string()),
            Some("ab".into())
        );
        assert!(c.find("r", Some("s"), Some("b"), t0).is_some());
        assert!(c.find("r", Some("s"), Some("c"), t0).is_none());
        assert!(c.find("r", None, Some("a"), t0).is_none());
        assert!(c.find("other", Some("s"), Some("a"), t0).is_none());
        assert!(c.find("r", Some("s"), None, t0).is_some());
        assert!(c
            .find("r", Some("s"), Some("a"), t0 + Duration::from_secs(100))
            .is_none());
        c.insert("r", Some("s"), set(&["c"]), answer("c", 10), t0);
        assert_eq!(
            c.find("r", Some("s"), Some("c"), t0)
                .map(|t| t.expose().to_string()),
            Some("c".into())
        );
        c.insert("r", Some("s"), set(&["a"]), answer("a-alone", 10), t0);
        assert_eq!(
            c.find("r", Some("s"), Some("a"), t0)
                .map(|t| t.expose().to_string()),
            Some("a-alone".into())
        );
        assert_eq!(
            c.find("r", Some("s"), Some("b"), t0)
                .map(|t| t.expose().to_string()),
            Some("ab".into())
        );
        c.forget("r", Some("s"), "a");
        assert!(c.find("r", Some("s"), Some("b"), t0).is_none());
        assert!(c.find("r", Some("s"), Some("c"), t0).is_some());
    }

    #[test]
    fn urls_and_batches() {
        let scopes = set(&["repository:a/b:pull", "repository:c:pull"]);
        assert_eq!(
            token_url("https://auth.io/token", Some("reg istry"), &scopes),
            "https://auth.io/token?service=reg%20istry&scope=repository%3Aa%2Fb%3Apull&scope=repository%3Ac%3Apull"
        );
        assert_eq!(
            token_url("https://h/t?x=1", None, &set(&["s"])),
            "https://h/t?x=1&scope=s"
        );

        let many: BTreeSet<String> = (0..300)
            .map(|i| pull_scope(&format!("team/app{i:03}")))
            .collect();
        let b = batches("https://auth.io/token", Some("svc"), &many, MAX_TOKEN_URL);
        assert!(b.len() > 1);
        assert_eq!(b.iter().map(BTreeSet::len).sum::<usize>(), 300);
        for batch in &b {
            assert!(token_url("https://auth.io/token", Some("svc"), batch).len() <= MAX_TOKEN_URL);
        }
        assert_eq!(batches("r", None, &set(&["x"]), 1).len(), 1);
        assert!(batches("r", None, &BTreeSet::new(), 100).is_empty());
    }
}

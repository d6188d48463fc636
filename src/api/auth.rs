//! Who may call what (SPEC.md §8): the admin token for mutations, the read token (or the admin
//! token) for reads when one is set, nothing for `/healthz`, `/readyz` and `/`. Pure: takes the
//! `Authorization` header value, answers allowed (and whether the caller is admin) or the reply to
//! send. Never reads a body, never logs a token.

use super::reply::{ApiReply, ErrorCode};
use super::route::Access;
use crate::config::Secret;

/// The tokens the server was configured with.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub allow_unauthenticated: bool,
}

const REALM: &str = "Bearer realm=\"watch-docker\"";

/// `Ok(admin)` when the caller may use a route of this access level (`admin`: it holds the admin
/// token, or no token is configured and unauthenticated use is allowed); else the 401/403 reply.
pub fn authorize(
    access: Access,
    authorization: Option<&[u8]>,
    cfg: &AuthConfig,
) -> Result<bool, ApiReply> {
    // An empty configured token would match an empty bearer: treat it as no token at all.
    let admin_token = cfg.token.as_ref().filter(|s| !s.is_empty());
    let read_token = cfg.read_token.as_ref().filter(|s| !s.is_empty());
    let bearer = authorization.and_then(bearer_token);
    let holds = |t: Option<&Secret>| match (t, bearer) {
        (Some(t), Some(b)) => ct_eq(t.expose().as_bytes(), b),
        _ => false,
    };
    let is_admin = holds(admin_token) || (admin_token.is_none() && cfg.allow_unauthenticated);

    match access {
        Access::Open => Ok(is_admin),
        Access::Read => match read_token {
            None => Ok(is_admin),
            Some(_) if is_admin || holds(read_token) => Ok(is_admin),
            Some(_) => Err(unauthorized(bearer.is_some(), "server.readToken")),
        },
        Access::Admin => match admin_token {
            None if cfg.allow_unauthenticated => Ok(true),
            None => Err(ApiReply::error(
                ErrorCode::Forbidden,
                "mutating endpoints are disabled because no admin token is configured: set \
                 server.token (WATCH_SERVER_TOKEN) or server.allowUnauthenticated: true",
            )),
            Some(_) if is_admin => Ok(true),
            Some(_) => Err(unauthorized(bearer.is_some(), "server.token")),
        },
    }
}

fn unauthorized(presented: bool, which: &str) -> ApiReply {
    let msg = if presented {
        format!("the bearer token is not valid here (this endpoint needs {which})")
    } else {
        format!("missing credentials: send Authorization: Bearer <{which}>")
    };
    ApiReply::error(ErrorCode::Unauthorized, msg).with_header("WWW-Authenticate", REALM)
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1); None for other schemes.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Equality whose time depends on neither the contents nor the lengths: both sides are hashed to
/// fixed-size digests, which are compared without an early exit.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let sha256 = |x: &[u8]| ring::digest::digest(&ring::digest::SHA256, x);
    let (da, db) = (sha256(a), sha256(b));
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(token: Option<&str>, read: Option<&str>, open: bool) -> AuthConfig {
        AuthConfig {
            token: token.map(Secret::new),
            read_token: read.map(Secret::new),
            allow_unauthenticated: open,
        }
    }

    /// The outcome as (allowed-as-admin, or the error code).
    fn check(access: Access, header: Option<&str>, c: &AuthConfig) -> Result<bool, u64> {
        authorize(access, header.map(str::as_bytes), c).map_err(|r| r.code().unwrap_or(0))
    }

    #[test]
    fn matrix() {
        use Access::*;
        let none = cfg(None, None, false);
        let open = cfg(None, None, true);
        let admin = cfg(Some("s3cret"), None, false);
        let both = cfg(Some("s3cret"), Some("r3ad"), false);
        let empty = cfg(Some(""), Some(""), false);
        type Row<'a> = (Access, Option<&'a str>, &'a AuthConfig, Result<bool, u64>);
        let table: &[Row] = &[
            (Open, None, &none, Ok(false)),
            (Read, None, &none, Ok(false)),
            (Admin, None, &none, Err(40300)),
            (Admin, Some("Bearer anything"), &none, Err(40300)),
            (Admin, None, &open, Ok(true)),
            (Read, None, &open, Ok(true)),
            (Admin, None, &admin, Err(40100)),
            (Admin, Some("Bearer wrong"), &admin, Err(40100)),
            (Admin, Some("Bearer s3cret"), &admin, Ok(true)),
            (Admin, Some("bearer   s3cret  "), &admin, Ok(true)),
            (Admin, Some("Basic s3cret"), &admin, Err(40100)),
            (Admin, Some("Bearer"), &admin, Err(40100)),
            (Admin, Some("Bearer s3cret2"), &admin, Err(40100)),
            (Admin, Some("Bearer s3cre"), &admin, Err(40100)),
            (Read, None, &admin, Ok(false)),
            (Read, Some("Bearer s3cret"), &admin, Ok(true)),
            (Read, None, &both, Err(40100)),
            (Read, Some("Bearer nope"), &both, Err(40100)),
            (Read, Some("Bearer r3ad"), &both, Ok(false)),
            (Read, Some("Bearer s3cret"), &both, Ok(true)),
            (Admin, Some("Bearer r3ad"), &both, Err(40100)),
            (Open, None, &both, Ok(false)),
            // Empty configured tokens mean "not configured", and never match an empty bearer.
            (Admin, Some("Bearer "), &empty, Err(40300)),
            (Read, None, &empty, Ok(false)),
        ];
        for (i, (access, header, c, want)) in table.iter().enumerate() {
            assert_eq!(
                check(*access, *header, c),
                *want,
                "row {i}: {access:?} {header:?}"
            );
        }
    }

    #[test]
    fn messages_explain_and_401_challenges() {
        let r = authorize(Access::Admin, None, &cfg(None, None, false)).unwrap_err();
        let body = format!("{:?}", r.body);
        assert!(body.contains("server.token (WATCH_SERVER_TOKEN)"), "{body}");
        assert!(body.contains("server.allowUnauthenticated: true"), "{body}");
        assert_eq!(r.status, 403);
        let r = authorize(Access::Admin, None, &cfg(Some("t"), None, false)).unwrap_err();
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "WWW-Authenticate" && v.starts_with("Bearer")));
        // The configured token never appears in a reply.
        let r = authorize(
            Access::Admin,
            Some(b"Bearer x"),
            &cfg(Some("t0ken"), None, false),
        );
        assert!(!format!("{r:?}").contains("t0ken"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
    }
}

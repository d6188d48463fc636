//! `WWW-Authenticate` challenges (RFC 7235 auth-params) as registries send them on 401:
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"` or
//! `Basic realm="Registry"`. Pure parsing; values keep their case (a realm URL is case-sensitive) and
//! quoted values may hold commas and `\"` escapes. Knows nothing of HTTP clients or credentials.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic {
        realm: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    Empty,
    UnsupportedScheme(String),
    Malformed {
        header: String,
        reason: &'static str,
    },
    BearerWithoutRealm(String),
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeError::Empty => f.write_str("WWW-Authenticate header is empty"),
            ChallengeError::UnsupportedScheme(s) => {
                write!(
                    f,
                    "WWW-Authenticate scheme {s:?} is not supported (Bearer, Basic)"
                )
            }
            ChallengeError::Malformed { header, reason } => {
                write!(
                    f,
                    "WWW-Authenticate header {header:?} is malformed: {reason}"
                )
            }
            ChallengeError::BearerWithoutRealm(h) => {
                write!(
                    f,
                    "WWW-Authenticate header {h:?} is a Bearer challenge without realm"
                )
            }
        }
    }
}

impl std::error::Error for ChallengeError {}

/// Parses one challenge. Parameter names are case-insensitive, values are kept exactly.
pub fn parse(header: &str) -> Result<Challenge, ChallengeError> {
    let h = header.trim();
    if h.is_empty() {
        return Err(ChallengeError::Empty);
    }
    let (scheme, rest) = match h.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&h[..i], &h[i..]),
        None => (h, ""),
    };
    let params = parse_params(rest).map_err(|reason| ChallengeError::Malformed {
        header: header.to_string(),
        reason,
    })?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        let realm = get("realm")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ChallengeError::BearerWithoutRealm(header.to_string()))?;
        Ok(Challenge::Bearer {
            realm,
            service: get("service"),
            scope: get("scope"),
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        Ok(Challenge::Basic {
            realm: get("realm"),
        })
    } else {
        Err(ChallengeError::UnsupportedScheme(scheme.to_string()))
    }
}

/// `key=value` or `key="quoted"`, separated by commas, with optional whitespace anywhere between.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_ascii_whitespace() || c == ',' {
                break;
            }
            if c == '"' {
                return Err("quote in a parameter name");
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err("parameter without '='");
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted value"),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err("unterminated quoted value"),
                    },
                    Some(c) => value.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
            match chars.peek() {
                None | Some(',') => {}
                Some(_) => return Err("text after a quoted value"),
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value.truncate(value.trim_end().len());
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    #[test]
    fn parses_challenges() {
        let cases: Vec<(&str, Challenge)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/nginx:pull"),
                ),
            ),
            (
                r#"bearer   Realm = "https://Auth.Example/Token" ,  Service="Reg""#,
                bearer("https://Auth.Example/Token", Some("Reg"), None),
            ),
            (
                r#"BEARER realm=https://h/t,service=s"#,
                bearer("https://h/t", Some("s"), None),
            ),
            (
                r#"Bearer realm="https://h/t",scope="repository:a:pull,push repository:b:pull""#,
                bearer(
                    "https://h/t",
                    None,
                    Some("repository:a:pull,push repository:b:pull"),
                ),
            ),
            (
                r#"Bearer realm="https://h/t?a=\"q\"",error="insufficient_scope""#,
                bearer("https://h/t?a=\"q\"", None, None),
            ),
            (
                r#"Basic realm="Registry Realm""#,
                Challenge::Basic {
                    realm: Some("Registry Realm".into()),
                },
            ),
            ("basic", Challenge::Basic { realm: None }),
            (
                "  Basic  realm=x , charset=\"UTF-8\"  ",
                Challenge::Basic {
                    realm: Some("x".into()),
                },
            ),
        ];
        for (header, want) in cases {
            assert_eq!(parse(header), Ok(want), "{header}");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let malformed = |h: &str| ChallengeError::Malformed {
            header: h.into(),
            reason: "",
        };
        let cases: Vec<(&str, ChallengeError)> = vec![
            ("", ChallengeError::Empty),
            ("   ", ChallengeError::Empty),
            (
                "Digest realm=x",
                ChallengeError::UnsupportedScheme("Digest".into()),
            ),
            (
                "Bearer",
                ChallengeError::BearerWithoutRealm("Bearer".into()),
            ),
            (
                "Bearer service=x",
                ChallengeError::BearerWithoutRealm("Bearer service=x".into()),
            ),
            (
                r#"Bearer realm="https://h/t"#,
                malformed(r#"Bearer realm="https://h/t"#),
            ),
            ("Bearer realm", malformed("Bearer realm")),
            (r#"Bearer realm="a"b"#, malformed(r#"Bearer realm="a"b"#)),
        ];
        for (header, want) in cases {
            let got = parse(header);
            match (&got, &want) {
                (
                    Err(ChallengeError::Malformed { header: h, .. }),
                    ChallengeError::Malformed { header: w, .. },
                ) => {
                    assert_eq!(h, w)
                }
                _ => assert_eq!(got, Err(want), "{header}"),
            }
            let message = parse(header).unwrap_err().to_string();
            assert!(message.contains("WWW-Authenticate"), "{message}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,120}") {
            let _ = parse(&s);
        }

        #[test]
        fn quoted_values_survive(v in "[ -~]{1,40}") {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            let header = format!("Bearer realm=\"{escaped}\",service=\"s\"");
            prop_assert_eq!(parse(&header), Ok(bearer(&v, Some("s"), None)));
        }
    }
}

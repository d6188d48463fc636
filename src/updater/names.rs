//! The names and labels an update leaves on the engine, which are all crash recovery has to go on
//! (no state file): the parked old container's name carries its original name, short id, restart
//! policy and whether it was running; the new container carries the id of the container it
//! replaces. Pure: building and parsing only.
//!
//! Parked name: `<name>-wd-old-<short id>-<policy>-<run|stop>`, with `<policy>` one of `no`,
//! `always`, `unless-stopped`, `on-failure-<max retries>` (container names allow
//! `[a-zA-Z0-9_.-]`, so all of these fit). The engine cannot add a label to an existing container,
//! and the name is the one durable thing we can change before touching anything else.

use serde_json::{json, Value};

/// Marks a parked old container.
pub const OLD_MARK: &str = "-wd-old-";
/// Marks an old container kept after a successful update (`removeOldContainer: false`).
pub const PREV_MARK: &str = "-wd-prev-";
/// Label on the new container: the full id of the container it replaces.
pub const UPDATE_OF: &str = "watchdocker.update-of";
/// Label on the new container when the old one was running: it is meant to run. Recovery reads it
/// only on a replacement that never started and whose old container is gone (`--rm`).
pub const START_AFTER_UPDATE: &str = "watchdocker.start-after-update";

/// A restart policy as the engine reports it in `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped` or `on-failure` (the engine's empty name is `no`).
    pub name: String,
    pub max_retries: u64,
}

impl RestartPolicy {
    pub fn no() -> RestartPolicy {
        RestartPolicy {
            name: "no".into(),
            max_retries: 0,
        }
    }

    /// From a container's inspect data; `no` when absent.
    pub fn of(container: &Value) -> RestartPolicy {
        let policy = container.pointer("/HostConfig/RestartPolicy");
        let name = policy
            .and_then(|p| p.get("Name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("no");
        RestartPolicy {
            name: name.to_string(),
            max_retries: policy
                .and_then(|p| p.get("MaximumRetryCount"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        }
    }

    /// The body of `POST /containers/{id}/update` that sets this policy.
    pub fn update_body(&self) -> Value {
        json!({"RestartPolicy": {"Name": self.name, "MaximumRetryCount": self.max_retries}})
    }

    fn code(&self) -> String {
        match self.name.as_str() {
            "on-failure" => format!("on-failure-{}", self.max_retries),
            other => other.to_string(),
        }
    }

    fn from_code(code: &str) -> Option<RestartPolicy> {
        let name = |n: &str| RestartPolicy {
            name: n.to_string(),
            max_retries: 0,
        };
        match code {
            "no" | "always" | "unless-stopped" => Some(name(code)),
            "on-failure" => Some(name("on-failure")),
            _ => {
                let n = code.strip_prefix("on-failure-")?.parse().ok()?;
                Some(RestartPolicy {
                    name: "on-failure".into(),
                    max_retries: n,
                })
            }
        }
    }
}

/// What a parked container's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The name to give back.
    pub original: String,
    /// First 12 hex digits of its id.
    pub short_id: String,
    /// Its restart policy before the update; None when the name does not say (then the current
    /// policy is left alone).
    pub policy: Option<RestartPolicy>,
    /// Whether it was running before the update; None when the name does not say.
    pub was_running: Option<bool>,
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `<name>-wd-old-<short>-<policy>-<run|stop>`.
pub fn parked_name(original: &str, id: &str, policy: &RestartPolicy, running: bool) -> String {
    let state = if running { "run" } else { "stop" };
    format!(
        "{original}{OLD_MARK}{}-{}-{state}",
        short(id),
        policy.code()
    )
}

/// `<name>-wd-prev-<short>`.
pub fn prev_name(original: &str, id: &str) -> String {
    format!("{original}{PREV_MARK}{}", short(id))
}

/// Parses a parked name (a leading `/` is accepted). Also reads the bare `<name>-wd-old-<short>`
/// form, which says nothing of the policy or state.
pub fn parse_parked(name: &str) -> Option<Parked> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let at = name.rfind(OLD_MARK)?;
    let original = &name[..at];
    let rest = &name[at + OLD_MARK.len()..];
    if original.is_empty() {
        return None;
    }
    let (short_id, code) = match rest.split_once('-') {
        Some((s, c)) => (s, Some(c)),
        None => (rest, None),
    };
    if short_id.is_empty() || !short_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let decoded = code.and_then(|c| {
        let (policy, running) = if let Some(p) = c.strip_suffix("-run") {
            (p, true)
        } else {
            (c.strip_suffix("-stop")?, false)
        };
        Some((RestartPolicy::from_code(policy)?, running))
    });
    Some(Parked {
        original: original.to_string(),
        short_id: short_id.to_string(),
        policy: decoded.as_ref().map(|(p, _)| p.clone()),
        was_running: decoded.map(|(_, r)| r),
    })
}

/// The original name of a container whose name may carry one of our marks.
pub fn original_name(name: &str) -> String {
    let name = name.strip_prefix('/').unwrap_or(name);
    if let Some(p) = parse_parked(name) {
        return p.original;
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0bda1f9e9e5694cc94123bc63bc4ac3687b6ef16c3d7f8fe24e886ade4e811f0";

    #[test]
    fn parked_names_round_trip() {
        let cases = [
            (RestartPolicy::no(), true, "web-wd-old-0bda1f9e9e56-no-run"),
            (
                RestartPolicy {
                    name: "unless-stopped".into(),
                    max_retries: 0,
                },
                false,
                "web-wd-old-0bda1f9e9e56-unless-stopped-stop",
            ),
            (
                RestartPolicy {
                    name: "on-failure".into(),
                    max_retries: 5,
                },
                true,
                "web-wd-old-0bda1f9e9e56-on-failure-5-run",
            ),
            (
                RestartPolicy {
                    name: "always".into(),
                    max_retries: 0,
                },
                true,
                "web-wd-old-0bda1f9e9e56-always-run",
            ),
        ];
        for (policy, running, want) in cases {
            let name = parked_name("web", ID, &policy, running);
            assert_eq!(name, want);
            let p = parse_parked(&format!("/{name}")).expect("parses");
            assert_eq!(p.original, "web");
            assert_eq!(p.short_id, "0bda1f9e9e56");
            assert_eq!(p.policy, Some(policy));
            assert_eq!(p.was_running, Some(running));
        }
    }

    #[test]
    fn names_with_dashes_and_the_bare_form() {
        let name = parked_name("my-app-1", ID, &RestartPolicy::no(), false);
        assert_eq!(parse_parked(&name).expect("parses").original, "my-app-1");
        let bare = parse_parked("db-wd-old-0bda1f9e9e56").expect("bare form");
        assert_eq!(bare.original, "db");
        assert_eq!(bare.policy, None);
        assert_eq!(bare.was_running, None);
        let odd = parse_parked("db-wd-old-0bda1f9e9e56-sometimes-run").expect("odd code");
        assert_eq!((odd.policy, odd.was_running), (None, None));
    }

    #[test]
    fn not_parked() {
        for name in [
            "web",
            "-wd-old-0bda1f9e9e56-no-run",
            "web-wd-old-",
            "web-wd-old-xyz",
            "web-wd-prev-0bda1f9e9e56",
        ] {
            assert_eq!(parse_parked(name), None, "{name}");
        }
        assert_eq!(original_name("/web-wd-old-0bda1f9e9e56-no-run"), "web");
        assert_eq!(original_name("/web"), "web");
    }

    #[test]
    fn policy_from_inspect() {
        let c = json!({"HostConfig":{"RestartPolicy":{"Name":"","MaximumRetryCount":0}}});
        assert_eq!(RestartPolicy::of(&c), RestartPolicy::no());
        let c = json!({"HostConfig":{"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}}});
        assert_eq!(
            RestartPolicy::of(&c).update_body(),
            json!({"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}})
        );
        assert_eq!(RestartPolicy::of(&json!({})), RestartPolicy::no());
    }
}

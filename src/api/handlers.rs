//! The read endpoints answered from the snapshot alone (containers, images), and the resolution of
//! a `:id` (full id, unique id prefix, or name). Pure: a snapshot in, a reply out; no engine, no jobs.

use super::reply::{ApiReply, ErrorCode};
use super::route::Query;
use crate::model::Status;
use crate::state::{ContainerView, Snapshot};
use std::fmt;

const STATUSES: [Status; 5] = [
    Status::Unknown,
    Status::UpToDate,
    Status::UpdateAvailable,
    Status::Skipped,
    Status::Error,
];

/// `GET /api/containers[?status=UpdateAvailable[,Error]]`.
pub fn list_containers(snap: &Snapshot, query: &Query) -> ApiReply {
    let Some(filter) = query.status.as_deref() else {
        return ApiReply::encoded_ok(snap.containers_body());
    };
    let mut wanted = Vec::new();
    for name in filter.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match STATUSES.iter().find(|s| s.as_str() == name) {
            Some(s) => wanted.push(*s),
            None => {
                let allowed: Vec<&str> = STATUSES.iter().map(|s| s.as_str()).collect();
                return ApiReply::error(
                    ErrorCode::BadRequest,
                    format!(
                        "status={name:?} is not a status (allowed: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
    let list: Vec<&ContainerView> = snap
        .containers
        .iter()
        .filter(|c| wanted.is_empty() || wanted.contains(&c.status))
        .collect();
    ApiReply::ok(list)
}

/// `GET /api/containers/:id`.
pub fn get_container(snap: &Snapshot, key: &str) -> ApiReply {
    match resolve_container(&snap.containers, key) {
        Ok(c) => ApiReply::ok(c),
        Err(e) => e.reply(),
    }
}

/// `GET /api/images`.
pub fn list_images(snap: &Snapshot) -> ApiReply {
    ApiReply::ok(&snap.images)
}

/// Why a `:id` named no single container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound {
        key: String,
    },
    /// The key is a prefix of several ids; the names of those containers.
    Ambiguous {
        key: String,
        names: Vec<String>,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { key } => {
                write!(f, "no container has the id, id prefix or name {key:?}")
            }
            ResolveError::Ambiguous { key, names } => write!(
                f,
                "id prefix {key:?} is ambiguous: it matches {}; give more characters or a name",
                names.join(", ")
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

impl ResolveError {
    /// 404 `40400` or 400 `40000`, with this error's message.
    pub fn reply(&self) -> ApiReply {
        let code = match self {
            ResolveError::NotFound { .. } => ErrorCode::NotFound,
            ResolveError::Ambiguous { .. } => ErrorCode::BadRequest,
        };
        ApiReply::error(code, self.to_string())
    }
}

/// Finds the container a `:id` means, in Docker's order: the full id, then the exact name (with or
/// without its leading `/`), then a unique id prefix. An exact name wins over an id prefix.
pub fn resolve_container<'a>(
    containers: &'a [ContainerView],
    key: &str,
) -> Result<&'a ContainerView, ResolveError> {
    if key.is_empty() {
        return Err(ResolveError::NotFound { key: String::new() });
    }
    if let Some(c) = containers.iter().find(|c| c.id == key) {
        return Ok(c);
    }
    let name = key.strip_prefix('/').unwrap_or(key);
    if let Some(c) = containers.iter().find(|c| c.name == name) {
        return Ok(c);
    }
    let mut matches = containers.iter().filter(|c| c.id.starts_with(key));
    match (matches.next(), matches.next()) {
        (Some(c), None) => Ok(c),
        (None, _) => Err(ResolveError::NotFound {
            key: key.to_string(),
        }),
        (Some(a), Some(b)) => {
            let mut names: Vec<String> = [a, b]
                .into_iter()
                .chain(matches)
                .map(|c| c.name.clone())
                .collect();
            names.sort();
            Err(ResolveError::Ambiguous {
                key: key.to_string(),
                names,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::model::{ContainerInfo, ImageInfo, Platform, Status};
    use crate::state::{ContainerView, Snapshot};
    use std::collections::BTreeMap;

    pub fn container(id: &str, name: &str, status: Status) -> ContainerView {
        let info = ContainerInfo {
            id: id.to_string(),
            name: name.to_string(),
            image: "registry.test/app:1".to_string(),
            image_id: "sha256:0123".to_string(),
            repo_tags: vec![],
            repo_digests: vec![],
            labels: BTreeMap::new(),
            state: "running".to_string(),
            running: true,
            created: "2026-01-01T00:00:00Z".to_string(),
            compose_project: None,
            compose_service: None,
            platform: Platform::default(),
            is_self: false,
        };
        let mut v = ContainerView::unchecked(&info);
        v.status = status;
        v
    }

    /// Three containers: ids `abc1…`, `abc2…`, `def…`; one named like another's id prefix.
    pub fn snapshot() -> Snapshot {
        Snapshot {
            containers: vec![
                container(&format!("abc1{}", "0".repeat(60)), "web", Status::UpToDate),
                container(
                    &format!("abc2{}", "0".repeat(60)),
                    "db",
                    Status::UpdateAvailable,
                ),
                container(&format!("def0{}", "0".repeat(60)), "abc", Status::Error),
            ],
            images: vec![ImageInfo {
                id: "sha256:0123".to_string(),
                repo_tags: vec!["registry.test/app:1".to_string()],
                repo_digests: vec![],
                size: 42,
                created: "2026-01-01T00:00:00Z".to_string(),
                containers: vec!["web".to_string(), "db".to_string(), "abc".to_string()],
            }],
            ..Snapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::snapshot;
    use super::*;
    use crate::api::reply::ReplyBody;

    fn resolve(key: &str) -> Result<String, ResolveError> {
        let snap = snapshot();
        resolve_container(&snap.containers, key).map(|c| c.name.clone())
    }

    #[test]
    fn resolution_table() {
        let full = format!("abc1{}", "0".repeat(60));
        let ok: &[(&str, &str)] = &[
            (&full, "web"),
            ("abc1", "web"),
            ("abc2", "db"),
            ("d", "abc"),
            ("web", "web"),
            ("/web", "web"),
            // The exact name `abc` wins over the ambiguous id prefix `abc`.
            ("abc", "abc"),
        ];
        for (key, want) in ok {
            assert_eq!(resolve(key).as_deref(), Ok(*want), "key {key}");
        }
        assert_eq!(
            resolve("a"),
            Err(ResolveError::Ambiguous {
                key: "a".into(),
                names: vec!["db".into(), "web".into()]
            })
        );
        assert_eq!(resolve("ab").unwrap_err().reply().status, 400);
        for key in ["", "zzz", "abc1x", "we", "WEB"] {
            let err = resolve(key).unwrap_err();
            assert!(
                matches!(err, ResolveError::NotFound { .. }),
                "key {key}: {err}"
            );
            assert_eq!(err.reply().status, 404);
        }
        let msg = resolve("ab").unwrap_err().to_string();
        assert!(msg.contains("db, web"), "{msg}");
        assert!(resolve("zzz").unwrap_err().to_string().contains("\"zzz\""));
    }

    fn data_names(r: &ApiReply) -> Vec<String> {
        let v: serde_json::Value = match &r.body {
            ReplyBody::Json(v) => v.clone(),
            ReplyBody::Encoded { json, .. } => serde_json::from_slice(json).unwrap(),
            ReplyBody::Raw { .. } => panic!("not json"),
        };
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn list_filters_by_status() {
        let snap = snapshot();
        let q = |s: &str| Query::parse(Some(s)).unwrap();
        assert_eq!(
            data_names(&list_containers(&snap, &q(""))),
            ["web", "db", "abc"]
        );
        assert_eq!(
            data_names(&list_containers(&snap, &q("status=UpdateAvailable"))),
            ["db"]
        );
        assert_eq!(
            data_names(&list_containers(&snap, &q("status=Error,UpToDate"))),
            ["web", "abc"]
        );
        let bad = list_containers(&snap, &q("status=Nope"));
        assert_eq!((bad.status, bad.code()), (400, Some(40000)));
    }
}

//! The snapshot the API reads: cheap to clone (an `Arc`), replaced whole by the daemon thread after
//! each discovery or job. Readers never wait for a job; only the daemon writes.

use crate::model::{ContainerInfo, ImageInfo, Status, UpdatePolicy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

/// One container as the API returns it (SPEC.md §4: the seed's fields exactly, plus additions).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub image: String,
    pub running: bool,
    pub current_digest: Option<String>,
    pub remote_digest: Option<String>,
    pub status: Status,
    pub skipped: bool,
    pub skip_reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339; None until the first check.
    pub last_checked_at: Option<String>,
    pub image_id: String,
    pub state: String,
    pub error: Option<String>,
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    pub update_policy: UpdatePolicy,
    /// Why the policy is not `auto` (None when it is).
    pub update_policy_reason: Option<String>,
    pub last_updated_at: Option<String>,
    pub previous_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newer_versions: Option<Vec<String>>,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: String,
    pub platform: crate::model::Platform,
}

impl ContainerView {
    /// The view of a freshly discovered container, before any registry check.
    pub fn unchecked(c: &ContainerInfo) -> Self {
        let (status, skipped, skip_reason) = if c.is_self {
            (Status::Skipped, true, Some("self".to_string()))
        } else {
            (Status::Unknown, false, None)
        };
        ContainerView {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            running: c.running,
            current_digest: None,
            remote_digest: None,
            status,
            skipped,
            skip_reason,
            labels: c.labels.clone(),
            last_checked_at: None,
            image_id: c.image_id.clone(),
            state: c.state.clone(),
            error: None,
            compose_project: c.compose_project.clone(),
            compose_service: c.compose_service.clone(),
            update_policy: if c.is_self {
                UpdatePolicy::Skip
            } else {
                UpdatePolicy::Auto
            },
            update_policy_reason: c.is_self.then(|| "self".to_string()),
            last_updated_at: c.labels.get(crate::labels::UPDATED_AT).cloned(),
            previous_image: c.labels.get(crate::labels::PREVIOUS_IMAGE).cloned(),
            newer_versions: None,
            repo_tags: c.repo_tags.clone(),
            repo_digests: c.repo_digests.clone(),
            created: c.created.clone(),
            platform: c.platform.clone(),
        }
    }
}

/// Engine facts shown by `/api/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EngineSummary {
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub containers: Vec<ContainerView>,
    pub images: Vec<ImageInfo>,
    pub engine: Option<EngineSummary>,
    /// RFC 3339 time of the last successful discovery.
    pub discovered_at: Option<String>,
    /// Why the last discovery failed, if it did.
    pub discovery_error: Option<String>,
    /// The scheduled jobs and recent runs (`GET /api/jobs`).
    pub jobs: Vec<crate::jobs::JobRecord>,
    /// `GET /api/containers` encoded once, at its first request (the list is read far more
    /// often than it changes).
    #[serde(skip)]
    pub containers_body: EncodedList,
}

/// The encoded container list of one snapshot; starts empty (`Default`), filled on first use.
#[derive(Debug, Default)]
pub struct EncodedList(OnceLock<Arc<[u8]>>);

impl Clone for Snapshot {
    /// A copy is made to be changed: it starts without the encoded list.
    fn clone(&self) -> Self {
        Snapshot {
            containers: self.containers.clone(),
            images: self.images.clone(),
            engine: self.engine.clone(),
            discovered_at: self.discovered_at.clone(),
            discovery_error: self.discovery_error.clone(),
            jobs: self.jobs.clone(),
            containers_body: EncodedList::default(),
        }
    }
}

impl Snapshot {
    /// The `BaseRes` of `GET /api/containers` (all containers), encoded once per snapshot.
    pub fn containers_body(&self) -> Arc<[u8]> {
        Arc::clone(self.containers_body.0.get_or_init(|| {
            let body = serde_json::json!({ "code": 0, "msg": "ok", "data": &self.containers });
            serde_json::to_vec(&body).unwrap_or_default().into()
        }))
    }
}

/// Shared between the daemon (the one writer) and the API threads (readers).
#[derive(Default)]
pub struct SharedState {
    snapshot: RwLock<Arc<Snapshot>>,
}

impl SharedState {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock only means a writer panicked mid-swap; the Arc inside is still whole.
        match self.snapshot.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    pub fn replace(&self, next: Snapshot) {
        let next = Arc::new(next);
        match self.snapshot.write() {
            Ok(mut g) => *g = next,
            Err(p) => *p.into_inner() = next,
        }
    }
}

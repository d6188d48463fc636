//! The domain model shared by discovery, policy, scanner, updater and the API: what we know about a
//! container and the status we report for it. Plain data, no I/O. JSON names are part of the contract
//! (SPEC.md §4): keep them exactly.

use serde::Serialize;
use std::collections::BTreeMap;

/// An image platform, normalised (`x86_64` → `amd64`, arm64 variant `v8` → none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// One container as discovered on the engine, joined with its image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    /// Full 64-hex id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The reference the container was created from, as the user wrote it (`Config.Image`).
    pub image: String,
    /// The local image id (`sha256:...`).
    pub image_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Engine state: created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    pub running: bool,
    /// Creation time, RFC 3339.
    pub created: String,
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    /// The image's platform (for selecting the child of an index).
    pub platform: Platform,
    /// True when this is watch-docker's own container.
    pub is_self: bool,
}

/// Check status of a container (SPEC.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Status {
    Unknown,
    UpToDate,
    UpdateAvailable,
    Skipped,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "Unknown",
            Status::UpToDate => "UpToDate",
            Status::UpdateAvailable => "UpdateAvailable",
            Status::Skipped => "Skipped",
            Status::Error => "Error",
        }
    }
}

/// Whether batch updates may touch a container (separate from the check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePolicy {
    Auto,
    Notify,
    Skip,
}

/// A local image as listed by `GET /api/images`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: i64,
    /// RFC 3339.
    pub created: String,
    /// Names of the discovered containers using this image.
    pub containers: Vec<String>,
}

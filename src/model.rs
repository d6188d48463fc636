//! The domain model shared by discovery, policy, scanner, updater and the API: what we know about a
//! container and the status we report for it. Plain data, no I/O. JSON names are part of the contract
//! (SPEC.md §4): keep them exactly.

use serde::Serialize;
use std::collections::BTreeMap;

/// An image platform, normalised (`x86_64` → `amd64`, arm64 variant `v8` → none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
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

impl Platform {
    /// Normalises the names engines and registries use for the same platform, so that an image's
    /// platform can be matched against an index entry (ENGINE-AND-REGISTRY-NOTES.md "Platform selection").
    pub fn normalised(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = architecture.to_ascii_lowercase();
        let variant = variant
            .map(str::to_ascii_lowercase)
            .filter(|v| !v.is_empty());
        // As containerd's `platforms.Normalize` for the cases that matter: amd64's v1 and arm64's
        // v8 are the same as no variant; arm without one is v7 (what the engine assumes).
        let (architecture, variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), variant.filter(|v| v != "v1")),
            "i386" | "i686" | "386" => ("386".to_string(), variant),
            "aarch64" | "arm64" => ("arm64".to_string(), variant.filter(|v| v != "v8")),
            "armhf" | "armv7l" => ("arm".to_string(), Some("v7".to_string())),
            "armel" => ("arm".to_string(), Some("v6".to_string())),
            "arm" => (
                "arm".to_string(),
                variant.or_else(|| Some("v7".to_string())),
            ),
            _ => (arch, variant),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_normalisation() {
        let p = |os, a, v| Platform::normalised(os, a, v);
        let want = |a: &str, v: Option<&str>| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(Into::into),
        };
        assert_eq!(p("linux", "x86_64", None), want("amd64", None));
        assert_eq!(p("Linux", "amd64", Some("")), want("amd64", None));
        assert_eq!(p("linux", "aarch64", Some("v8")), want("arm64", None));
        assert_eq!(p("linux", "arm64", Some("v8")), want("arm64", None));
        assert_eq!(p("linux", "armhf", None), want("arm", Some("v7")));
        assert_eq!(p("linux", "arm", None), want("arm", Some("v7")));
        assert_eq!(p("linux", "arm", Some("v6")), want("arm", Some("v6")));
        assert_eq!(p("linux", "i686", None), want("386", None));
    }
}

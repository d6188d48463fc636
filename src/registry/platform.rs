//! Manifests and platform selection: parses an image index / manifest list or a single image manifest,
//! normalises platforms (`x86_64`→`amd64`, `aarch64`→`arm64`, arm64 `v8` = none, `armhf`→`arm/v7`) and
//! picks the index entry for a container's platform, skipping attestation entries. Pure: no I/O.

use crate::model::Platform;
use std::fmt;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Accept for manifest requests. All four, because: without the two list types a registry answers
/// with one platform's manifest digest (never equal to the index digest the engine records in
/// RepoDigests); without the OCI manifest type, OCI-only images answer 404 (watchtower#1528).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// BuildKit marks provenance/SBOM entries of an index with this annotation; they have platform
/// `unknown/unknown` and are never an image to run.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const ATTESTATION: &str = "attestation-manifest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub digest: String,
    pub media_type: Option<String>,
    pub platform: Option<Platform>,
    pub attestation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Index(Vec<IndexEntry>),
    Image { config_digest: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ManifestError {}

#[derive(serde::Deserialize)]
struct RawManifest {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<Vec<RawEntry>>,
    config: Option<RawDescriptor>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawDescriptor {
    digest: String,
}

/// Parses a manifest body. The media type comes from the body, else from `content_type`.
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| ManifestError(format!("manifest is not valid JSON ({e})")))?;
    let media_type = raw
        .media_type
        .as_deref()
        .or(content_type.map(|c| c.split(';').next().unwrap_or(c).trim()));
    let is_index = matches!(media_type, Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST))
        || (raw.manifests.is_some() && raw.config.is_none());
    if is_index {
        let entries = raw
            .manifests
            .ok_or_else(|| ManifestError("index has no manifests".into()))?
            .into_iter()
            .map(|e| IndexEntry {
                attestation: e.annotations.get(REFERENCE_TYPE).map(String::as_str)
                    == Some(ATTESTATION),
                digest: e.digest,
                media_type: e.media_type,
                platform: e.platform.map(|p| {
                    normalise(&Platform {
                        os: p.os,
                        architecture: p.architecture,
                        variant: p.variant,
                    })
                }),
            })
            .collect();
        return Ok(Manifest::Index(entries));
    }
    match raw.config {
        Some(c) => Ok(Manifest::Image {
            config_digest: c.digest,
        }),
        None => Err(ManifestError(format!(
            "manifest of type {} has neither manifests nor config",
            media_type.unwrap_or("unknown")
        ))),
    }
}

/// Normalises a platform (see [`Platform::normalised`]) so an image's and an index entry's agree.
pub fn normalise(p: &Platform) -> Platform {
    Platform::normalised(&p.os, &p.architecture, p.variant.as_deref())
}

/// The index entry for `platform`, never an attestation. An exact variant match wins; an entry
/// without variant matches when the wanted platform has none.
pub fn select<'a>(entries: &'a [IndexEntry], platform: &Platform) -> Option<&'a IndexEntry> {
    let want = normalise(platform);
    let candidates = entries
        .iter()
        .filter(|e| !e.attestation)
        .filter_map(|e| e.platform.as_ref().map(|p| (e, p)))
        .filter(|(_, p)| p.os == want.os && p.architecture == want.architecture);
    let mut fallback = None;
    for (e, p) in candidates {
        if p.variant == want.variant {
            return Some(e);
        }
        if p.variant.is_none() || want.variant.is_none() {
            fallback = fallback.or(Some(e));
        }
    }
    fallback
}

/// `sha256:<hex>` of a body (for registries that send no `Docker-Content-Digest`).
pub fn sha256_digest(body: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, body);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn normalises_platforms() {
        for (input, want) in [
            (p("linux", "x86_64", None), p("linux", "amd64", None)),
            (p("Linux", "AMD64", Some("")), p("linux", "amd64", None)),
            (p("linux", "aarch64", None), p("linux", "arm64", None)),
            (p("linux", "arm64", Some("v8")), p("linux", "arm64", None)),
            (
                p("linux", "arm64", Some("v9")),
                p("linux", "arm64", Some("v9")),
            ),
            (p("linux", "armhf", None), p("linux", "arm", Some("v7"))),
            (p("linux", "arm", None), p("linux", "arm", Some("v7"))),
            (p("linux", "arm", Some("v6")), p("linux", "arm", Some("v6"))),
            (p("linux", "i686", None), p("linux", "386", None)),
            (p("windows", "amd64", None), p("windows", "amd64", None)),
        ] {
            assert_eq!(normalise(&input), want, "{input:?}");
        }
    }

    const INDEX: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:att",
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": "sha256:amd"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:amd",
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:arm64", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:armv6", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "sha256:armv7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "sha256:noplatform"}
      ]
    }"#;

    #[test]
    fn selects_the_platform_entry() {
        let Ok(Manifest::Index(entries)) = parse_manifest(INDEX.as_bytes(), None) else {
            panic!("not an index")
        };
        assert!(entries[0].attestation);
        for (platform, want) in [
            (p("linux", "x86_64", None), Some("sha256:amd")),
            (p("linux", "aarch64", None), Some("sha256:arm64")),
            (p("linux", "arm64", Some("v8")), Some("sha256:arm64")),
            (p("linux", "armhf", None), Some("sha256:armv7")),
            (p("linux", "arm", Some("v6")), Some("sha256:armv6")),
            (p("linux", "s390x", None), None),
            (p("unknown", "unknown", None), None),
        ] {
            assert_eq!(
                select(&entries, &platform).map(|e| e.digest.as_str()),
                want,
                "{platform:?}"
            );
        }
    }

    #[test]
    fn parses_manifest_kinds() {
        let image = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:cfg"},"layers":[]}"#;
        assert_eq!(
            parse_manifest(image.as_bytes(), None),
            Ok(Manifest::Image {
                config_digest: "sha256:cfg".into()
            })
        );
        // No mediaType in the body: the Content-Type decides.
        let list = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            parse_manifest(
                list.as_bytes(),
                Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8")
            ),
            Ok(Manifest::Index(vec![]))
        );
        for garbage in ["", "<html>", "{\"schemaVersion\":2", "{}", "[1,2]"] {
            assert!(
                parse_manifest(garbage.as_bytes(), None).is_err(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn sha256_of_body() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

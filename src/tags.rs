//! Image tags as versions: which tags are strict semver (pinned, SPEC.md §5) and which tags of a
//! repository are newer versions of the current one (`scan.newerVersions`). Pure string logic on top of
//! the `semver` crate; knows nothing of references, registries or policy.
//!
//! A tag is read as `[v]<version>[-<variant>]`: the variant is everything after the first `-`
//! (`alpine`, `bookworm-slim`, `alpine3.19`). Comparisons only ever happen between tags of the same
//! variant, because `1.26.0` is not an upgrade for someone running `1.25.3-alpine`.

use semver::Version;

/// True when `tag` is a strict semantic version: `1.2.3` or `v1.2.3`, optionally followed by a
/// `-variant` (`1.2.3-alpine`, `v1.2.3-bookworm-slim`), or any other form the `semver` crate accepts
/// (`1.2.3-rc.1`, `1.2.3+build.5`). Two-part or one-part versions (`1.25`, `16`, `1.25-alpine`) and
/// names (`latest`) are not: they float by convention.
pub fn is_strict_semver(tag: &str) -> bool {
    let bare = strip_v(tag);
    if Version::parse(bare).is_ok() {
        return true;
    }
    // Docker tags allow `_` in a variant (`1.2.3-alpine_arm`), which semver's prerelease grammar does
    // not; such a tag is still an exact version with a suffix.
    match split_variant(bare) {
        (version, Some(variant)) => {
            Version::parse(version).is_ok_and(|v| v.pre.is_empty() && v.build.is_empty())
                && is_tag_text(variant)
        }
        (_, None) => false,
    }
}

/// Splits a tag at its first `-` into the version part and the variant: `1.25.3-alpine` →
/// (`1.25.3`, `alpine`), `1.2-bookworm-slim` → (`1.2`, `bookworm-slim`), `latest` → (`latest`, none).
/// An empty variant (`1.2.3-`) counts as none. The `v` prefix stays on the version part.
pub fn split_variant(tag: &str) -> (&str, Option<&str>) {
    match tag.split_once('-') {
        Some((version, variant)) if !variant.is_empty() => (version, Some(variant)),
        Some((version, _)) => (version, None),
        None => (tag, None),
    }
}

/// The tags among `candidates` that are newer versions of `current`, sorted ascending (ties, such as
/// `1.3.0` and `v1.3.0`, by name), without duplicates. Empty when `current` is not a version (`latest`).
///
/// A candidate qualifies when it has
/// - the same variant (`1.25.3-alpine` → `1.26.0-alpine`, never `1.26.0` nor `1.26.0-bookworm`);
/// - the same number of version components: `1.25.3` is compared with `1.25.4` and `1.26.0`, not with
///   the moving aliases `1.26` or `2` of those same releases; short versions are padded (`1.25` →
///   `1.25.0`) only to build a comparable `semver::Version`;
/// - a strictly greater version;
/// - no prerelease marker (`1.3.0-rc1`, `1.3.0-beta.2-alpine` are excluded).
///
/// The `v` prefix is ignored: `v1.2.3` and `1.2.3` are the same version, so a repository that moved
/// from `v1.2.3` to `1.3.0` still reports the upgrade.
///
/// When `current` is itself a prerelease (`1.3.0-rc1`), its release `1.3.0` and later releases of the
/// same precision are newer (semver orders `1.3.0-rc1` before `1.3.0`).
pub fn newer_versions(current: &str, candidates: &[String]) -> Vec<String> {
    let Some(cur) = TagVersion::parse(current) else {
        return Vec::new();
    };
    let mut newer: Vec<(Version, &String)> = candidates
        .iter()
        .filter_map(|tag| {
            let cand = TagVersion::parse(tag)?;
            let wanted = cand.pre.is_none()
                && cand.parts == cur.parts
                && cand.variant == cur.track_variant()
                && cand.version > cur.ordered();
            wanted.then_some((cand.version, tag))
        })
        .collect();
    newer.sort();
    newer.dedup_by(|a, b| a.1 == b.1);
    newer.into_iter().map(|(_, tag)| tag.clone()).collect()
}

/// A tag parsed as a comparable version.
struct TagVersion<'a> {
    /// Padded to three components, without prerelease.
    version: Version,
    /// How many numeric components the tag wrote (1 to 3).
    parts: usize,
    /// The suffix when it is not a prerelease marker.
    variant: Option<&'a str>,
    /// The suffix when it is a prerelease marker (`rc1`, `beta.2-alpine`).
    pre: Option<&'a str>,
}

impl<'a> TagVersion<'a> {
    fn parse(tag: &'a str) -> Option<Self> {
        let (version_part, suffix) = split_variant(strip_v(tag));
        let mut numbers = [0u64; 3];
        let mut parts = 0;
        for component in version_part.split('.') {
            // More than three components (`1.2.3.4`) or anything non-numeric is not a version we order.
            let slot = numbers.get_mut(parts)?;
            if component.is_empty() || !component.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = component.parse().ok()?;
            parts += 1;
        }
        let (variant, pre) = match suffix {
            Some(s) if is_prerelease(s) => (None, Some(s)),
            other => (other, None),
        };
        Some(TagVersion {
            version: Version::new(numbers[0], numbers[1], numbers[2]),
            parts,
            variant,
            pre,
        })
    }

    /// The variant whose tags this one is compared with: a prerelease `1.3.0-rc1-alpine` belongs to the
    /// `alpine` track, `1.3.0-rc1` to the plain one.
    fn track_variant(&self) -> Option<&'a str> {
        match self.pre {
            Some(pre) => pre.split_once('-').map(|(_, variant)| variant),
            None => self.variant,
        }
    }

    /// The version for ordering: a prerelease sorts before its release.
    fn ordered(&self) -> Version {
        let mut version = self.version.clone();
        if self.pre.is_some() {
            // Any valid prerelease orders before the release; its exact text does not matter here.
            if let Ok(pre) = semver::Prerelease::new("pre") {
                version.pre = pre;
            }
        }
        version
    }
}

/// Whether a suffix marks a prerelease rather than a variant: its first word is a well-known
/// prerelease word, optionally followed by a number (`rc1`, `rc.1`, `beta2`, `alpha`, `dev`).
fn is_prerelease(suffix: &str) -> bool {
    const WORDS: [&str; 9] = [
        "alpha", "beta", "rc", "pre", "preview", "dev", "snapshot", "nightly", "canary",
    ];
    let first = suffix.split(['-', '.']).next().unwrap_or(suffix);
    let word = first.trim_end_matches(|c: char| c.is_ascii_digit());
    WORDS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

fn strip_v(tag: &str) -> &str {
    tag.strip_prefix('v').unwrap_or(tag)
}

/// Characters Docker allows in a tag (`[A-Za-z0-9_.-]`).
fn is_tag_text(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_semver() {
        let cases: &[(&str, bool)] = &[
            ("1.2.3", true),
            ("v1.2.3", true),
            ("1.2.3-alpine", true),
            ("v1.2.3-bookworm-slim", true),
            ("1.2.3-alpine3.19", true),
            ("1.2.3-alpine_arm", true),
            ("1.2.3-rc.1", true),
            ("1.2.3+build.5", true),
            ("0.0.0", true),
            ("1.25", false),
            ("16", false),
            ("latest", false),
            ("3.19", false),
            ("1.25-alpine", false),
            ("bookworm", false),
            ("V1.2.3", false),
            ("vv1.2.3", false),
            ("1.2.3.4", false),
            ("01.2.3", false),
            ("1.2.3-", false),
            ("1.2.x", false),
            ("", false),
            ("v", false),
        ];
        for (tag, want) in cases {
            assert_eq!(is_strict_semver(tag), *want, "is_strict_semver({tag:?})");
        }
    }

    #[test]
    fn variants() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("1.25.3-alpine", "1.25.3", Some("alpine")),
            ("1.2-bookworm-slim", "1.2", Some("bookworm-slim")),
            ("v1.2.3", "v1.2.3", None),
            ("latest", "latest", None),
            ("1.2.3-", "1.2.3", None),
            ("", "", None),
        ];
        for (tag, version, variant) in cases {
            assert_eq!(
                split_variant(tag),
                (*version, *variant),
                "split_variant({tag:?})"
            );
        }
    }

    /// `check(current, candidates, expected)`: candidates and expectation as space-separated tags.
    fn check(current: &str, candidates: &str, expected: &str) {
        let candidates: Vec<String> = candidates.split_whitespace().map(String::from).collect();
        let want: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(
            newer_versions(current, &candidates),
            want,
            "newer_versions({current:?}, {candidates:?})"
        );
    }

    #[test]
    fn newer() {
        check("1.25.3-alpine", "1.26.0-alpine", "1.26.0-alpine");
        check("1.25.3-alpine", "1.26.0", "");
        check("1.25.3-alpine", "1.26.0-bookworm 1.26.0-alpine3.19", "");
        check("1.25.3", "1.26.0-alpine", "");
        check("1.2.3", "1.10.0", "1.10.0");
        check("latest", "1.0.0 2.0.0 latest", "");
        check("1.2.3", "1.2.3 1.2.2 0.9.9", "");
        check(
            "1.2.3",
            "2.0.0 1.2.4 1.10.0 1.3.0",
            "1.2.4 1.3.0 1.10.0 2.0.0",
        );
        check("1.2.3", "1.2.4 1.2.4", "1.2.4");
    }

    #[test]
    fn newer_ignores_v_prefix() {
        check("v1.2.3", "v1.2.4 1.3.0 v1.2.3 1.2.3", "v1.2.4 1.3.0");
        check("1.2.3", "v1.3.0 1.3.0", "1.3.0 v1.3.0");
    }

    #[test]
    fn newer_keeps_precision() {
        // Moving aliases of the same releases are not listed next to the exact versions.
        check("1.25.3", "1.26 2 1.26.0", "1.26.0");
        check("1.25", "1.26 1.25.9 2", "1.26");
        check("16", "17 16.1 15", "17");
        check("16-alpine", "17-alpine 17", "17-alpine");
    }

    #[test]
    fn newer_excludes_prereleases() {
        check("1.2.3", "1.3.0-rc1 1.3.0-beta.2 1.3.0-alpha 1.3.0", "1.3.0");
        check(
            "1.2.3-alpine",
            "1.3.0-rc1-alpine 1.3.0-alpine",
            "1.3.0-alpine",
        );
        check("1.2.3", "2.0.0-RC1 2.0.0-dev", "");
    }

    #[test]
    fn newer_from_a_prerelease() {
        check("1.3.0-rc1", "1.3.0 1.2.9 1.3.0-rc2 1.4.0", "1.3.0 1.4.0");
        check("1.3.0-rc1-alpine", "1.3.0-alpine 1.3.0", "1.3.0-alpine");
    }

    #[test]
    fn newer_ignores_non_versions() {
        check(
            "1.2.3",
            "latest main 1.2.x 1.2.3.4 9.9.9.9 sha-abc 1..3",
            "",
        );
        check("1.2.3", "99999999999999999999999.0.0", "");
    }
}

//! The policy engine (SPEC.md §5 "Policy, in this order", `updatePolicy`): from what is known about a
//! container, its reference and its image, decide whether the registry is asked and whether batch
//! updates may touch it, each with a readable reason. Pure: the facts come in as plain data, so this
//! module does no I/O, never reads the clock and knows nothing of the engine or registry clients.
//!
//! Label entries (`policy.skipLabels`, `excludeLabels`, `onlyLabels`) are `key` (the label is present,
//! any value) or `key=value`. Values compare exactly, except that an entry value `true` also matches
//! the label values `1`, `yes`, `on` and `true` in any case, and `false` likewise matches `0`, `no`,
//! `off` and `false`: people write booleans in labels many ways, and `watchdocker.skip=1` means skip.
//! Our own boolean labels (`watchdocker.skip`, `force`, `enable`, watchtower's) are read the same way.

use crate::config::PolicyConfig;
use crate::labels;
use crate::model::{ContainerInfo, UpdatePolicy};
use crate::tags::is_strict_semver;
use std::collections::BTreeMap;

/// What the parsed reference says (the reference parser lives in `registry/`; only these facts matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefFacts<'a> {
    /// The tag, when the reference has one (after normalisation, `nginx` has `latest`).
    pub tag: Option<&'a str>,
    /// The reference carries `@sha256:...`.
    pub has_digest: bool,
}

/// What the local image says about where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFacts {
    /// `RepoDigests` has an entry of the container's (normalised) repository.
    pub has_repo_digest_for_repository: bool,
    /// `RepoDigests` has an entry of any repository.
    pub any_repo_digest: bool,
    /// The engine uses the containerd image store (as its `/info` reports).
    pub containerd_store: bool,
}

/// Whether the registry is asked about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckDecision {
    /// Reported `Skipped` with this `skipReason`.
    Skip { reason: String },
    /// Ask the registry. `follow_tag` is true when the reference is pinned (by digest, or by a strict
    /// semver tag) and is checked by its tag anyway — because of `watchdocker.force=true` or
    /// `policy.skipPinnedDigest: false` — so the scanner asks for the tag, not the reference's digest.
    Check { follow_tag: bool },
}

fn skip(reason: impl Into<String>) -> CheckDecision {
    CheckDecision::Skip {
        reason: reason.into(),
    }
}

/// The check decision for one container, in SPEC.md §5 order: self, label filters, pinned, local
/// build, otherwise check. The first rule that skips gives the reason.
pub fn check_decision(
    c: &ContainerInfo,
    r: &RefFacts,
    img: &ImageFacts,
    p: &PolicyConfig,
) -> CheckDecision {
    // 1. Our own container is never checked nor updated (self-update is a later feature).
    if c.is_self {
        return skip("self");
    }

    // 2. Label filters.
    if let Some(reason) = label_filter(&c.labels, p) {
        return CheckDecision::Skip { reason };
    }

    // 3. Pinned. Each pin (digest, semver tag) can be lifted by `watchdocker.force=true`; a digest pin
    //    also by `skipPinnedDigest: false`. What remains to check is always the tag.
    let force = label_is(&c.labels, labels::FORCE, true);
    let mut follow_tag = false;
    if r.has_digest {
        let Some(tag) = r.tag else {
            // `name@sha256:...` names one immutable manifest: there is nothing that could move.
            return skip(if force {
                "pinned by digest, no tag to follow (watchdocker.force=true needs a name:tag@sha256:... reference)"
            } else {
                "pinned by digest, no tag to follow"
            });
        };
        if p.skip_pinned_digest && !force {
            return skip(format!(
                "pinned by digest (set watchdocker.force=true to follow tag {tag})"
            ));
        }
        follow_tag = true;
    }
    if let Some(tag) = r.tag {
        let semver_pinned = p.skip_semver_pinned
            && is_strict_semver(tag)
            && !p.floating_tags.iter().any(|t| t == tag);
        if semver_pinned {
            if !force {
                return skip(format!(
                    "pinned semver tag {tag} (set watchdocker.force=true or add it to policy.floatingTags)"
                ));
            }
            follow_tag = true;
        }
    }

    // 4. Local build. Without a digest from a registry there is nothing to compare with. On the
    //    containerd image store, RepoDigests come from the content store: an image pulled by digest or
    //    under another name of the same content lists a digest under that other name, not under the
    //    container's repository. Any repo digest there proves the image came from a registry, so it is
    //    checked rather than called a local build. An image with no RepoDigests at all is still called a
    //    local build there: we have no evidence of a registry (a caller that has some, such as a
    //    distribution-source annotation, reports it as `any_repo_digest`).
    if p.skip_local_build
        && !img.has_repo_digest_for_repository
        && !(img.containerd_store && img.any_repo_digest)
    {
        return skip(if img.any_repo_digest {
            "local build (no RepoDigests for this repository)"
        } else {
            "local build (no RepoDigests)"
        });
    }

    // 5. Ask the registry.
    CheckDecision::Check { follow_tag }
}

/// Step 2: the first label rule that skips, with its reason.
fn label_filter(l: &BTreeMap<String, String>, p: &PolicyConfig) -> Option<String> {
    // The explicit labels first, so their reason reads the same whatever the configuration.
    if label_is(l, labels::SKIP, true) {
        return Some(format!("label {}=true", labels::SKIP));
    }
    if label_is(l, labels::WATCHTOWER_ENABLE, false) {
        return Some(format!("label {}=false", labels::WATCHTOWER_ENABLE));
    }
    // Not in the spec's list but its mirror image: a container that says `watchdocker.enable=false`
    // must not be watched, with or without opt-in mode, as watchtower's label already works.
    if label_is(l, labels::ENABLE, false) {
        return Some(format!("label {}=false", labels::ENABLE));
    }
    if let Some(entry) = p.skip_labels.iter().find(|e| label_matches(l, e)) {
        return Some(format!("skipped by policy.skipLabels entry {entry:?}"));
    }
    if let Some(entry) = p.exclude_labels.iter().find(|e| label_matches(l, e)) {
        return Some(format!("excluded by policy.excludeLabels entry {entry:?}"));
    }
    if !p.only_labels.is_empty() && !p.only_labels.iter().any(|e| label_matches(l, e)) {
        return Some("not matched by policy.onlyLabels".into());
    }
    if p.label_enable
        && !label_is(l, labels::ENABLE, true)
        && !label_is(l, labels::WATCHTOWER_ENABLE, true)
    {
        return Some(format!(
            "labelEnable: not opted in (set {}=true)",
            labels::ENABLE
        ));
    }
    None
}

/// Whether batch updates may touch a container, and why when not `auto`.
///
/// Precedence: our own container (`skip`, "self"); the label `watchdocker.policy` (an explicit choice
/// per container wins over the compose default; an invalid value gives `notify`, the safe side, with a
/// reason naming it); watchtower's `monitor-only=true` (`notify`); a compose project without
/// `update.allowComposeUpdate` (`notify`, so we do not fight Compose over its containers); else `auto`.
pub fn update_policy(
    c: &ContainerInfo,
    allow_compose_update: bool,
) -> (UpdatePolicy, Option<String>) {
    if c.is_self {
        return (UpdatePolicy::Skip, Some("self".into()));
    }
    if let Some(value) = c.labels.get(labels::POLICY) {
        let key = labels::POLICY;
        return match value.trim().to_ascii_lowercase().as_str() {
            "auto" => (UpdatePolicy::Auto, None),
            "notify" => (UpdatePolicy::Notify, Some(format!("label {key}=notify"))),
            "skip" => (UpdatePolicy::Skip, Some(format!("label {key}=skip"))),
            _ => (
                UpdatePolicy::Notify,
                Some(format!(
                    "label {key} has invalid value {value:?} (allowed: auto, notify, skip)"
                )),
            ),
        };
    }
    if label_is(&c.labels, labels::WATCHTOWER_MONITOR_ONLY, true) {
        let key = labels::WATCHTOWER_MONITOR_ONLY;
        return (UpdatePolicy::Notify, Some(format!("label {key}=true")));
    }
    let project = c
        .compose_project
        .as_deref()
        .or_else(|| c.labels.get(labels::COMPOSE_PROJECT).map(String::as_str));
    if let Some(project) = project {
        if !allow_compose_update {
            return (
                UpdatePolicy::Notify,
                Some(format!(
                    "compose project {project} (set update.allowComposeUpdate)"
                )),
            );
        }
    }
    (UpdatePolicy::Auto, None)
}

/// Whether `labels` match one policy entry: `key` (present, any value) or `key=value` (see the module
/// documentation for boolean values). Surrounding whitespace in the entry is ignored (lists from the
/// environment are comma-separated and often spaced); an entry with an empty key matches nothing.
pub fn label_matches(labels: &BTreeMap<String, String>, entry: &str) -> bool {
    let entry = entry.trim();
    let (key, wanted) = match entry.split_once('=') {
        Some((key, value)) => (key.trim(), Some(value.trim())),
        None => (entry, None),
    };
    if key.is_empty() {
        return false;
    }
    let Some(actual) = labels.get(key) else {
        return false;
    };
    match wanted {
        None => true,
        Some(wanted) if wanted.eq_ignore_ascii_case("true") => parse_bool(actual) == Some(true),
        Some(wanted) if wanted.eq_ignore_ascii_case("false") => parse_bool(actual) == Some(false),
        Some(wanted) => actual == wanted,
    }
}

/// A label read as a boolean equals `value`.
fn label_is(labels: &BTreeMap<String, String>, key: &str, value: bool) -> bool {
    labels.get(key).and_then(|v| parse_bool(v)) == Some(value)
}

fn parse_bool(value: &str) -> Option<bool> {
    let value = value.trim();
    let is = |words: [&str; 4]| words.iter().any(|w| value.eq_ignore_ascii_case(w));
    if is(["true", "1", "yes", "on"]) {
        Some(true)
    } else if is(["false", "0", "no", "off"]) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Platform;

    fn container(labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "0".repeat(64),
            name: "app".into(),
            image: "nginx:latest".into(),
            image_id: format!("sha256:{}", "1".repeat(64)),
            repo_tags: vec![],
            repo_digests: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: "running".into(),
            running: true,
            created: "2026-01-01T00:00:00Z".into(),
            compose_project: None,
            compose_service: None,
            platform: Platform::default(),
            is_self: false,
        }
    }

    /// One case of `check_decision` on one line:
    /// - `reference`: `tag`, `tag@sha256`, `@sha256` (bare digest) or `` (no tag, no digest);
    /// - `labels`: `k=v` separated by spaces;
    /// - `setup`: space-separated changes to the defaults (default config, an image with RepoDigests
    ///   for its repository, classic store):
    ///   policy `self`, `skipLabels=e`, `excludeLabels=e`, `onlyLabels=e`, `floatingTags=t`
    ///   (repeatable), `labelEnable`, `!skipPinnedDigest`, `!skipSemverPinned`, `!skipLocalBuild`;
    ///   image `noDigests` (no RepoDigests), `otherDigests` (only other repositories'), `containerd`;
    /// - `want`: `check`, `follow` (check following the tag) or the exact skip reason.
    fn check(reference: &str, labels: &str, setup: &str, want: &str) {
        let mut p = Config::default().policy;
        let mut img = ImageFacts {
            has_repo_digest_for_repository: true,
            any_repo_digest: true,
            containerd_store: false,
        };
        let mut is_self = false;
        for item in setup.split_whitespace() {
            match item.split_once('=') {
                Some(("skipLabels", e)) => p.skip_labels.push(e.into()),
                Some(("excludeLabels", e)) => p.exclude_labels.push(e.into()),
                Some(("onlyLabels", e)) => p.only_labels.push(e.into()),
                Some(("floatingTags", t)) => p.floating_tags.push(t.into()),
                _ => match item {
                    "self" => is_self = true,
                    "labelEnable" => p.label_enable = true,
                    "!skipPinnedDigest" => p.skip_pinned_digest = false,
                    "!skipSemverPinned" => p.skip_semver_pinned = false,
                    "!skipLocalBuild" => p.skip_local_build = false,
                    "noDigests" => {
                        img.has_repo_digest_for_repository = false;
                        img.any_repo_digest = false;
                    }
                    "otherDigests" => img.has_repo_digest_for_repository = false,
                    "containerd" => img.containerd_store = true,
                    other => panic!("unknown setup item {other}"),
                },
            }
        }
        let label_pairs: Vec<(&str, &str)> = labels
            .split_whitespace()
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect();
        let mut c = container(&label_pairs);
        c.is_self = is_self;
        let (tag, has_digest) = match reference.split_once('@') {
            Some((tag, _)) => (tag, true),
            None => (reference, false),
        };
        let r = RefFacts {
            tag: (!tag.is_empty()).then_some(tag),
            has_digest,
        };
        let want = match want {
            "check" => CheckDecision::Check { follow_tag: false },
            "follow" => CheckDecision::Check { follow_tag: true },
            reason => CheckDecision::Skip {
                reason: reason.into(),
            },
        };
        let got = check_decision(&c, &r, &img, &p);
        assert_eq!(got, want, "{reference:?}, labels {labels:?}, {setup:?}");
    }

    const SKIP: &str = "label watchdocker.skip=true";
    const WT_OFF: &str = "label com.centurylinklabs.watchtower.enable=false";
    const WT_ON: &str = "com.centurylinklabs.watchtower.enable=true";
    const FORCE: &str = "watchdocker.force=true";
    const ONLY: &str = "not matched by policy.onlyLabels";
    const OPT_IN: &str = "labelEnable: not opted in (set watchdocker.enable=true)";
    const DIGEST: &str = "pinned by digest (set watchdocker.force=true to follow tag 1.25)";
    const BARE: &str = "pinned by digest, no tag to follow";
    const BARE_FORCED: &str = "pinned by digest, no tag to follow \
                               (watchdocker.force=true needs a name:tag@sha256:... reference)";
    const SEMVER: &str = "pinned semver tag 1.2.3 \
                          (set watchdocker.force=true or add it to policy.floatingTags)";
    const LOCAL: &str = "local build (no RepoDigests)";
    const LOCAL_OTHER: &str = "local build (no RepoDigests for this repository)";

    #[test]
    fn floating_tags_are_checked() {
        for tag in [
            "latest",
            "main",
            "16",
            "3.19",
            "1.25",
            "1.25-alpine",
            "bookworm",
            "",
        ] {
            check(tag, "", "", "check");
        }
    }

    #[test]
    fn self_comes_first() {
        check("latest", "", "self", "self");
        check("latest", "watchdocker.skip=true", "self", "self");
        check("@sha256", "", "self noDigests", "self");
    }

    #[test]
    fn skip_labels() {
        check("latest", "watchdocker.skip=true", "", SKIP);
        check("latest", "watchdocker.skip=1", "", SKIP);
        check("latest", "watchdocker.skip=TRUE", "", SKIP);
        check("latest", "watchdocker.skip=false", "", "check");
        // The skip label beats force (step 2 before step 3).
        check(
            "1.2.3",
            "watchdocker.skip=yes watchdocker.force=true",
            "",
            SKIP,
        );
        let a = r#"skipped by policy.skipLabels entry "a""#;
        check("latest", "a=b", "skipLabels=a", a);
    }

    #[test]
    fn exclude_labels() {
        let db = r#"excluded by policy.excludeLabels entry "tier=db""#;
        check("latest", "tier=db", "excludeLabels=tier=db", db);
        check("latest", "tier=web", "excludeLabels=tier=db", "check");
        check("latest", "", "excludeLabels=tier=db", "check");
        let tier = r#"excluded by policy.excludeLabels entry "tier""#;
        check("latest", "tier=web", "excludeLabels=tier", tier);
        // Exclusion beats inclusion.
        check(
            "latest",
            "tier=db",
            "onlyLabels=tier excludeLabels=tier=db",
            db,
        );
    }

    #[test]
    fn only_labels() {
        check("latest", "", "onlyLabels=watch", ONLY);
        check("latest", "watch=anything", "onlyLabels=watch", "check");
        check("latest", "watch=", "onlyLabels=watch", "check");
        check("latest", "tier=web", "onlyLabels=tier=db", ONLY);
        check("latest", "tier=db", "onlyLabels=tier=db", "check");
        check("latest", "b=1", "onlyLabels=a onlyLabels=b", "check");
        check("latest", "watch=yes", "onlyLabels=watch=true", "check");
        check("latest", "watch=no", "onlyLabels=watch=true", ONLY);
    }

    #[test]
    fn label_enable() {
        check("latest", "", "labelEnable", OPT_IN);
        let off = "label watchdocker.enable=false";
        check("latest", "watchdocker.enable=false", "labelEnable", off);
        check("latest", "watchdocker.enable=maybe", "labelEnable", OPT_IN);
        check("latest", "watchdocker.enable=true", "labelEnable", "check");
        check("latest", "watchdocker.enable=1", "labelEnable", "check");
        check("latest", WT_ON, "labelEnable", "check");
        // Without opt-in mode, the enable labels are not required.
        check("latest", "", "", "check");
    }

    #[test]
    fn disable_labels() {
        let wt_off = "com.centurylinklabs.watchtower.enable=false";
        check("latest", wt_off, "", WT_OFF);
        check("latest", wt_off, "labelEnable", WT_OFF);
        let off = "label watchdocker.enable=false";
        check("latest", "watchdocker.enable=false", "", off);
        // Disabling beats force.
        let forced = "com.centurylinklabs.watchtower.enable=0 watchdocker.force=true";
        check("1.2.3", forced, "", WT_OFF);
    }

    #[test]
    fn pinned_by_digest() {
        check("1.25@sha256", "", "", DIGEST);
        check("1.25@sha256", FORCE, "", "follow");
        check("1.25@sha256", "", "!skipPinnedDigest", "follow");
        check("@sha256", "", "", BARE);
        check("@sha256", "", "!skipPinnedDigest", BARE);
        check("@sha256", FORCE, "", BARE_FORCED);
    }

    #[test]
    fn pinned_by_semver() {
        check("1.2.3", "", "", SEMVER);
        let v = "pinned semver tag v1.2.3-alpine \
                 (set watchdocker.force=true or add it to policy.floatingTags)";
        check("v1.2.3-alpine", "", "", v);
        check("1.2.3", FORCE, "", "follow");
        check("1.2.3", "watchdocker.force=false", "", SEMVER);
        check("1.2.3", "", "floatingTags=1.2.3", "check");
        check("1.2.3", "", "floatingTags=1.2.4", SEMVER);
        check("1.2.3", "", "!skipSemverPinned", "check");
    }

    #[test]
    fn digest_with_semver_tag_needs_both_pins_lifted() {
        check("1.2.3@sha256", "", "!skipPinnedDigest", SEMVER);
        check(
            "1.2.3@sha256",
            "",
            "!skipPinnedDigest floatingTags=1.2.3",
            "follow",
        );
        check("1.2.3@sha256", FORCE, "", "follow");
    }

    #[test]
    fn local_build() {
        check("latest", "", "noDigests", LOCAL);
        check("latest", "", "otherDigests", LOCAL_OTHER);
        check("latest", "", "noDigests !skipLocalBuild", "check");
        // On the containerd store, a digest under another name still proves a registry origin.
        check("latest", "", "otherDigests containerd", "check");
        check("latest", "", "noDigests containerd", LOCAL);
        check("latest", "", "containerd", "check");
        // Pinned comes before local build; force does not turn a local build into a check.
        check("1.2.3", "", "noDigests", SEMVER);
        check("1.2.3", FORCE, "noDigests", LOCAL);
        check("1.25@sha256", "", "noDigests !skipPinnedDigest", LOCAL);
    }

    #[test]
    fn label_entries() {
        let l: BTreeMap<String, String> = [
            ("a", "true"),
            ("b", "1"),
            ("c", "Yes"),
            ("d", "0"),
            ("e", "False"),
            ("tier", "db"),
            ("empty", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("missing", false),
            ("a=true", true),
            ("b=true", true),
            ("c=true", true),
            ("c=TRUE", true),
            ("d=true", false),
            ("d=false", true),
            ("e=false", true),
            ("e=true", false),
            ("tier=true", false),
            ("tier=db", true),
            ("tier=DB", false),
            ("tier=", false),
            ("empty=", true),
            ("empty", true),
            (" tier = db ", true),
            // Only the words true/false are read as booleans: `1` is an exact value.
            ("a=1", false),
            ("b=1", true),
            ("", false),
            ("=db", false),
        ];
        for (entry, want) in cases {
            assert_eq!(label_matches(&l, entry), *want, "label_matches({entry:?})");
        }
    }

    /// One case of `update_policy`: labels as `k=v` separated by spaces, the compose project field,
    /// `update.allowComposeUpdate`, then the expected policy and reason (`""` for none).
    fn policy(labels: &str, compose: Option<&str>, allow: bool, want: UpdatePolicy, reason: &str) {
        let pairs: Vec<(&str, &str)> = labels
            .split_whitespace()
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect();
        let mut c = container(&pairs);
        c.compose_project = compose.map(String::from);
        let reason = (!reason.is_empty()).then(|| reason.to_string());
        let got = update_policy(&c, allow);
        assert_eq!(got, (want, reason), "{labels:?}, {compose:?}, {allow}");
    }

    #[test]
    fn update_policies() {
        use UpdatePolicy::{Auto, Notify, Skip};
        let compose = "compose project shop (set update.allowComposeUpdate)";
        let monitor = "com.centurylinklabs.watchtower.monitor-only=true";
        let monitor_reason = "label com.centurylinklabs.watchtower.monitor-only=true";
        let invalid =
            r#"label watchdocker.policy has invalid value "yolo" (allowed: auto, notify, skip)"#;
        policy("", None, false, Auto, "");
        policy("", Some("shop"), false, Notify, compose);
        let compose_label = "com.docker.compose.project=shop";
        policy(compose_label, None, false, Notify, compose);
        policy("", Some("shop"), true, Auto, "");
        let notify = "label watchdocker.policy=notify";
        policy("watchdocker.policy=notify", None, true, Notify, notify);
        let skip = "label watchdocker.policy=skip";
        policy("watchdocker.policy=Skip", None, true, Skip, skip);
        policy("watchdocker.policy=yolo", None, true, Notify, invalid);
        let empty = invalid.replace("yolo", "");
        policy("watchdocker.policy=", None, true, Notify, &empty);
        // The per-container label wins over the compose default and over watchtower's monitor-only.
        policy("watchdocker.policy=auto", Some("shop"), false, Auto, "");
        let both = format!("watchdocker.policy=auto {monitor}");
        policy(&both, None, true, Auto, "");
        policy(monitor, None, true, Notify, monitor_reason);
        policy(monitor, Some("shop"), false, Notify, monitor_reason);
        let monitor_off = "com.centurylinklabs.watchtower.monitor-only=false";
        policy(monitor_off, None, true, Auto, "");
    }

    #[test]
    fn own_container_is_never_updated() {
        let mut c = container(&[("watchdocker.policy", "auto")]);
        c.is_self = true;
        let want = (UpdatePolicy::Skip, Some("self".into()));
        assert_eq!(update_policy(&c, true), want);
    }
}

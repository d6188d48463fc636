//! The scanner: discovered containers + policy + remote digests → one `CheckResult` per container.
//! One registry request per distinct reference per scan, results cached for `scan.cacheTTL`,
//! `scan.concurrency` checks in parallel. A failing registry or reference is a per-container
//! `Error` status, never a failed scan. Talks to registries only through `registry::RegistryClient`.

use crate::config::PolicyConfig;
use crate::model::{ContainerInfo, Platform, Status};
use crate::policy::{self, CheckDecision, ImageFacts, RefFacts};
use crate::registry::{
    digest_for_repository, digests_for_repository, Reference, RegistryClient, RemoteDigest,
};
use crate::tags;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many pages of a tag list, and for how long, `scan.newerVersions` may read per repository.
const TAG_PAGES: usize = 10;
const TAG_DEADLINE: Duration = Duration::from_secs(10);

/// The outcome of checking one container.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub container_id: String,
    pub status: Status,
    pub current_digest: Option<String>,
    pub remote_digest: Option<String>,
    pub skip_reason: Option<String>,
    pub error: Option<String>,
    /// RFC 3339.
    pub checked_at: String,
    pub newer_versions: Option<Vec<String>>,
}

/// Figures of one scan, for jobs and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanSummary {
    pub checked: usize,
    pub updates_found: usize,
    pub errors: usize,
    pub skipped: usize,
    /// Distinct references asked of a registry (not served from the cache).
    pub references_fetched: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub concurrency: usize,
    pub cache_ttl: Duration,
    pub newer_versions: bool,
    /// The engine uses the containerd image store (image ids are manifest digests there).
    pub containerd_store: bool,
}

struct Cached<T> {
    at: Instant,
    value: T,
}

/// Shared by the scan jobs of one process: owns the digest and tag caches.
pub struct Scanner {
    registry: Arc<RegistryClient>,
    policy: PolicyConfig,
    opts: ScanOptions,
    digests: Mutex<HashMap<String, Cached<RemoteDigest>>>,
    tag_lists: Mutex<HashMap<String, Cached<Vec<String>>>>,
}

/// What the policy decided for one container before any registry is asked.
enum Plan {
    /// Ask the registry about this reference.
    Ask(Reference),
    /// Settled without the registry: `Skipped` or `Error`, with the reason. `semver` is the
    /// reference when its tag is strict semver (for `scan.newerVersions`).
    Settled {
        status: Status,
        reason: String,
        semver: Option<Reference>,
    },
}

/// The work for one distinct reference: the remote digest, then one verdict per distinct local image.
struct Task<'a> {
    reference: Reference,
    users: Vec<&'a ContainerInfo>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scanner {
    pub fn new(registry: Arc<RegistryClient>, policy: PolicyConfig, opts: ScanOptions) -> Self {
        Scanner {
            registry,
            policy,
            opts,
            digests: Mutex::default(),
            tag_lists: Mutex::default(),
        }
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// Checks `containers`; `now` is the RFC 3339 time written as `lastCheckedAt`.
    pub fn scan(&self, containers: &[ContainerInfo], now: &str) -> (Vec<CheckResult>, ScanSummary) {
        let started = Instant::now();
        let mut results: BTreeMap<String, CheckResult> = BTreeMap::new();
        let mut planned = Vec::new();
        let mut newer_for: Vec<(&ContainerInfo, Reference)> = Vec::new();
        for c in containers {
            match self.plan(c) {
                Plan::Ask(reference) => {
                    if self.opts.newer_versions {
                        newer_for.push((c, reference.clone()));
                    }
                    planned.push((c, reference));
                }
                Plan::Settled {
                    status,
                    reason,
                    semver,
                } => {
                    if let (true, Some(r)) = (self.opts.newer_versions, semver) {
                        newer_for.push((c, r));
                    }
                    let mut r = base_result(c, now, status);
                    match status {
                        Status::Error => r.error = Some(reason),
                        _ => r.skip_reason = Some(reason),
                    }
                    results.insert(c.id.clone(), r);
                }
            }
        }

        // One task per distinct reference, however many containers use it.
        let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
        for (c, reference) in planned {
            tasks
                .entry(reference.to_string())
                .or_insert_with(|| Task {
                    reference,
                    users: vec![],
                })
                .users
                .push(c);
        }
        let tasks: Vec<Task> = tasks.into_values().collect();
        let fetched = AtomicUsize::new(0);
        // Ask one token per registry for all the repositories this scan will fetch.
        let to_fetch: Vec<Reference> = tasks
            .iter()
            .filter(|t| self.cached_digest(&t.reference).is_none())
            .map(|t| t.reference.clone())
            .collect();
        // Even with nothing to fetch: a confirmation may still need a registry that did not answer
        // during the last scan, and this is where the client forgets that.
        self.registry.prepare(&to_fetch);

        let next = AtomicUsize::new(0);
        let out: Mutex<Vec<CheckResult>> = Mutex::new(Vec::new());
        let workers = self.opts.concurrency.clamp(1, tasks.len().max(1));
        std::thread::scope(|s| {
            for i in 0..workers {
                let (tasks, next, out, fetched) = (&tasks, &next, &out, &fetched);
                let spawned = std::thread::Builder::new()
                    .name(format!("scan-{i}"))
                    .spawn_scoped(s, move || loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(task) = tasks.get(n) else { break };
                        let r = self.run_task(task, now, fetched);
                        lock(out).extend(r);
                    });
                if let Err(e) = spawned {
                    log::warn!(component = "scanner"; "spawn a scan thread: {e}");
                }
            }
        });
        // Should every spawn have failed, the work is still done here.
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let Some(task) = tasks.get(n) else { break };
            let r = self.run_task(task, now, &fetched);
            lock(&out).extend(r);
        }
        for r in out.into_inner().unwrap_or_else(|p| p.into_inner()) {
            results.insert(r.container_id.clone(), r);
        }

        if self.opts.newer_versions {
            for (c, reference) in newer_for {
                let newer = self.newer_versions(&reference);
                if let Some(r) = results.get_mut(&c.id) {
                    r.newer_versions = newer;
                }
            }
        }

        let mut summary = ScanSummary {
            references_fetched: fetched.into_inner(),
            ..ScanSummary::default()
        };
        let results: Vec<CheckResult> = containers
            .iter()
            .filter_map(|c| results.remove(&c.id))
            .collect();
        for r in &results {
            match r.status {
                Status::UpToDate => summary.checked += 1,
                Status::UpdateAvailable => {
                    summary.checked += 1;
                    summary.updates_found += 1;
                }
                Status::Error => summary.errors += 1,
                Status::Skipped => summary.skipped += 1,
                Status::Unknown => {}
            }
        }
        summary.duration = started.elapsed();
        (results, summary)
    }

    /// The reference to ask about, or the status settled without asking.
    fn plan(&self, c: &ContainerInfo) -> Plan {
        let settled = |status, reason: &str, semver| Plan::Settled {
            status,
            reason: reason.to_string(),
            semver,
        };
        if c.is_self {
            return settled(Status::Skipped, "self", None);
        }
        // `docker run <image id>` leaves an id, not a reference: there is no tag to follow.
        if is_image_id(&c.image, &c.image_id) {
            return settled(
                Status::Skipped,
                "created from an image id (no tag to follow)",
                None,
            );
        }
        let reference = match Reference::parse(&c.image) {
            Ok(r) => r,
            Err(e) => {
                return settled(
                    Status::Error,
                    &format!("invalid image reference: {e}"),
                    None,
                )
            }
        };
        let facts = RefFacts {
            tag: reference.tag.as_deref(),
            has_digest: reference.digest.is_some(),
        };
        let image = ImageFacts {
            has_repo_digest_for_repository: digest_for_repository(&c.repo_digests, &reference)
                .is_some(),
            any_repo_digest: !c.repo_digests.is_empty(),
            containerd_store: self.opts.containerd_store,
        };
        match policy::check_decision(c, &facts, &image, &self.policy) {
            CheckDecision::Skip { reason } => {
                let semver = reference.tag.as_deref().is_some_and(tags::is_strict_semver);
                settled(Status::Skipped, &reason, semver.then_some(reference))
            }
            CheckDecision::Check { .. } => {
                // A digest reference reaches here only to follow its tag (force, or
                // skipPinnedDigest: false): ask about the tag.
                let mut reference = reference;
                reference.digest = None;
                if reference.tag.is_none() {
                    reference.tag = Some("latest".into());
                }
                Plan::Ask(reference)
            }
        }
    }

    /// Drops the cached remote digests of these image references (what an update just pulled:
    /// the registry has moved on from what the cache holds), or all of them with `None` (an
    /// explicit "scan now").
    pub fn forget(&self, images: Option<&[String]>) {
        let mut cache = lock(&self.digests);
        match images {
            None => cache.clear(),
            Some(images) => {
                for i in images {
                    if let Ok(mut r) = Reference::parse(i) {
                        r.digest = None;
                        if r.tag.is_none() {
                            r.tag = Some("latest".into());
                        }
                        cache.remove(&r.to_string());
                    }
                }
            }
        }
    }

    fn cached_digest(&self, r: &Reference) -> Option<RemoteDigest> {
        let cache = lock(&self.digests);
        cache
            .get(&r.to_string())
            .filter(|c| c.at.elapsed() < self.opts.cache_ttl)
            .map(|c| c.value.clone())
    }

    fn run_task(&self, task: &Task, now: &str, fetched: &AtomicUsize) -> Vec<CheckResult> {
        let key = task.reference.to_string();
        let remote = match self.cached_digest(&task.reference) {
            Some(d) => Ok(d),
            None => {
                fetched.fetch_add(1, Ordering::Relaxed);
                let r = self.registry.head_digest(&task.reference);
                if let Ok(d) = &r {
                    lock(&self.digests).insert(
                        key.clone(),
                        Cached {
                            at: Instant::now(),
                            value: d.clone(),
                        },
                    );
                }
                r
            }
        };
        let remote = match remote {
            Ok(d) => d,
            Err(e) => {
                log::warn!(component = "scanner", image = key.as_str(); "{e}");
                return task
                    .users
                    .iter()
                    .map(|c| {
                        let mut r = base_result(c, now, Status::Error);
                        r.current_digest = digest_for_repository(&c.repo_digests, &task.reference);
                        r.error = Some(e.to_string());
                        r
                    })
                    .collect();
            }
        };
        // One verdict per distinct local image (containers of one image share it).
        let mut verdicts: HashMap<(&str, &Platform), Result<bool, String>> = HashMap::new();
        task.users
            .iter()
            .map(|c| {
                let local = local_digest(&c.repo_digests, &task.reference, &remote.digest);
                let verdict = if local.as_deref() == Some(remote.digest.as_str()) {
                    Ok(false)
                } else {
                    verdicts
                        .entry((c.image_id.as_str(), &c.platform))
                        .or_insert_with(|| {
                            self.registry
                                .platform_changed(
                                    &task.reference,
                                    &remote.digest,
                                    &c.platform,
                                    &c.image_id,
                                )
                                .map_err(|e| e.to_string())
                        })
                        .clone()
                };
                let mut r = base_result(c, now, Status::UpToDate);
                r.current_digest = local;
                r.remote_digest = Some(remote.digest.clone());
                match verdict {
                    Ok(true) => r.status = Status::UpdateAvailable,
                    Ok(false) => {}
                    Err(e) => {
                        r.status = Status::Error;
                        r.error = Some(e);
                    }
                }
                r
            })
            .collect()
    }

    /// Newer semver tags of the same variant, from the repository's tag list (cached for cacheTTL).
    fn newer_versions(&self, r: &Reference) -> Option<Vec<String>> {
        let tag = r.tag.as_deref()?;
        if !tags::is_strict_semver(tag) {
            return None;
        }
        let repo = r.repo_key();
        let cached = lock(&self.tag_lists)
            .get(&repo)
            .filter(|c| c.at.elapsed() < self.opts.cache_ttl)
            .map(|c| c.value.clone());
        let all = match cached {
            Some(t) => t,
            None => match self.registry.list_tags(r, TAG_PAGES, TAG_DEADLINE) {
                Ok(t) => {
                    lock(&self.tag_lists).insert(
                        repo,
                        Cached {
                            at: Instant::now(),
                            value: t.clone(),
                        },
                    );
                    t
                }
                Err(e) => {
                    log::warn!(component = "scanner", image = r.to_string().as_str(); "{e}");
                    return None;
                }
            },
        };
        Some(tags::newer_versions(tag, &all))
    }
}

/// The local digest to compare with `remote`: `remote` itself when the image is known by it. An image
/// pulled again after its tag moved to an index that changed only for other platforms keeps every
/// digest it was pulled as, in the engine's order; the first one may be the older.
fn local_digest(repo_digests: &[String], r: &Reference, remote: &str) -> Option<String> {
    if digests_for_repository(repo_digests, r).any(|d| d == remote) {
        Some(remote.to_string())
    } else {
        digest_for_repository(repo_digests, r)
    }
}

fn base_result(c: &ContainerInfo, now: &str, status: Status) -> CheckResult {
    CheckResult {
        container_id: c.id.clone(),
        status,
        current_digest: None,
        remote_digest: None,
        skip_reason: None,
        error: None,
        checked_at: now.to_string(),
        newer_versions: None,
    }
}

/// `Config.Image` is an image id (full, `sha256:`-prefixed, or a short prefix of the image's id).
fn is_image_id(image: &str, image_id: &str) -> bool {
    let id = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let given = image.strip_prefix("sha256:").unwrap_or(image);
    image.starts_with("sha256:")
        || (given.len() >= 12
            && given.bytes().all(|b| b.is_ascii_hexdigit())
            && id.starts_with(given))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_recognised() {
        let id = "sha256:4b0f0c7d1c6e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f901234";
        assert!(is_image_id(id, id));
        assert!(is_image_id("4b0f0c7d1c6e", id));
        assert!(!is_image_id("nginx:latest", id));
        // A repository that happens to be hex is a name when it is not a prefix of the id.
        assert!(!is_image_id("deadbeefcafe", id));
    }

    #[test]
    fn the_remote_digest_wins_among_several_local_ones() {
        let old = format!("sha256:{}", "1".repeat(64));
        let new = format!("sha256:{}", "2".repeat(64));
        let r = Reference::parse("reg.example:5000/app:latest").unwrap();
        let digests = vec![
            format!("other.example/app@{new}"),
            format!("reg.example:5000/app@{old}"),
            format!("reg.example:5000/app@{new}"),
        ];
        assert_eq!(local_digest(&digests, &r, &new), Some(new.clone()));
        // Not known by the remote digest: the repository's first entry, as before.
        let third = format!("sha256:{}", "3".repeat(64));
        assert_eq!(local_digest(&digests, &r, &third), Some(old));
        // Another repository's digest never counts.
        assert_eq!(local_digest(&digests[..1], &r, &new), None);
    }
}

//! What a job thread does: the work of one scan, update or container operation, from the engine,
//! the registries and the updater, ending in a `JobDone` for the event loop. Runs on the job's own
//! thread; touches no daemon state.

use super::{container_result, discover_now, LifecycleOp};
use crate::api::{ApiReply, ErrorCode};
use crate::config::Config;
use crate::discovery::Discovery;
use crate::docker::Engine;
use crate::jobs::{ContainerResult, Counts, JobRecord};
use crate::metrics::{Metrics, RegistryOutcome};
use crate::model::{ContainerInfo, Status, UpdatePolicy};
use crate::registry::{CredentialStore, RegistryClient};
use crate::scanner::{CheckResult, ScanOptions, ScanSummary, Scanner};
use crate::updater::{self, Outcome, UpdateRequest, Updater};
use std::any::Any;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub(crate) enum Work {
    /// Crash recovery, then the initial scan when `scan`.
    Startup {
        scan: bool,
    },
    /// `fresh`: ask the registries again even within `scan.cacheTTL` (an explicit scan).
    Scan {
        fresh: bool,
    },
    /// Every eligible container with an update (`updatePolicy: auto`).
    Batch {
        dry_run: bool,
        /// (container name, remote digest) pairs whose update already failed: a scheduled run does
        /// not stop the same container again for the same new image.
        avoid: Vec<(String, String)>,
    },
    Update(Vec<UpdateRequest>),
    Lifecycle {
        id: String,
        op: LifecycleOp,
    },
}

/// What the job threads share: the engine, the scanner (built at first use, from the engine's
/// `/info`), the updater, and the stop flag.
pub(crate) struct JobEnv {
    engine: Engine,
    metrics: Option<Arc<Metrics>>,
    cfg: Config,
    scanner: Arc<OnceLock<Arc<Scanner>>>,
    updater: Updater,
    /// Set on SIGTERM: updates not yet at their stop step are abandoned.
    pub cancel: AtomicBool,
}

/// What a job found and did.
#[derive(Default)]
pub(crate) struct JobOutput {
    pub discovery: Option<Discovery>,
    pub checks: Vec<CheckResult>,
    pub scan: Option<ScanSummary>,
    pub results: Vec<ContainerResult>,
    pub error: Option<String>,
    pub recovered: bool,
    /// A lifecycle operation's own answer.
    pub reply: Option<ApiReply>,
}

pub(crate) struct JobDone {
    pub id: String,
    pub duration: Duration,
    pub discovery: Option<Discovery>,
    pub checks: Vec<CheckResult>,
    pub scan: Option<ScanSummary>,
    pub results: Vec<ContainerResult>,
    pub error: Option<String>,
    pub recovered: bool,
    reply: Option<ApiReply>,
}

impl JobDone {
    pub fn from_result(
        id: String,
        result: Result<JobOutput, Box<dyn Any + Send>>,
        duration: Duration,
    ) -> Self {
        let out = result.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!(component = "daemon"; "job {id} panicked: {what}");
            JobOutput {
                error: Some(format!("job panicked: {what}")),
                ..JobOutput::default()
            }
        });
        JobDone {
            id,
            duration,
            discovery: out.discovery,
            checks: out.checks,
            scan: out.scan,
            results: out.results,
            error: out.error,
            recovered: out.recovered,
            reply: out.reply,
        }
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        if let Some(s) = &self.scan {
            c.checked = s.checked;
            c.updates_found = s.updates_found;
        }
        for r in &self.results {
            match r.outcome.as_str() {
                "updated" => c.updated += 1,
                "rolledBack" => {
                    c.failed += 1;
                    c.rolled_back += 1
                }
                "failed" => c.failed += 1,
                _ => {}
            }
        }
        c
    }

    /// What the job record shows as its last error: the job's own error, else a summary of the
    /// containers whose update failed (a run with a failed update did not succeed).
    pub fn record_error(&self) -> Option<String> {
        if self.error.is_some() {
            return self.error.clone();
        }
        let failed: Vec<String> = self
            .results
            .iter()
            .filter(|r| r.outcome == "rolledBack" || r.outcome == "failed")
            .map(|r| {
                format!(
                    "{} {}: {}",
                    r.container,
                    if r.outcome == "rolledBack" {
                        "rolled back"
                    } else {
                        "failed"
                    },
                    r.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    /// The answer for a waiting API client: the job record, or the SPEC's error for a failed update.
    pub fn reply(&self, record: Option<&JobRecord>) -> ApiReply {
        if let Some(r) = &self.reply {
            return r.clone();
        }
        let data = serde_json::to_value(record).unwrap_or_default();
        let failed = self
            .results
            .iter()
            .find(|r| r.outcome == "rolledBack" || r.outcome == "failed");
        match (failed, &self.error) {
            (Some(f), _) => {
                let mut data = data;
                if let Some(o) = data.as_object_mut() {
                    o.insert("rolledBack".into(), (f.outcome == "rolledBack").into());
                    o.insert("error".into(), f.error.clone().into());
                }
                ApiReply::error_with_data(
                    ErrorCode::UpdateFailed,
                    format!(
                        "update of {} failed{}: {}",
                        f.container,
                        if f.outcome == "rolledBack" {
                            " and was rolled back"
                        } else {
                            ""
                        },
                        f.error.as_deref().unwrap_or("unknown error")
                    ),
                    data,
                )
            }
            (None, Some(e)) if self.scan.is_some() || self.results.is_empty() => {
                ApiReply::error_with_data(ErrorCode::ScanFailed, e.clone(), data)
            }
            _ => ApiReply::ok(data),
        }
    }
}

impl JobEnv {
    pub fn new(
        cfg: &Config,
        engine: Engine,
        scanner: Arc<OnceLock<Arc<Scanner>>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let credentials = Arc::new(CredentialStore::new(&cfg.registry));
        JobEnv {
            metrics,
            updater: Updater::new(engine.clone(), credentials, cfg.update.clone()),
            engine,
            cfg: cfg.clone(),
            scanner,
            cancel: AtomicBool::new(false),
        }
    }

    /// The process's scanner, built on first use: it needs the engine's insecure registries and
    /// image store, which need the engine up.
    fn scanner(&self) -> Result<Arc<Scanner>, String> {
        if let Some(s) = self.scanner.get() {
            return Ok(Arc::clone(s));
        }
        let scanner = build_scanner(&self.cfg, &self.engine, self.metrics.clone())?;
        Ok(Arc::clone(self.scanner.get_or_init(|| Arc::new(scanner))))
    }

    pub fn run(&self, work: &Work, recovered: bool) -> JobOutput {
        match work {
            Work::Startup { scan } => {
                let mut out = JobOutput::default();
                if !recovered {
                    match self.engine.ping() {
                        Ok(()) => {
                            for line in self.updater.recover() {
                                log::warn!(component = "updater", action = "recover"; "{line}");
                            }
                            out.recovered = true;
                        }
                        Err(e) => {
                            out.error = Some(format!("crash recovery postponed: {e}"));
                            return out;
                        }
                    }
                }
                if *scan {
                    let mut s = self.scan(false);
                    s.recovered = out.recovered;
                    return s;
                }
                out
            }
            Work::Scan { fresh } => self.scan(*fresh),
            Work::Batch { dry_run, avoid } => self.batch(*dry_run, avoid),
            // The engine's containers as they are now (stopped ones too: a request may name one),
            // for names, ordering and recognising our own container.
            Work::Update(reqs) => match discover_now(&self.engine, true) {
                Ok(d) => self.updates(reqs, &d.containers),
                Err(e) => JobOutput {
                    error: Some(format!("update: {e}")),
                    ..JobOutput::default()
                },
            },
            Work::Lifecycle { id, op } => self.lifecycle(id, *op),
        }
    }

    fn scan(&self, fresh: bool) -> JobOutput {
        let mut out = JobOutput::default();
        let d = match discover_now(&self.engine, self.cfg.docker.include_stopped) {
            Ok(d) => d,
            Err(e) => {
                out.error = Some(format!("scan: {e}"));
                return out;
            }
        };
        let scanner = match self.scanner() {
            Ok(s) => s,
            Err(e) => {
                out.error = Some(format!("scan: {e}"));
                out.discovery = Some(d);
                return out;
            }
        };
        if fresh {
            scanner.forget(None);
        }
        let (checks, summary) = scanner.scan(&d.containers, &jiff::Timestamp::now().to_string());
        log::info!(
            component = "scanner", action = "scan", durationMs = summary.duration.as_millis() as u64;
            "scan: {} checked, {} with an update, {} errors, {} skipped, {} references fetched",
            summary.checked, summary.updates_found, summary.errors, summary.skipped, summary.references_fetched
        );
        out.discovery = Some(d);
        out.checks = checks;
        out.scan = Some(summary);
        out
    }

    fn batch(&self, dry_run: bool, avoid: &[(String, String)]) -> JobOutput {
        // Scan first: within cacheTTL it costs no registry request, and it makes the decision
        // from the engine's current containers, not an old snapshot.
        let scanned = self.scan(false);
        let Some(d) = &scanned.discovery else {
            return scanned;
        };
        let eligible: Vec<&ContainerInfo> = d
            .containers
            .iter()
            .filter(|c| {
                let Some(check) = scanned.checks.iter().find(|k| k.container_id == c.id) else {
                    return false;
                };
                let failed_before = avoid.iter().any(|(name, digest)| {
                    *name == c.name && check.remote_digest.as_deref() == Some(digest)
                });
                if failed_before && check.status == Status::UpdateAvailable {
                    log::info!(
                        component = "updater", container = c.name.as_str(), action = "skip";
                        "not retrying: the update to this image failed before (update it through the API to try again)"
                    );
                }
                !c.is_self
                    && check.status == Status::UpdateAvailable
                    && !failed_before
                    && crate::policy::update_policy(c, self.cfg.update.allow_compose_update).0
                        == UpdatePolicy::Auto
            })
            .collect();
        let reqs: Vec<UpdateRequest> = eligible
            .iter()
            .map(|c| UpdateRequest {
                container: c.id.clone(),
                image: None,
                rollback: false,
                dry_run,
            })
            .collect();
        let mut out = self.updates(&reqs, &d.containers);
        out.scan = scanned.scan;
        if out.discovery.is_none() {
            out.discovery = scanned.discovery;
            out.checks = scanned.checks;
        }
        out
    }

    /// Runs the requests in dependency order, then looks again so that the statuses are current.
    fn updates(&self, reqs: &[UpdateRequest], containers: &[ContainerInfo]) -> JobOutput {
        let mut out = JobOutput::default();
        if reqs.is_empty() {
            return out;
        }
        let waves = self.waves(reqs, containers);
        let name_of = |id: &str| {
            containers
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| id.chars().take(12).collect())
        };
        let one = |req: &UpdateRequest| {
            let started = std::time::Instant::now();
            let name = name_of(&req.container);
            let outcome = if containers
                .iter()
                .any(|c| c.id == req.container && c.is_self)
            {
                Outcome::Failed {
                    error: "watch-docker does not update its own container".into(),
                    rolled_back: false,
                }
            } else {
                self.updater.update(req, &self.cancel)
            };
            if matches!(outcome, Outcome::Updated { .. }) {
                // Consumers of its network namespace hold the old, dead one: restart them.
                for (consumer, o) in self.updater.restart_consumers(&name) {
                    log::info!(component = "updater", container = consumer.as_str(); "restarted after its network provider {name} was updated: {o:?}");
                }
            }
            container_result(&req.container, &name, &outcome, started.elapsed())
        };
        // Each wave's groups side by side, at most `update.concurrency` containers at once; the
        // containers of one group (one image) one after another.
        let results = std::sync::Mutex::new(Vec::new());
        for wave in &waves {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let run_groups = || loop {
                let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(group) = wave.get(g) else { break };
                for req in group {
                    let r = one(req);
                    results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            };
            let threads = self.cfg.update.concurrency.clamp(1, wave.len().max(1));
            std::thread::scope(|scope| {
                for i in 1..threads {
                    let spawned = std::thread::Builder::new()
                        .name(format!("update-{i}"))
                        .spawn_scoped(scope, run_groups);
                    if let Err(e) = spawned {
                        log::warn!(component = "updater"; "spawn an update thread: {e}");
                    }
                }
                run_groups();
            });
        }
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        // Report in plan order, whatever order the threads finished in.
        let position = |id: &str| reqs.iter().position(|r| r.container == id);
        results.sort_by_key(|r| position(&r.id));
        out.results = results;
        if reqs.iter().all(|r| r.dry_run) {
            return out;
        }
        // After an update the container's status is current without waiting for the next scan.
        // What was pulled is what the registry has now: the cached digests of those references
        // are stale, so they are asked again (one HEAD each).
        if let Some(scanner) = self.scanner.get() {
            let images: Vec<String> = reqs
                .iter()
                .filter_map(|r| {
                    r.image.clone().or_else(|| {
                        containers
                            .iter()
                            .find(|c| c.id == r.container)
                            .map(|c| c.image.clone())
                    })
                })
                .collect();
            scanner.forget(Some(&images));
        }
        let mut rescan = self.scan(false);
        // A failed update is the container's status until the next scan (SPEC.md §6: `Error`,
        // result `rolledBack`), even though the rescan sees the update still available.
        for r in &out.results {
            if r.outcome != "rolledBack" && r.outcome != "failed" {
                continue;
            }
            let id = rescan
                .discovery
                .as_ref()
                .and_then(|d| d.containers.iter().find(|c| c.name == r.container))
                .map(|c| c.id.clone());
            if let Some(check) = rescan
                .checks
                .iter_mut()
                .find(|c| Some(&c.container_id) == id.as_ref())
            {
                check.status = Status::Error;
                check.error = Some(format!(
                    "update {}: {}",
                    if r.outcome == "rolledBack" {
                        "rolled back"
                    } else {
                        "failed"
                    },
                    r.error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        out.discovery = rescan.discovery;
        out.checks = rescan.checks;
        out
    }

    /// Dependency order (providers first, one image's containers together) from the engine's
    /// `NetworkMode` and `Links` of each container, as waves of independent groups.
    fn waves(
        &self,
        reqs: &[UpdateRequest],
        containers: &[ContainerInfo],
    ) -> Vec<Vec<Vec<UpdateRequest>>> {
        let items: Vec<updater::OrderItem> = reqs
            .iter()
            .map(|r| {
                let c = containers.iter().find(|c| c.id == r.container);
                let raw = self.engine.inspect_container_raw(&r.container).ok();
                let host = raw.as_ref().map(|v| &v["HostConfig"]);
                updater::OrderItem {
                    id: r.container.clone(),
                    name: c.map(|c| c.name.clone()).unwrap_or_default(),
                    image: r
                        .image
                        .clone()
                        .or_else(|| c.map(|c| c.image.clone()))
                        .unwrap_or_default(),
                    network_mode: host
                        .and_then(|h| h["NetworkMode"].as_str())
                        .unwrap_or_default()
                        .to_string(),
                    links: host
                        .and_then(|h| h["Links"].as_array())
                        .map(|l| {
                            l.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    labels: c.map(|c| c.labels.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let request = |id: String| reqs.iter().find(|r| r.container == id).cloned();
        updater::waves(&items)
            .into_iter()
            .map(|wave| {
                wave.into_iter()
                    .map(|group| group.into_iter().filter_map(request).collect())
                    .collect()
            })
            .collect()
    }

    fn lifecycle(&self, id: &str, op: LifecycleOp) -> JobOutput {
        let mut out = JobOutput::default();
        let seg = crate::docker::path_segment(id);
        let result = match op {
            LifecycleOp::Stop => {
                let t = self
                    .engine
                    .inspect_container_raw(id)
                    .map(|raw| updater::stop_timeout(&raw, self.cfg.update.stop_timeout));
                match t {
                    Ok(t) => self
                        .engine
                        .request(
                            "POST",
                            &format!("/containers/{seg}/stop?t={}", t.as_secs()),
                            None,
                            &[],
                            Some(t + Duration::from_secs(30)),
                        )
                        .map(|_| "stopped"),
                    Err(e) => Err(e),
                }
            }
            LifecycleOp::Start => self
                .engine
                .request("POST", &format!("/containers/{seg}/start"), None, &[], None)
                .map(|_| "started"),
            LifecycleOp::Remove { force } => {
                match self.engine.inspect_container(id) {
                    Ok(c) if c.state.running && !force => {
                        out.reply = Some(ApiReply::error(
                            ErrorCode::Conflict,
                            format!(
                                "{} is running: stop it first, or pass force=true",
                                c.name.trim_start_matches('/')
                            ),
                        ));
                        return out;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        out.reply = Some(engine_error_reply(&e));
                        return out;
                    }
                }
                self.engine
                    .request(
                        "DELETE",
                        &format!("/containers/{seg}?force={force}"),
                        None,
                        &[],
                        None,
                    )
                    .map(|_| "removed")
            }
        };
        out.reply = Some(match result {
            Ok(done) => ApiReply::ok(serde_json::json!({ "id": id, "result": done })),
            Err(e) => engine_error_reply(&e),
        });
        if let Ok(d) = discover_now(&self.engine, self.cfg.docker.include_stopped) {
            out.discovery = Some(d);
        }
        out
    }
}

fn engine_error_reply(e: &crate::docker::EngineError) -> ApiReply {
    match e.status() {
        Some(404) => ApiReply::error(ErrorCode::NotFound, e.to_string()),
        Some(409) => ApiReply::error(ErrorCode::Conflict, e.to_string()),
        Some(_) => ApiReply::error(ErrorCode::DockerError, e.to_string()),
        None => ApiReply::error(ErrorCode::DockerError, e.to_string()).with_status(503),
    }
}

/// The scanner for this config and engine: the engine tells which registries it treats as
/// insecure and which image store it uses.
pub(crate) fn build_scanner(
    cfg: &Config,
    engine: &Engine,
    metrics: Option<Arc<Metrics>>,
) -> Result<Scanner, String> {
    let info = engine.info().map_err(|e| e.to_string())?;
    let mut registry = RegistryClient::new(
        &cfg.registry,
        info.insecure_registry_names(),
        cfg.scan.concurrency,
    )
    .map_err(|e| e.to_string())?;
    if let Some(m) = metrics {
        registry = registry.with_observer(Arc::new(move |host, outcome, took| {
            let outcome = match outcome {
                "ok" => RegistryOutcome::Ok,
                "rate_limited" => RegistryOutcome::RateLimited,
                _ => RegistryOutcome::Error,
            };
            m.registry_request(host, outcome, took);
        }));
    }
    Ok(Scanner::new(
        Arc::new(registry),
        cfg.policy.clone(),
        ScanOptions {
            concurrency: cfg.scan.concurrency,
            cache_ttl: cfg.scan.cache_ttl,
            newer_versions: cfg.scan.newer_versions,
            containerd_store: info.uses_containerd_store(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, name: &str, outcome: &str) -> ContainerResult {
        ContainerResult {
            container: name.into(),
            id: id.into(),
            outcome: outcome.into(),
            error: Some(format!("{name}: boom")),
            from_image: None,
            to_image: None,
            steps: None,
            duration_ms: 0,
        }
    }

    #[test]
    fn a_run_with_a_failed_update_records_an_error() {
        let done = |results: Vec<ContainerResult>, error: Option<&str>| JobDone {
            id: "run-1".into(),
            duration: Duration::ZERO,
            discovery: None,
            checks: vec![],
            scan: None,
            results,
            error: error.map(str::to_string),
            recovered: false,
            reply: None,
        };
        assert_eq!(
            done(vec![result("c3", "fine", "updated")], None).record_error(),
            None
        );
        assert_eq!(
            done(
                vec![
                    result("c3", "fine", "updated"),
                    result("a1", "rolled", "rolledBack"),
                    result("b2", "failed", "failed"),
                ],
                None
            )
            .record_error()
            .as_deref(),
            Some("rolled rolled back: rolled: boom; failed failed: failed: boom")
        );
        assert_eq!(
            done(
                vec![result("a1", "rolled", "rolledBack")],
                Some("scan: engine down")
            )
            .record_error()
            .as_deref(),
            Some("scan: engine down")
        );
    }
}

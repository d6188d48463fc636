//! The update sequence of SPEC §6 for one container, against the engine: pull, park the old
//! container, create and start the new one, wait until it is proven, then drop the old one — or
//! roll back. The old container is never removed before the new one is proven.
//!
//! Order of the engine calls (each line is durable before the next starts, so a crash anywhere
//! leaves something `recovery` can read; see `names` for the parked name):
//!
//! 1. pull the tag; same image id as the container runs → `Unchanged`, nothing touched;
//! 2. inspect the old container and its image, build the create body (`recreate::plan`);
//! 3. rename the old container `<name>-wd-old-<short>-<policy>-<run|stop>` — first, because its
//!    name is the only place that can remember the restart policy and the running state once we
//!    change them; then set its restart policy to `no`, then stop it (its own `StopTimeout`);
//! 4. create the new one under the original name with the label `watchdocker.update-of=<old id>`,
//!    connect the other networks (below API 1.44), start it if the old one was running;
//! 5. wait until healthy, or running with an unchanged restart count for `settleTime`;
//! 6. remove the old one without its volumes, or keep it stopped as `<name>-wd-prev-<short>`.
//!
//! `AutoRemove` (`--rm`) containers vanish when stopped, and take their anonymous volumes with
//! them unless another container holds them. For them the new container is created (and
//! connected) after the rename and *before* the stop, so it already holds those volumes; the old
//! one is stopped just before the new one starts. Their rollback re-creates the old container from
//! the saved inspect data and the old image id.
//!
//! Any failure from step 3 on rolls back: remove the new container, rename the old one back,
//! restore its restart policy, start it if it was running. `update.rollback: false` does not
//! change that: leaving the service down is never the better choice, so the setting is not read.
//!
//! The rename comes before the stop, so for the few seconds of a graceful stop the old container
//! answers to its parked name only (its DNS name on user networks goes with the rename); it is
//! shutting down anyway, and without it a crash there would lose its restart policy.
//!
//! Also: `cancel` is read once, after the pull and before anything is changed. A rollback
//! request uses the `watchdocker.previous-image` image by id (no pull; `Config.Image` becomes that
//! id, since its tag has moved on). With `update.cleanupImages`, the candidates are the old image
//! and the old container's own previous image; each goes only if no container uses it or names
//! it as `previous-image` — so the previous image stays for a rollback, and the one before it
//! goes. Dangling images this update did not replace are not touched.
//!
//! Knows the engine calls and their order; the create body is `recreate`'s, names are `names`'.

use super::names::{self, RestartPolicy, START_AFTER_UPDATE, UPDATE_OF};
use super::pull::{self, PullError};
use super::recreate::{self, RecreateError, RecreateInput, RecreatePlan};
use crate::config::UpdateConfig;
use crate::docker::{path_segment, query, Engine, EngineError};
use crate::labels;
use crate::registry::{CredentialStore, Reference};
use serde_json::{json, Value};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the new container is inspected while waiting for it.
const POLL: Duration = Duration::from_millis(250);
/// A stop request may take the container's stop timeout; the HTTP request gets this much more.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a removal the engine already started may take before we try again.
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

/// What to do to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    /// Full id (a name works too).
    pub container: String,
    /// Move to this reference; None = the reference it runs now (`Config.Image`).
    pub image: Option<String>,
    /// Go back to the image named by its `watchdocker.previous-image` label (no pull).
    pub rollback: bool,
    /// Report the steps, change nothing (not even pull).
    pub dry_run: bool,
}

/// How an update ended. Image ids are the engine's (`sha256:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new container runs and is proven; the old one is gone (or kept as `-wd-prev-`).
    Updated {
        from_image: String,
        to_image: String,
        new_id: String,
    },
    /// The pulled image is the one it already runs; nothing was touched.
    Unchanged { reason: String },
    /// It failed after the old container was touched, and the old container is back under its
    /// name, with its restart policy, running if it was.
    RolledBack { error: String },
    /// It failed. `rolled_back: false`: before anything was changed. `rolled_back: true`: a
    /// rollback was needed and did not complete (the error says what is left); `recover()`
    /// finishes it at the next start.
    Failed { error: String, rolled_back: bool },
    /// Dry run: what would be done, in order.
    Planned { steps: Vec<String> },
}

/// Points of the sequence where a test can make `update` stop dead, as if the process had been
/// killed there (no rollback, no cleanup), to exercise `recover`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Renamed,
    PolicyCleared,
    Stopped,
    Created,
    Connected,
    Started,
}

/// Why an update (or a step of recovery) failed. Displays as `update <name>: <what>: <why>`.
#[derive(Debug)]
pub enum UpdateError {
    /// An engine call failed; the error's operation names the step (`stop`, `create`...).
    Engine {
        container: String,
        source: EngineError,
    },
    Pull {
        container: String,
        source: PullError,
    },
    Plan(RecreateError),
    /// The request cannot be carried out (no reference to pull, no previous image...).
    Refused {
        container: String,
        reason: String,
    },
    /// The new container did not prove itself.
    NotReady {
        container: String,
        reason: String,
    },
    /// Stopped at a test crash point.
    Crashed {
        container: String,
        step: Step,
    },
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Engine { container, source } => write!(f, "update {container}: {source}"),
            UpdateError::Pull { container, source } => write!(f, "update {container}: {source}"),
            UpdateError::Plan(e) => write!(f, "update: {e}"),
            UpdateError::Refused { container, reason } => write!(f, "update {container}: {reason}"),
            UpdateError::NotReady { container, reason } => {
                write!(f, "update {container}: the new container {reason}")
            }
            UpdateError::Crashed { container, step } => {
                write!(
                    f,
                    "update {container}: stopped dead after {step:?} (test crash point)"
                )
            }
        }
    }
}

impl std::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpdateError::Engine { source, .. } => Some(source),
            UpdateError::Pull { source, .. } => Some(source),
            UpdateError::Plan(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs updates against one engine. Send + Sync: share it behind an `Arc`; it holds no lock, so
/// the caller must not run two updates of the same container at once.
pub struct Updater {
    pub(super) engine: Engine,
    credentials: Arc<CredentialStore>,
    pub(super) cfg: UpdateConfig,
    crash_after: Option<Step>,
}

/// Where the new container's image comes from.
struct Target {
    /// `Config.Image` of the new container: the reference, or an image id.
    config_image: String,
    /// Its image id.
    image_id: String,
}

/// What has been done so far, for the rollback.
#[derive(Default)]
struct Progress {
    renamed: bool,
    policy_cleared: bool,
    stopped: bool,
    new_id: Option<String>,
}

/// The old container as inspected before anything was changed.
pub(super) struct Old {
    pub id: String,
    pub name: String,
    pub inspect: Value,
    pub image_id: String,
    pub running: bool,
    pub policy: RestartPolicy,
    pub auto_remove: bool,
}

impl Old {
    pub(super) fn from_inspect(inspect: Value) -> Result<Old, UpdateError> {
        let id = inspect["Id"].as_str().unwrap_or_default().to_string();
        let name = inspect["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        if id.is_empty() || name.is_empty() {
            return Err(UpdateError::Refused {
                container: if name.is_empty() { id } else { name },
                reason: "inspect data has no Id or Name".into(),
            });
        }
        Ok(Old {
            image_id: inspect["Image"].as_str().unwrap_or_default().to_string(),
            running: inspect.pointer("/State/Running").and_then(Value::as_bool) == Some(true),
            policy: RestartPolicy::of(&inspect),
            auto_remove: inspect
                .pointer("/HostConfig/AutoRemove")
                .and_then(Value::as_bool)
                == Some(true),
            id,
            name,
            inspect,
        })
    }
}

impl Updater {
    pub fn new(engine: Engine, credentials: Arc<CredentialStore>, cfg: UpdateConfig) -> Updater {
        Updater {
            engine,
            credentials,
            cfg,
            crash_after: None,
        }
    }

    /// Test hook: `update` returns at `step` as if the process died there.
    #[doc(hidden)]
    pub fn with_crash_after(mut self, step: Step) -> Updater {
        self.crash_after = Some(step);
        self
    }

    /// The whole safe sequence for one container. `cancel` is read once, before anything is
    /// changed: set, the update is abandoned; past that point it is finished or rolled back.
    pub fn update(&self, req: &UpdateRequest, cancel: &AtomicBool) -> Outcome {
        let failed = |e: UpdateError| Outcome::Failed {
            error: e.to_string(),
            rolled_back: false,
        };
        let old = match self.inspect_old(&req.container) {
            Ok(old) => old,
            Err(e) => return failed(e),
        };
        let target = if req.rollback {
            match self.previous_image(&old) {
                Ok(t) => t,
                Err(e) => return failed(e),
            }
        } else {
            let reference = match self.reference_to_pull(&old, req.image.as_deref()) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            if req.dry_run {
                let written = req
                    .image
                    .clone()
                    .or_else(|| old.inspect["Config"]["Image"].as_str().map(str::to_string))
                    .unwrap_or_default();
                return self.dry_run(&old, &format!("pull {reference}"), &written);
            }
            match self.pull(&old.name, &reference) {
                Ok(image_id) => {
                    let same_reference = req.image.as_deref().is_none_or(|wanted| {
                        Reference::parse(wanted).ok()
                            == Reference::parse(
                                old.inspect["Config"]["Image"].as_str().unwrap_or(""),
                            )
                            .ok()
                    });
                    if image_id == old.image_id && same_reference {
                        log::info!(component = "updater", container = old.name.as_str(),
                            image = reference.to_string().as_str(), action = "pull";
                            "already runs the pulled image {image_id}");
                        return Outcome::Unchanged {
                            reason: format!("{reference} is {image_id}, which it already runs"),
                        };
                    }
                    // As the user wrote it (`nginx:1.27`, not `docker.io/library/nginx:1.27`).
                    let written = req
                        .image
                        .as_deref()
                        .or(old.inspect["Config"]["Image"].as_str())
                        .unwrap_or_default();
                    Target {
                        config_image: written.to_string(),
                        image_id,
                    }
                }
                Err(e) => return failed(e),
            }
        };
        if req.dry_run {
            return self.dry_run(
                &old,
                &format!("use image {} (no pull)", target.image_id),
                &target.config_image,
            );
        }
        if cancel.load(Ordering::SeqCst) {
            return Outcome::Failed {
                error: format!("update {}: abandoned: shutting down", old.name),
                rolled_back: false,
            };
        }
        // Fresh data: the pull may have taken minutes.
        let old = match self.inspect_old(&old.id) {
            Ok(old) => old,
            Err(e) => return failed(e),
        };
        self.replace(&old, &target, None)
    }

    /// Reconnects the containers that share the network namespace of `provider`
    /// (`network_mode: container:...`) after it was replaced or restarted: their namespace died
    /// with the provider's old process.
    /// - A consumer naming the container `provider` replaced (its `watchdocker.update-of` id) is
    ///   recreated from the image it runs, through the same safe sequence (no pull): a restart
    ///   cannot rejoin a container that is gone.
    /// - A running consumer naming `provider` itself that started before it (a rolled-back
    ///   provider was stopped and started again) is restarted: `Unchanged` with that reason.
    ///
    /// Returns (consumer name, outcome); failures are `Failed { rolled_back: false }` unless
    /// the recreation itself says otherwise.
    pub fn restart_consumers(&self, provider: &str) -> Vec<(String, Outcome)> {
        let fail = |subject: &str, action: &str, e: EngineError| {
            let error = UpdateError::Engine {
                container: subject.to_string(),
                source: e.context(action.to_string()),
            };
            (
                subject.to_string(),
                Outcome::Failed {
                    error: error.to_string(),
                    rolled_back: false,
                },
            )
        };
        let provider_inspect = match self.engine.inspect_container_raw(provider) {
            Ok(v) => v,
            Err(e) => return vec![fail(provider, "inspect", e)],
        };
        let provider_id = provider_inspect["Id"].as_str().unwrap_or_default();
        let provider_name = provider_inspect["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let provider_started = started_at(&provider_inspect);
        let old_id = provider_inspect["Config"]["Labels"][UPDATE_OF]
            .as_str()
            .map(str::to_string);
        let all: Vec<Value> = match self.engine.get_json("/containers/json?all=1") {
            Ok(all) => all,
            Err(e) => return vec![fail(&provider_name, "list containers", e)],
        };
        let mut out = Vec::new();
        for c in all {
            let mode = c["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
            let Some(target) = mode.strip_prefix("container:").filter(|t| !t.is_empty()) else {
                continue;
            };
            let id = c["Id"].as_str().unwrap_or_default().to_string();
            let name = names::original_name(c["Names"][0].as_str().unwrap_or(&id));
            if !provider_id.is_empty() && provider_id.starts_with(target) {
                let consumer = match self.engine.inspect_container_raw(&id) {
                    Ok(v) => v,
                    Err(e) => {
                        out.push(fail(&name, "inspect consumer", e));
                        continue;
                    }
                };
                let running = consumer["State"]["Running"].as_bool() == Some(true);
                let stale = match (started_at(&consumer), provider_started) {
                    (Some(c), Some(p)) => c < p,
                    _ => false,
                };
                if !running || !stale {
                    continue;
                }
                let t = recreate::stop_timeout(&consumer, self.cfg.stop_timeout);
                let path = format!(
                    "/containers/{}/restart{}",
                    path_segment(&id),
                    query(&[("t", &t.as_secs().to_string())])
                );
                match self
                    .engine
                    .request("POST", &path, None, &[], Some(t + STOP_GRACE))
                {
                    Ok(_) => out.push((
                        name,
                        Outcome::Unchanged {
                            reason: format!(
                                "restarted to rejoin the network namespace of {provider_name}"
                            ),
                        },
                    )),
                    Err(e) => out.push(fail(&name, "restart consumer", e)),
                }
                continue;
            }
            let Some(old_id) = old_id.as_deref().filter(|o| o.starts_with(target)) else {
                continue;
            };
            let outcome = match self.inspect_old(&id) {
                Ok(consumer) => {
                    let image = self.same_image(&consumer);
                    self.replace(&consumer, &image, Some((old_id, &provider_name)))
                }
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                    rolled_back: false,
                },
            };
            out.push((name, outcome));
        }
        out
    }

    /// Keeps a consumer on its image: by its reference when that still names the same image,
    /// else by id (a moved tag must not update it behind the user's back).
    fn same_image(&self, old: &Old) -> Target {
        let reference = old.inspect["Config"]["Image"].as_str().unwrap_or("");
        let by_reference = self
            .image_id(reference)
            .ok()
            .filter(|id| *id == old.image_id);
        Target {
            config_image: if by_reference.is_some() {
                reference.to_string()
            } else {
                old.image_id.clone()
            },
            image_id: old.image_id.clone(),
        }
    }

    fn inspect_old(&self, container: &str) -> Result<Old, UpdateError> {
        let inspect =
            self.engine
                .inspect_container_raw(container)
                .map_err(|e| UpdateError::Engine {
                    container: container.to_string(),
                    source: e.context("inspect"),
                })?;
        let old = Old::from_inspect(inspect)?;
        if names::parse_parked(&old.name).is_some() {
            return Err(UpdateError::Refused {
                container: old.name,
                reason: "an earlier update of it is unfinished (recovery finishes it at start)"
                    .into(),
            });
        }
        Ok(old)
    }

    fn reference_to_pull(&self, old: &Old, image: Option<&str>) -> Result<Reference, UpdateError> {
        let wanted = image.unwrap_or_else(|| old.inspect["Config"]["Image"].as_str().unwrap_or(""));
        Reference::parse(wanted).map_err(|e| UpdateError::Refused {
            container: old.name.clone(),
            reason: match image {
                Some(_) => format!("image: {e}"),
                None => format!(
                    "it was created from {wanted:?}, not a reference that can be pulled \
                     (pass an image to move it to): {e}"
                ),
            },
        })
    }

    fn previous_image(&self, old: &Old) -> Result<Target, UpdateError> {
        let refused = |reason: String| UpdateError::Refused {
            container: old.name.clone(),
            reason,
        };
        let previous = old.inspect["Config"]["Labels"][labels::PREVIOUS_IMAGE]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                refused(format!(
                    "rollback: it has no {} label",
                    labels::PREVIOUS_IMAGE
                ))
            })?;
        let image_id = self.image_id(previous).map_err(|e| {
            if e.is_not_found() {
                refused(format!(
                    "rollback: its previous image {previous} is no longer on this host"
                ))
            } else {
                UpdateError::Engine {
                    container: old.name.clone(),
                    source: e.context("inspect previous image"),
                }
            }
        })?;
        Ok(Target {
            config_image: image_id.clone(),
            image_id,
        })
    }

    fn image_id(&self, reference: &str) -> Result<String, EngineError> {
        let image: Value = self
            .engine
            .get_json(&format!("/images/{}/json", path_segment(reference)))?;
        Ok(image["Id"].as_str().unwrap_or_default().to_string())
    }

    /// Pulls by tag; the id of the image the reference names afterwards.
    fn pull(&self, name: &str, reference: &Reference) -> Result<String, UpdateError> {
        let credential =
            self.credentials
                .lookup(&reference.registry)
                .map_err(|e| UpdateError::Refused {
                    container: name.to_string(),
                    reason: format!("pull {reference}: credentials: {e}"),
                })?;
        let auth = credential.map(|c| pull::registry_auth_header(&reference.registry, &c));
        let started = Instant::now();
        let summary = pull::pull(&self.engine, reference, auth.as_deref()).map_err(|source| {
            UpdateError::Pull {
                container: name.to_string(),
                source,
            }
        })?;
        log::info!(component = "updater", container = name, image = reference.to_string().as_str(),
            action = "pull", durationMs = duration_ms(started);
            "pulled: {} ({} layers downloaded, {} present)",
            summary.last_status, summary.layers_pulled, summary.layers_present);
        self.image_id(&reference.to_string())
            .map_err(|e| UpdateError::Engine {
                container: name.to_string(),
                source: e.context(format!("inspect pulled image {reference}")),
            })
    }

    fn old_image(&self, old: &Old) -> Value {
        // A missing old image (removed with force) only means nothing can be subtracted.
        self.engine
            .get_json(&format!("/images/{}/json", path_segment(&old.image_id)))
            .unwrap_or_else(|_| json!({}))
    }

    /// The create request; `alias` maps an old provider id to the name its replacement has.
    fn plan(
        &self,
        old: &Old,
        old_image: &Value,
        config_image: &str,
        alias: Option<(&str, &str)>,
    ) -> Result<RecreatePlan, UpdateError> {
        let api = self.engine.negotiate().map_err(|e| UpdateError::Engine {
            container: old.name.clone(),
            source: e,
        })?;
        let now = jiff::Timestamp::now().to_string();
        let name_of = |id: &str| -> Option<String> {
            if let Some((old_id, name)) = alias {
                if old_id.starts_with(id) {
                    return Some(name.to_string());
                }
            }
            let v = self.engine.inspect_container_raw(id).ok()?;
            Some(names::original_name(v["Name"].as_str()?))
        };
        recreate::plan(&RecreateInput {
            container: &old.inspect,
            old_image,
            new_image_ref: config_image,
            api_version: api,
            updated_at: &now,
            name_of: &name_of,
        })
        .map_err(UpdateError::Plan)
    }

    fn dry_run(&self, old: &Old, first: &str, config_image: &str) -> Outcome {
        let old_image = self.old_image(old);
        let plan = match self.plan(old, &old_image, config_image, None) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    error: e.to_string(),
                    rolled_back: false,
                }
            }
        };
        let name = &old.name;
        let parked = names::parked_name(name, &old.id, &old.policy, old.running);
        let t = recreate::stop_timeout(&old.inspect, self.cfg.stop_timeout).as_secs();
        let mut steps = vec![first.to_string(), format!("rename {name} to {parked}")];
        let stop = format!("stop {parked} with t={t}s");
        let create = format!("create {name} from {config_image}");
        let connects: Vec<String> = plan
            .connect_after_create
            .iter()
            .map(|(n, _)| format!("connect {name} to network {n}"))
            .collect();
        if old.auto_remove {
            steps.push(create);
            steps.extend(connects);
            if old.running {
                steps.push(stop + " (--rm: the engine removes it)");
            }
        } else {
            if old.policy.name != "no" {
                steps.push(format!("set the restart policy of {parked} to no"));
            }
            if old.running {
                steps.push(stop);
            }
            steps.push(create);
            steps.extend(connects);
        }
        if old.running {
            steps.push(format!("start {name}"));
            steps.push(
                match recreate::health_wait(&plan.body, self.cfg.health_timeout)
                    .or_else(|| recreate::health_wait(&old_image, self.cfg.health_timeout))
                {
                    Some(d) => format!("wait until {name} is healthy, up to {}s", d.as_secs()),
                    None => format!(
                        "wait until {name} has run {}s with an unchanged restart count",
                        self.cfg.settle_time.as_secs_f64()
                    ),
                },
            );
        }
        if !old.auto_remove {
            steps.push(if self.cfg.remove_old_container {
                format!("remove {parked} (keeping its volumes)")
            } else {
                format!(
                    "rename {parked} to {} and keep it stopped",
                    names::prev_name(name, &old.id)
                )
            });
        }
        if self.cfg.cleanup_images {
            steps.push("remove the replaced images no container uses or names".into());
        }
        Outcome::Planned { steps }
    }

    /// Steps 2–6 for a container whose new image is local.
    fn replace(&self, old: &Old, target: &Target, alias: Option<(&str, &str)>) -> Outcome {
        let old_image = self.old_image(old);
        let plan = match self.plan(old, &old_image, &target.config_image, alias) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    error: e.to_string(),
                    rolled_back: false,
                }
            }
        };
        let mut progress = Progress::default();
        let started = Instant::now();
        match self.run_sequence(old, &plan, &mut progress) {
            Ok(new_id) => {
                log::info!(component = "updater", container = old.name.as_str(),
                    image = target.config_image.as_str(), action = "update",
                    durationMs = duration_ms(started);
                    "updated from {} to {}", old.image_id, target.image_id);
                self.finish_old(old);
                if self.cfg.cleanup_images {
                    self.cleanup_images(old);
                }
                Outcome::Updated {
                    from_image: old.image_id.clone(),
                    to_image: target.image_id.clone(),
                    new_id,
                }
            }
            Err(UpdateError::Crashed { container, step }) => Outcome::Failed {
                error: UpdateError::Crashed { container, step }.to_string(),
                rolled_back: false,
            },
            Err(e) if !progress.renamed => Outcome::Failed {
                error: e.to_string(),
                rolled_back: false,
            },
            Err(e) => {
                log::warn!(component = "updater", container = old.name.as_str(),
                    action = "rollback"; "{e}; rolling back");
                match self.roll_back(old, &old_image, &progress) {
                    Ok(()) => {
                        log::info!(component = "updater", container = old.name.as_str(),
                            action = "rollback"; "rolled back");
                        Outcome::RolledBack {
                            error: e.to_string(),
                        }
                    }
                    Err(r) => {
                        log::error!(component = "updater", container = old.name.as_str(),
                            action = "rollback"; "rollback failed: {r}");
                        Outcome::Failed {
                            error: format!("{e}; rollback failed: {r}"),
                            rolled_back: true,
                        }
                    }
                }
            }
        }
    }

    fn crash(&self, old: &Old, step: Step) -> Result<(), UpdateError> {
        if self.crash_after == Some(step) {
            return Err(UpdateError::Crashed {
                container: old.name.clone(),
                step,
            });
        }
        Ok(())
    }

    fn engine_err(&self, old: &Old, action: &str) -> impl Fn(EngineError) -> UpdateError {
        let container = old.name.clone();
        let action = action.to_string();
        move |e| UpdateError::Engine {
            container: container.clone(),
            source: e.context(action.clone()),
        }
    }

    /// Steps 3–5. Returns the new container's id.
    fn run_sequence(
        &self,
        old: &Old,
        plan: &RecreatePlan,
        progress: &mut Progress,
    ) -> Result<String, UpdateError> {
        let parked = names::parked_name(&old.name, &old.id, &old.policy, old.running);
        let stopped_at;
        self.rename(&old.id, &parked)
            .map_err(self.engine_err(old, "rename old container"))?;
        progress.renamed = true;
        self.crash(old, Step::Renamed)?;

        if old.auto_remove {
            let new_id = self.create(old, plan, progress)?;
            if old.running {
                stopped_at = Instant::now();
                self.stop(old).map_err(self.engine_err(old, "stop"))?;
                progress.stopped = true;
                self.crash(old, Step::Stopped)?;
            } else {
                stopped_at = Instant::now();
            }
            self.start_and_wait(old, &new_id, stopped_at)?;
            return Ok(new_id);
        }

        if old.policy.name != "no" {
            self.set_policy(&old.id, &RestartPolicy::no())
                .map_err(self.engine_err(old, "set restart policy to no"))?;
            progress.policy_cleared = true;
        }
        self.crash(old, Step::PolicyCleared)?;
        stopped_at = Instant::now();
        if old.running {
            self.stop(old).map_err(self.engine_err(old, "stop"))?;
            progress.stopped = true;
        }
        self.crash(old, Step::Stopped)?;
        let new_id = self.create(old, plan, progress)?;
        self.start_and_wait(old, &new_id, stopped_at)?;
        Ok(new_id)
    }

    /// Create under the original name with the recovery marker, then connect (below 1.44).
    fn create(
        &self,
        old: &Old,
        plan: &RecreatePlan,
        progress: &mut Progress,
    ) -> Result<String, UpdateError> {
        let mut body = plan.body.clone();
        if let Some(labels) = body.get_mut("Labels").and_then(Value::as_object_mut) {
            // Markers of an earlier update must not describe this one.
            labels.remove(START_AFTER_UPDATE);
            labels.insert(UPDATE_OF.into(), json!(old.id));
            if old.running {
                labels.insert(START_AFTER_UPDATE.into(), json!("true"));
            }
        }
        let new_id = self
            .create_container(&plan.name, &body)
            .map_err(self.engine_err(old, "create"))?;
        progress.new_id = Some(new_id.clone());
        self.crash(old, Step::Created)?;
        // `connect_all` names the network in its error.
        self.connect_all(&new_id, plan)
            .map_err(|source| UpdateError::Engine {
                container: old.name.clone(),
                source,
            })?;
        self.crash(old, Step::Connected)?;
        Ok(new_id)
    }

    fn start_and_wait(
        &self,
        old: &Old,
        new_id: &str,
        stopped_at: Instant,
    ) -> Result<(), UpdateError> {
        if !old.running {
            return Ok(());
        }
        self.start(new_id).map_err(self.engine_err(old, "start"))?;
        log::info!(component = "updater", container = old.name.as_str(), action = "start",
            durationMs = duration_ms(stopped_at); "new container started");
        self.crash(old, Step::Started)?;
        self.wait_ready(&old.name, new_id)
    }

    /// Step 5: healthy (with a healthcheck) or running with a steady restart count.
    pub(super) fn wait_ready(&self, name: &str, new_id: &str) -> Result<(), UpdateError> {
        let not_ready = |reason: String| UpdateError::NotReady {
            container: name.to_string(),
            reason,
        };
        let inspect = |what: &str| {
            self.engine
                .inspect_container_raw(new_id)
                .map_err(|e| UpdateError::Engine {
                    container: name.to_string(),
                    source: e.context(format!("inspect new container ({what})")),
                })
        };
        let first = inspect("wait")?;
        let restarts = first["RestartCount"].as_u64().unwrap_or(0);
        let health = recreate::health_wait(&first, self.cfg.health_timeout);
        let limit = health.unwrap_or(self.cfg.settle_time);
        let deadline = Instant::now() + limit;
        let mut current = first;
        loop {
            let state = &current["State"];
            let running = state["Running"].as_bool() == Some(true);
            let restarting = state["Restarting"].as_bool() == Some(true);
            if !running || restarting {
                return Err(not_ready(format!(
                    "is not running ({}, exit code {})",
                    state["Status"].as_str().unwrap_or("?"),
                    state["ExitCode"].as_i64().unwrap_or(-1)
                )));
            }
            if current["RestartCount"].as_u64().unwrap_or(0) != restarts {
                return Err(not_ready("restarted while being watched".into()));
            }
            if health.is_some() {
                match state.pointer("/Health/Status").and_then(Value::as_str) {
                    Some("healthy") => return Ok(()),
                    Some("unhealthy") => {
                        let log = state
                            .pointer("/Health/Log")
                            .and_then(Value::as_array)
                            .and_then(|l| l.last())
                            .and_then(|l| l["Output"].as_str())
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        return Err(not_ready(format!("is unhealthy: {log:.200}")));
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return match health {
                    Some(d) => Err(not_ready(format!(
                        "was not healthy within {}s",
                        d.as_secs()
                    ))),
                    None => Ok(()),
                };
            }
            std::thread::sleep(POLL.min(deadline - now));
            current = inspect("wait")?;
        }
    }

    /// Step 6: the old container goes, or stays stopped as `-wd-prev-`.
    pub(super) fn finish_old(&self, old: &Old) {
        if old.auto_remove {
            // It removed itself when stopped; one created but never started is removed here.
            let _ = self.remove(&old.id, false);
            return;
        }
        let result = if self.cfg.remove_old_container {
            self.remove(&old.id, false)
                .map(|_| "removed the old container".to_string())
        } else {
            let prev = names::prev_name(&old.name, &old.id);
            self.rename(&old.id, &prev)
                .map(|_| format!("kept the old container as {prev}"))
        };
        match result {
            Ok(done) => log::info!(component = "updater", container = old.name.as_str(),
                action = "cleanup"; "{done}"),
            Err(e) => log::warn!(component = "updater", container = old.name.as_str(),
                action = "cleanup"; "the update succeeded but the old container stays: {e}"),
        }
    }

    /// Removes the images this update made useless: the old one and the one before it (the old
    /// container's own previous image), unless a container uses or names it.
    fn cleanup_images(&self, old: &Old) {
        let mut candidates = vec![old.image_id.clone()];
        if let Some(prev) = old.inspect["Config"]["Labels"][labels::PREVIOUS_IMAGE].as_str() {
            candidates.push(prev.to_string());
        }
        let all: Vec<Value> = match self.engine.get_json("/containers/json?all=1") {
            Ok(all) => all,
            Err(e) => {
                log::warn!(component = "updater", container = old.name.as_str(),
                    action = "cleanup"; "image cleanup skipped: {e}");
                return;
            }
        };
        for image in candidates.iter().filter(|c| !c.is_empty()) {
            let wanted = all.iter().any(|c| {
                c["ImageID"].as_str() == Some(image.as_str())
                    || c["Labels"][labels::PREVIOUS_IMAGE].as_str() == Some(image.as_str())
            });
            if wanted {
                continue;
            }
            match self.engine.request(
                "DELETE",
                &format!("/images/{}", path_segment(image)),
                None,
                &[],
                None,
            ) {
                Ok(_) => log::info!(component = "updater", container = old.name.as_str(),
                    action = "cleanup"; "removed image {image}"),
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!(component = "updater", container = old.name.as_str(),
                    action = "cleanup"; "image {image} kept: {e}"),
            }
        }
    }

    /// Puts the old container back: the new one removed, the old one renamed back, its restart
    /// policy restored, started if it was running; re-created from its inspect data if it is gone
    /// (`--rm`).
    fn roll_back(
        &self,
        old: &Old,
        old_image: &Value,
        progress: &Progress,
    ) -> Result<(), UpdateError> {
        if let Some(new_id) = &progress.new_id {
            self.remove_gone(new_id)
                .map_err(self.engine_err(old, "rollback: remove new container"))?;
        }
        match self.engine.inspect_container_raw(&old.id) {
            Ok(_) => self.restore(old, progress.renamed, progress.policy_cleared, old.running),
            Err(e) if e.is_not_found() => self.recreate_gone(old, old_image),
            Err(e) => Err(self.engine_err(old, "rollback: inspect old container")(e)),
        }
    }

    /// Rename back, restore the policy, start.
    pub(super) fn restore(
        &self,
        old: &Old,
        renamed: bool,
        policy_cleared: bool,
        start: bool,
    ) -> Result<(), UpdateError> {
        if renamed {
            self.rename(&old.id, &old.name)
                .map_err(self.engine_err(old, "rollback: rename back"))?;
        }
        if policy_cleared {
            self.set_policy(&old.id, &old.policy)
                .map_err(self.engine_err(old, "rollback: restore restart policy"))?;
        }
        if start {
            self.start(&old.id)
                .map_err(self.engine_err(old, "rollback: start old container"))?;
        }
        Ok(())
    }

    /// `--rm`: the old container removed itself; create it again from its inspect data and the
    /// old image id, with its own labels.
    fn recreate_gone(&self, old: &Old, old_image: &Value) -> Result<(), UpdateError> {
        let mut plan = self.plan(old, old_image, &old.image_id, None)?;
        if let Some(labels) = plan.body.get_mut("Labels").and_then(Value::as_object_mut) {
            for key in [labels::PREVIOUS_IMAGE, labels::UPDATED_AT] {
                match old.inspect["Config"]["Labels"][key].as_str() {
                    Some(v) => labels.insert(key.into(), json!(v)),
                    None => labels.remove(key),
                };
            }
        }
        let id = self
            .create_container(&plan.name, &plan.body)
            .map_err(self.engine_err(old, "rollback: re-create"))?;
        self.connect_all(&id, &plan)
            .map_err(|e| UpdateError::Engine {
                container: old.name.clone(),
                source: e.context("rollback: connect"),
            })?;
        if old.running {
            self.start(&id)
                .map_err(self.engine_err(old, "rollback: start re-created container"))?;
        }
        Ok(())
    }

    // Engine calls, one per step; errors name the step through `context` at the call site.

    pub(super) fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let path = format!(
            "/containers/{}/rename{}",
            path_segment(id),
            query(&[("name", name)])
        );
        self.engine
            .request("POST", &path, None, &[], None)
            .map(|_| ())
    }

    pub(super) fn set_policy(&self, id: &str, policy: &RestartPolicy) -> Result<(), EngineError> {
        let path = format!("/containers/{}/update", path_segment(id));
        self.engine
            .request("POST", &path, Some(&policy.update_body()), &[], None)
            .map(|_| ())
    }

    fn stop(&self, old: &Old) -> Result<(), EngineError> {
        let t = recreate::stop_timeout(&old.inspect, self.cfg.stop_timeout);
        let path = format!(
            "/containers/{}/stop{}",
            path_segment(&old.id),
            query(&[("t", &t.as_secs().to_string())])
        );
        match self
            .engine
            .request("POST", &path, None, &[], Some(t + STOP_GRACE))
        {
            Ok(_) => Ok(()),
            // `--rm`: it may be gone by the time the answer is written.
            Err(e) if e.is_not_found() && old.auto_remove => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn start(&self, id: &str) -> Result<(), EngineError> {
        let path = format!("/containers/{}/start", path_segment(id));
        self.engine
            .request("POST", &path, None, &[], None)
            .map(|_| ())
    }

    pub(super) fn remove(&self, id: &str, force: bool) -> Result<(), EngineError> {
        let q = if force { "?force=1" } else { "" };
        let path = format!("/containers/{}{q}", path_segment(id));
        self.engine
            .request("DELETE", &path, None, &[], None)
            .map(|_| ())
    }

    /// Force-removes a container and returns once it is gone. A `--rm` container that exited
    /// may already be being removed by the engine (409 "already in progress"): wait for that.
    pub(super) fn remove_gone(&self, id: &str) -> Result<(), EngineError> {
        match self.remove(id, true) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + REMOVAL_WAIT;
        loop {
            match self.engine.inspect_container_raw(id) {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) if Instant::now() >= deadline => {
                    return self.remove(id, true).or_else(|e| {
                        if e.is_not_found() {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                }
                Ok(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Waits (up to a deadline) until the engine has removed a container it is removing; false
    /// when it is still there.
    pub(super) fn wait_gone(&self, id: &str) -> bool {
        let deadline = Instant::now() + REMOVAL_WAIT;
        loop {
            match self.engine.inspect_container_raw(id) {
                Err(e) if e.is_not_found() => return true,
                _ if Instant::now() >= deadline => return false,
                _ => std::thread::sleep(POLL),
            }
        }
    }

    /// Whether a container exists and is not on its way out. One the engine is removing (a
    /// stopped `--rm` container) is waited for, and then does not exist.
    pub(super) fn exists(&self, id: &str) -> Result<bool, EngineError> {
        let deadline = Instant::now() + REMOVAL_WAIT;
        loop {
            match self.engine.inspect_container_raw(id) {
                Err(e) if e.is_not_found() => return Ok(false),
                Err(e) => return Err(e),
                Ok(v) if v.pointer("/State/Status").and_then(Value::as_str) != Some("removing") => {
                    return Ok(true)
                }
                Ok(_) if Instant::now() >= deadline => return Ok(true),
                Ok(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn create_container(&self, name: &str, body: &Value) -> Result<String, EngineError> {
        let path = format!("/containers/create{}", query(&[("name", name)]));
        let created: Option<Value> = self.engine.post_json(&path, Some(body))?;
        created
            .as_ref()
            .and_then(|c| c["Id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| EngineError::Protocol {
                op: format!("create {name}"),
                detail: "the engine's answer has no Id".into(),
            })
    }

    fn connect_all(&self, id: &str, plan: &RecreatePlan) -> Result<(), EngineError> {
        for (network, endpoint) in &plan.connect_after_create {
            let path = format!("/networks/{}/connect", path_segment(network));
            let body = json!({"Container": id, "EndpointConfig": endpoint});
            self.engine
                .request("POST", &path, Some(&body), &[], None)
                .map_err(|e| e.context(format!("connect to network {network}")))?;
        }
        Ok(())
    }
}

/// `State.StartedAt`, when the container has started at all.
fn started_at(inspect: &Value) -> Option<jiff::Timestamp> {
    inspect["State"]["StartedAt"]
        .as_str()
        .filter(|s| !s.starts_with("0001-"))
        .and_then(|s| s.parse().ok())
}

fn duration_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updater_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Updater>();
    }

    #[test]
    fn errors_name_the_container_and_step() {
        let e = UpdateError::Engine {
            container: "web".into(),
            source: EngineError::Api {
                op: "POST /containers/x/stop".into(),
                status: 500,
                message: "boom".into(),
            }
            .context("stop"),
        };
        assert_eq!(e.to_string(), "update web: stop: engine answered 500: boom");
        let e = UpdateError::NotReady {
            container: "web".into(),
            reason: "is unhealthy: x".into(),
        };
        assert_eq!(
            e.to_string(),
            "update web: the new container is unhealthy: x"
        );
    }

    #[test]
    fn old_from_inspect_reads_state_policy_and_rm() {
        let old = Old::from_inspect(json!({
            "Id": "abc", "Name": "/web", "Image": "sha256:1",
            "State": {"Running": true},
            "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}
        }))
        .expect("valid");
        assert_eq!(old.name, "web");
        assert!(old.running && old.auto_remove);
        assert_eq!(old.policy.name, "always");
        assert!(Old::from_inspect(json!({"Id": "abc"})).is_err());
    }
}

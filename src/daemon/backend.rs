//! The API's side of the daemon: answers reads from the snapshot, metrics and registry figures
//! from their shared owners, and turns mutations into `Command`s for the event loop, waiting only
//! for the loop's answer (immediate, or the job's end with `?wait=true`).

use super::{Command, LifecycleOp};
use crate::api::{resolve_container, ApiReply, ApiRequest, Backend, ErrorCode, Route};
use crate::docker::Engine;
use crate::metrics::Metrics;
use crate::registry::Reference;
use crate::scanner::Scanner;
use crate::state::{SharedState, Snapshot};
use crossbeam_channel::{bounded, Sender};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub(crate) struct DaemonBackend {
    pub state: Arc<SharedState>,
    /// A separate client with a short timeout, so a hung engine cannot hold an API thread long.
    pub probe: Engine,
    pub shutting_down: Arc<AtomicBool>,
    pub commands: Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub metrics_enabled: bool,
    pub scanner: Arc<OnceLock<Arc<Scanner>>>,
}

/// Body of `POST /api/containers/:id/update`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    image: Option<String>,
}

impl DaemonBackend {
    /// Sends a command and waits for the loop's answer.
    fn ask(&self, make: impl FnOnce(Sender<ApiReply>) -> Command) -> ApiReply {
        let (tx, rx) = bounded(1);
        if self.commands.send(make(tx)).is_err() {
            return ApiReply::error(ErrorCode::DockerError, "shutting down").with_status(503);
        }
        rx.recv().unwrap_or_else(|_| {
            ApiReply::error(ErrorCode::Internal, "the job ended without an answer")
        })
    }

    fn registries(&self) -> serde_json::Value {
        match self.scanner.get() {
            Some(s) => serde_json::to_value(s.registry().stats()).unwrap_or_default(),
            None => serde_json::json!([]),
        }
    }

    fn metrics_text(&self) -> String {
        if let Some(s) = self.scanner.get() {
            for st in s.registry().stats() {
                self.metrics
                    .set_ratelimit_remaining(&st.host, st.rate_limit_remaining);
            }
        }
        self.metrics.render()
    }
}

fn resolve(snap: &Snapshot, key: &str) -> Result<String, ApiReply> {
    resolve_container(&snap.containers, key)
        .map(|c| c.id.clone())
        .map_err(|e| e.reply())
}

impl Backend for DaemonBackend {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }

    fn engine_ready(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        self.probe.ping().map_err(|e| e.to_string())
    }

    fn version(&self) -> serde_json::Value {
        let snap = self.state.snapshot();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "engine": snap.engine,
        })
    }

    fn handle(&self, req: ApiRequest) -> Option<ApiReply> {
        let snap = self.state.snapshot();
        let wait = req.query.wait;
        let reply = match &req.route {
            Route::Metrics if self.metrics_enabled => ApiReply::raw(
                200,
                crate::metrics::CONTENT_TYPE,
                self.metrics_text().into_bytes(),
            ),
            Route::Metrics => ApiReply::error(
                ErrorCode::NotFound,
                "metrics are disabled (metrics.enabled: false)",
            ),
            Route::ListRegistries => ApiReply::ok(self.registries()),
            Route::ListJobs => ApiReply::ok(&snap.jobs),
            Route::GetJob(id) => match snap.jobs.iter().find(|j| &j.id == id) {
                Some(j) => ApiReply::ok(j),
                None => ApiReply::error(ErrorCode::NotFound, format!("no job {id:?}")),
            },
            Route::Scan => self.ask(|reply| Command::Scan {
                wait,
                fresh: req.query.force,
                reply,
            }),
            Route::RunUpdates => self.ask(|reply| Command::Update {
                ids: vec![],
                image: None,
                rollback: false,
                dry_run: req.query.dry_run,
                wait,
                reply,
            }),
            Route::UpdateContainer(key) | Route::RollbackContainer(key) => {
                let rollback = matches!(req.route, Route::RollbackContainer(_));
                let id = match resolve(&snap, key) {
                    Ok(id) => id,
                    Err(r) => return Some(r),
                };
                let image = if rollback {
                    None
                } else {
                    match req.json::<UpdateBody>() {
                        Err(r) => return Some(r),
                        Ok(None) | Ok(Some(UpdateBody { image: None })) => None,
                        Ok(Some(UpdateBody { image: Some(i) })) => {
                            let i = i.trim().to_string();
                            if i.is_empty() {
                                return Some(ApiReply::error(
                                    ErrorCode::ImageRequired,
                                    "image is empty: give a reference such as nginx:1.27.3",
                                ));
                            }
                            if let Err(e) = Reference::parse(&i) {
                                return Some(ApiReply::error(ErrorCode::BadRequest, e.to_string()));
                            }
                            Some(i)
                        }
                    }
                };
                self.ask(|reply| Command::Update {
                    ids: vec![id],
                    image,
                    rollback,
                    dry_run: req.query.dry_run,
                    wait,
                    reply,
                })
            }
            Route::StopContainer(key)
            | Route::StartContainer(key)
            | Route::RemoveContainer(key) => {
                // Not every container is in the snapshot (stopped ones without
                // docker.includeStopped): the engine resolves names and id prefixes too.
                let id = match resolve(&snap, key) {
                    Ok(id) => id,
                    Err(r) if r.status == 404 => key.clone(),
                    Err(r) => return Some(r),
                };
                let op = match req.route {
                    Route::StopContainer(_) => LifecycleOp::Stop,
                    Route::StartContainer(_) => LifecycleOp::Start,
                    _ => LifecycleOp::Remove {
                        force: req.query.force,
                    },
                };
                self.ask(|reply| Command::Lifecycle { id, op, reply })
            }
            _ => return None,
        };
        Some(reply)
    }
}

//! Crash recovery (SPEC §6 "Crash safety"): run once at start, before any update, it finishes or
//! reverts every update a dead process left behind, so that exactly one container with the
//! original name exists, in the state the old one was in, with its configuration.
//!
//! All it reads is on the engine (no state file; the scratch image's root may be read-only):
//! - a parked container `<name>-wd-old-<short>-<policy>-<run|stop>` (see `names`): its name gives
//!   the original name, the restart policy to restore and whether it was running;
//! - the container now holding `<name>`, if any, and its `watchdocker.update-of` label.
//!
//! For each parked container:
//! - nobody holds `<name>` (died between the rename and the create): revert — rename back,
//!   restore the policy, start it if it was running;
//! - the holder is its replacement (`update-of` = its id) and runs: wait as an update would
//!   (healthy, or steady for `settleTime`); proven → finish (remove the parked one, or keep it as
//!   `-wd-prev-`), else revert (remove the replacement first);
//! - the replacement exists but does not run (died before or at the start): revert;
//! - someone else holds `<name>` (the user made a new one): leave the parked one alone, say so.
//!
//! A `--rm` container is gone once stopped; its replacement was created before the stop and
//! carries `update-of` (and `start-after-update` when the old one ran). One that was never
//! started while the old one is gone (died between the stop and the start) is started: it is the
//! only copy left.

use super::executor::{Old, UpdateError, Updater};
use super::names::{self, RestartPolicy, START_AFTER_UPDATE, UPDATE_OF};
use serde_json::Value;

impl Updater {
    /// Finishes or reverts interrupted updates. Returns one human-readable line per action.
    pub fn recover(&self) -> Vec<String> {
        self.recover_where(&|_| true)
    }

    /// `recover`, limited to containers whose original name passes `keep` (tests share one
    /// engine and must not finish each other's updates).
    #[doc(hidden)]
    pub fn recover_where(&self, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        let all: Vec<Value> = match self.engine.get_json("/containers/json?all=1") {
            Ok(all) => all,
            Err(e) => return vec![format!("recovery: list containers: {e}")],
        };
        let mut report = Vec::new();
        for c in &all {
            let name = c["Names"][0].as_str().unwrap_or("");
            let Some(parked) = names::parse_parked(name).filter(|p| keep(&p.original)) else {
                continue;
            };
            let id = c["Id"].as_str().unwrap_or_default();
            if let Ok(inspect) = self.engine.inspect_container_raw(id) {
                // Being removed, or about to be; its replacement is dealt with below. One the
                // engine keeps (it died before removing it) is recovered like any other.
                if stopped_rm(&inspect) && self.wait_gone(id) {
                    continue;
                }
            }
            let line = match self.exists(id) {
                // A `--rm` container the engine was removing when we died: nothing to revert.
                Ok(false) => continue,
                Ok(true) => match self.recover_parked(id, &parked) {
                    Ok(line) => line,
                    Err(e) => format!("recovery of {}: {e}", parked.original),
                },
                Err(e) => format!("recovery of {}: {e}", parked.original),
            };
            log::warn!(component = "updater", container = parked.original.as_str(),
                action = "recover"; "{line}");
            report.push(line);
        }
        for c in &all {
            let Some(old_id) = c["Labels"][UPDATE_OF].as_str() else {
                continue;
            };
            let name = c["Names"][0].as_str().unwrap_or("").trim_start_matches('/');
            let listed = all.iter().any(|o| o["Id"].as_str() == Some(old_id));
            if names::parse_parked(name).is_some() || !keep(name) {
                continue;
            }
            // Listed does not mean alive: a `--rm` one may have been on its way out.
            if listed && !matches!(self.exists(old_id), Ok(false)) {
                continue;
            }
            let id = c["Id"].as_str().unwrap_or_default();
            let line = match self.recover_orphan(id, name) {
                Ok(Some(line)) => line,
                Ok(None) => continue,
                Err(e) => format!("recovery of {name}: {e}"),
            };
            log::warn!(component = "updater", container = name, action = "recover"; "{line}");
            report.push(line);
        }
        report
    }

    fn recover_parked(&self, id: &str, parked: &names::Parked) -> Result<String, UpdateError> {
        let engine_err = |what: &'static str| {
            let container = parked.original.clone();
            move |e: crate::docker::EngineError| UpdateError::Engine {
                container: container.clone(),
                source: e.context(what),
            }
        };
        let inspect = self
            .engine
            .inspect_container_raw(id)
            .map_err(engine_err("inspect parked container"))?;
        let mut old = Old::from_inspect(inspect)?;
        old.name = parked.original.clone();
        let current = RestartPolicy::of(&old.inspect);
        let restore_policy = parked.policy.clone().filter(|p| *p != current);
        if let Some(p) = &restore_policy {
            old.policy = p.clone();
        }
        let start = parked.was_running.unwrap_or(true);
        let revert = |why: &str| -> Result<String, UpdateError> {
            self.restore(&old, true, restore_policy.is_some(), start)?;
            Ok(format!(
                "reverted the interrupted update of {} ({why}): the old container is back{}",
                old.name,
                if start { " and running" } else { "" }
            ))
        };

        let holder = match self.engine.inspect_container_raw(&parked.original) {
            Ok(h) => Some(h),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(engine_err("inspect the container holding the name")(e)),
        };
        let holder_id = holder
            .as_ref()
            .and_then(|h| h["Id"].as_str())
            .unwrap_or_default()
            .to_string();
        match decide(&old.id, start, holder.as_ref()) {
            Action::Revert => revert("no replacement was created"),
            Action::LeaveAlone => Ok(format!(
                "left {} parked: another container ({}) now holds the name {}",
                parked_display(&old.id, parked),
                short(&holder_id),
                old.name
            )),
            Action::RemoveAndRevert => {
                self.remove_gone(&holder_id)
                    .map_err(engine_err("remove the unstarted replacement"))?;
                revert("the replacement was not running")
            }
            Action::Verify => match self.wait_ready(&old.name, &holder_id) {
                Ok(()) => {
                    old.auto_remove = false;
                    self.finish_old(&old);
                    Ok(format!(
                        "finished the interrupted update of {}: the new container is proven",
                        old.name
                    ))
                }
                Err(e) => {
                    self.remove_gone(&holder_id)
                        .map_err(engine_err("remove the unproven replacement"))?;
                    revert(&e.to_string())
                }
            },
        }
    }

    /// A replacement whose old container is gone (`--rm`): start it if it never ran.
    fn recover_orphan(&self, id: &str, name: &str) -> Result<Option<String>, UpdateError> {
        let inspect = self
            .engine
            .inspect_container_raw(id)
            .map_err(|e| UpdateError::Engine {
                container: name.to_string(),
                source: e.context("inspect"),
            })?;
        if !orphan_to_start(&inspect) {
            return Ok(None);
        }
        self.start(id).map_err(|e| UpdateError::Engine {
            container: name.to_string(),
            source: e.context("start"),
        })?;
        Ok(Some(format!(
            "started {name}: its update was interrupted after the old --rm container removed itself"
        )))
    }
}

/// What to do with a parked container, given the container now holding its original name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Nobody holds the name: give it back.
    Revert,
    /// Its replacement holds the name but does not run (or should not): remove it, give it back.
    RemoveAndRevert,
    /// Its replacement runs: wait as an update would, then finish or revert.
    Verify,
    /// Someone else holds the name: touch nothing.
    LeaveAlone,
}

/// `old_id`: the parked container; `was_running`: its state before the update; `holder`: the
/// inspect data of the container holding its original name.
fn decide(old_id: &str, was_running: bool, holder: Option<&Value>) -> Action {
    let Some(holder) = holder else {
        return Action::Revert;
    };
    if holder["Config"]["Labels"][UPDATE_OF].as_str() != Some(old_id) {
        return Action::LeaveAlone;
    }
    let running = holder.pointer("/State/Running").and_then(Value::as_bool) == Some(true);
    if running && was_running {
        Action::Verify
    } else {
        Action::RemoveAndRevert
    }
}

/// A replacement whose old `--rm` container is gone: start it when it never ran and was meant to.
/// A replacement of a stopped container stays stopped; one that ran once is the user's business.
fn orphan_to_start(inspect: &Value) -> bool {
    let never_started = inspect
        .pointer("/State/StartedAt")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("0001-"));
    never_started && inspect["Config"]["Labels"][START_AFTER_UPDATE].as_str() == Some("true")
}

/// A `--rm` container that ran and stopped: the engine removes it, now or in a moment.
fn stopped_rm(inspect: &Value) -> bool {
    let auto_remove = inspect
        .pointer("/HostConfig/AutoRemove")
        .and_then(Value::as_bool)
        == Some(true);
    let running = inspect.pointer("/State/Running").and_then(Value::as_bool) == Some(true);
    let started = inspect
        .pointer("/State/StartedAt")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.starts_with("0001-"));
    auto_remove && !running && started
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn parked_display(id: &str, parked: &names::Parked) -> String {
    format!(
        "{}-wd-old-{} ({})",
        parked.original,
        parked.short_id,
        short(id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holder(update_of: Option<&str>, running: bool) -> Value {
        let mut labels = json!({"app": "x"});
        if let Some(id) = update_of {
            labels[UPDATE_OF] = json!(id);
        }
        json!({"Id": "new", "Config": {"Labels": labels}, "State": {"Running": running}})
    }

    #[test]
    fn decisions_for_a_parked_container() {
        assert_eq!(decide("old", true, None), Action::Revert);
        assert_eq!(decide("old", false, None), Action::Revert);
        let ours_running = holder(Some("old"), true);
        assert_eq!(decide("old", true, Some(&ours_running)), Action::Verify);
        // The old one was stopped: its replacement must not run either.
        assert_eq!(
            decide("old", false, Some(&ours_running)),
            Action::RemoveAndRevert
        );
        let ours_created = holder(Some("old"), false);
        assert_eq!(
            decide("old", true, Some(&ours_created)),
            Action::RemoveAndRevert
        );
        for other in [holder(None, true), holder(Some("another"), true)] {
            assert_eq!(decide("old", true, Some(&other)), Action::LeaveAlone);
        }
        assert_eq!(decide("old", true, Some(&json!({}))), Action::LeaveAlone);
    }

    #[test]
    fn a_stopped_rm_container_is_on_its_way_out() {
        let c = |auto_remove: bool, running: bool, started: &str| {
            json!({"HostConfig": {"AutoRemove": auto_remove},
                   "State": {"Running": running, "StartedAt": started}})
        };
        assert!(stopped_rm(&c(true, false, "2026-11-29T06:00:00Z")));
        assert!(!stopped_rm(&c(true, true, "2026-11-29T06:00:00Z")));
        assert!(!stopped_rm(&c(true, false, "0001-01-01T00:00:00Z")));
        assert!(!stopped_rm(&c(false, false, "2026-11-29T06:00:00Z")));
    }

    #[test]
    fn orphans_start_only_when_never_started_and_meant_to_run() {
        let c = |started: &str, start_label: Option<&str>| {
            let mut labels = json!({});
            if let Some(v) = start_label {
                labels[START_AFTER_UPDATE] = json!(v);
            }
            json!({"State": {"StartedAt": started}, "Config": {"Labels": labels}})
        };
        assert!(orphan_to_start(&c("0001-01-01T00:00:00Z", Some("true"))));
        assert!(!orphan_to_start(&c("0001-01-01T00:00:00Z", None)));
        assert!(!orphan_to_start(&c("2026-11-29T06:00:00Z", Some("true"))));
        assert!(!orphan_to_start(&json!({})));
    }
}

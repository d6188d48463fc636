//! Replacing a container with one created from a newer image, safely (SPEC §6).
//!
//! `recreate` is the pure part: old inspect data + old image → the create request for the new
//! container. It does no I/O and never reads the clock. `names` is the other pure part: the
//! names and labels an update leaves behind for crash recovery. `order` sorts a batch. `pull`
//! pulls through the engine; `executor` runs the sequence and its rollback; `recovery` finishes
//! or reverts updates a crash interrupted.
//!
//! What callers own: which containers to update (policy, compose, our own container), the batch
//! order (`order`, fed with `HostConfig.NetworkMode` and `HostConfig.Links` from inspect), the
//! concurrency limit, one update per container at a time, calling `Updater::recover` once at
//! start before any update, and `Updater::restart_consumers` after a provider was updated.

pub mod executor;
pub mod names;
pub mod order;
pub mod pull;
mod recovery;
pub mod recreate;

pub use executor::{Outcome, Step, UpdateError, UpdateRequest, Updater};
pub use order::{order, waves, OrderItem};
pub use recreate::{health_wait, plan, stop_timeout, RecreateError, RecreateInput, RecreatePlan};

//! Replacing a container with one created from a newer image, safely (SPEC §6).
//!
//! `recreate` is the pure part: old inspect data + old image → the create request for the new
//! container. It does no I/O and never reads the clock; the engine calls live in `docker/`.
//! `names` is the other pure part: the names and labels an update leaves behind for crash
//! recovery. `order` sorts a batch. `pull` pulls through the engine; `executor` runs the
//! sequence and its rollback; `recovery` finishes or reverts updates a crash interrupted.

pub mod executor;
pub mod names;
pub mod order;
pub mod pull;
mod recovery;
pub mod recreate;

pub use executor::{Outcome, Step, UpdateError, UpdateRequest, Updater};
pub use order::{order, waves, OrderItem};
pub use recreate::{health_wait, plan, stop_timeout, RecreateError, RecreateInput, RecreatePlan};

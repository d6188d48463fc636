//! Replacing a container with one created from a newer image, safely (SPEC §6).
//!
//! `recreate` is the pure part: old inspect data + old image → the create request for the new
//! container. It does no I/O and never reads the clock; the engine calls live in `docker/`.

pub mod recreate;

pub use recreate::{health_wait, plan, stop_timeout, RecreateError, RecreateInput, RecreatePlan};

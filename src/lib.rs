//! watch-docker: keeps the containers of a Docker host up to date. See ARCHITECTURE.md for the map.

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod docker;
pub mod jobs;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod policy;
pub mod registry;
pub mod scanner;
pub mod scheduler;
pub mod state;
pub mod tags;
pub mod updater;

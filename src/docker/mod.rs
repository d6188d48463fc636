//! Docker Engine API client: the only module that talks to the engine.
//!
//! `transport` opens the socket (unix or TCP) under ureq's HTTP/1.1; `client` negotiates the API
//! version and turns requests and answers into typed results and [`EngineError`]s; `model` holds
//! the JSON shapes we read. Nothing here decides anything about updates or registries.

mod client;
pub mod model;
mod transport;

pub use client::{
    parse_api_version, path_segment, query, Engine, EngineError, EngineResponse, JsonStream,
    API_MAX, API_MIN,
};
pub use model::{ContainerInspect, ContainerSummary, ImageInspect, ImageSummary, Info, Version};

#[cfg(test)]
mod fake_engine_tests;

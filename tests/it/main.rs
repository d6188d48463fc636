//! The integration-test binary: real Docker engine, real registry. `fixtures` is the kit every test
//! module reuses; each other module is one area of the product.

mod fixtures;

mod api_updates;
mod check;
mod daemon;
mod discovery;
mod engine;
mod kit_selftest;
mod scan;
mod ui;
mod update;

// integration tests
mod engine;

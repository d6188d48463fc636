//! Docker Engine API client.

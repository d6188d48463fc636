//! Registry client.

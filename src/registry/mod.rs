//! Registry side of update detection (SPEC.md §5): reference normalisation, `WWW-Authenticate`
//! challenges, credentials (config, docker `config.json`, credential helpers), and the HTTP client that
//! asks a registry for a tag's digest, confirms per-platform changes and lists tags.
//! Only this module talks to registries; it knows nothing of containers, policy or the engine.
//!
//! - `reference`: parse and normalise image references (pure); match RepoDigests entries.
//! - `challenge`: parse `WWW-Authenticate` (pure).
//! - `credentials`: `registry.auth`, then `config.json` (`credHelpers` → `credsStore` → `auths`).
//! - `token`: token answers, the token cache, batched token URLs (pure, clock passed in).
//! - `platform`: manifest parsing, platform normalisation and selection (pure).
//! - `client`: `RegistryClient`, the only part that does HTTP.
//!
//! A scan calls `RegistryClient::prepare` with every reference it will fetch (one token per
//! registry), then `head_digest` per distinct reference, and `platform_changed` only when the
//! remote digest differs from the local RepoDigests entry (`digest_for_repository`).

pub mod challenge;
pub mod client;
pub mod credentials;
pub mod platform;
pub mod reference;
pub mod token;

pub use challenge::{Challenge, ChallengeError};
pub use client::{ErrorKind, RegistryClient, RegistryError, RegistryStats, RemoteDigest};
pub use credentials::{Credential, CredentialError, CredentialStore, LookupEnv};
pub use reference::{
    digest_for_repository, digests_for_repository, Reference, ReferenceError, ReferenceProblem,
};

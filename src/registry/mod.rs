//! Registry side of update detection (SPEC.md §5): reference normalisation, `WWW-Authenticate`
//! challenges, credentials (config, docker `config.json`, credential helpers), and the HTTP client that
//! asks a registry for a tag's digest, confirms per-platform changes and lists tags.
//! Only this module talks to registries; it knows nothing of containers, policy or the engine.

pub mod challenge;
pub mod client;
pub mod credentials;
pub mod platform;
pub mod reference;
pub mod token;

pub use challenge::{Challenge, ChallengeError};
pub use client::{ErrorKind, RegistryClient, RegistryError, RegistryStats, RemoteDigest};
pub use credentials::{Credential, CredentialError, CredentialStore, LookupEnv};
pub use reference::{digest_for_repository, Reference, ReferenceError, ReferenceProblem};

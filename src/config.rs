//! Configuration: YAML file, then `WATCH_*` environment overrides, then command-line flags, into a
//! validated, typed `Config` (SPEC.md §3). Owns parsing and validation of every key; knows nothing of
//! the engine, registries or the API.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret value: its Debug and Display print `***`, so it cannot leak through logs or `config`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value, for the one place that sends it (a header, a token request).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub docker: DockerConfig,
    pub scan: ScanConfig,
    pub update: UpdateConfig,
    pub policy: PolicyConfig,
    pub registry: RegistryConfig,
    pub logging: LoggingConfig,
    pub metrics: MetricsConfig,
    pub notify: NotifyConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `":8080"` (all interfaces) or `host:port`.
    pub addr: String,
    pub token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub allow_unauthenticated: bool,
    pub ui: bool,
    pub read_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`.
    pub host: String,
    pub include_stopped: bool,
    /// Caps the negotiated API version, as (major, minor), e.g. (1, 43). None = auto.
    pub api_version: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScanConfig {
    pub interval: Duration,
    /// Validated cron expression (5 or 6 fields); None when empty.
    pub cron: Option<String>,
    pub initial_scan_on_start: bool,
    pub concurrency: usize,
    pub cache_ttl: Duration,
    /// Validated IANA zone name; None = `TZ` env, else UTC.
    pub timezone: Option<String>,
    pub jitter: Duration,
    pub newer_versions: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecreateStrategy {
    Recreate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    pub enabled: bool,
    /// Validated cron expression; None when empty (then updates follow every scheduled scan).
    pub auto_update_cron: Option<String>,
    pub allow_compose_update: bool,
    pub recreate_strategy: RecreateStrategy,
    pub remove_old_container: bool,
    /// Validated IANA zone name; None = as scan.
    pub timezone: Option<String>,
    pub stop_timeout: Duration,
    pub health_timeout: Duration,
    pub settle_time: Duration,
    pub rollback: bool,
    pub concurrency: usize,
    pub cleanup_images: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub skip_labels: Vec<String>,
    pub only_labels: Vec<String>,
    pub exclude_labels: Vec<String>,
    pub skip_local_build: bool,
    pub skip_pinned_digest: bool,
    pub skip_semver_pinned: bool,
    pub floating_tags: Vec<String>,
    pub label_enable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegistryAuth {
    pub host: String,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    pub auth: Vec<RegistryAuth>,
    /// None = `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    pub insecure: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub max_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    pub level: log::LevelFilter,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    Available,
    Updated,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
    Discord,
    Ntfy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Webhook URLs often embed a secret (Slack, Discord): treated as one.
    pub url: Secret,
    pub events: Vec<WebhookEvent>,
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub webhooks: Vec<Webhook>,
}

impl Default for Config {
    /// The seed's defaults plus SPEC.md §3's added keys; `config.yaml` at the top documents the same.
    fn default() -> Self {
        Config {
            server: ServerConfig {
                addr: ":8080".into(),
                token: None,
                read_token: None,
                allow_unauthenticated: false,
                ui: true,
                read_timeout: Duration::from_secs(10),
                max_connections: 256,
            },
            docker: DockerConfig {
                host: "unix:///var/run/docker.sock".into(),
                include_stopped: false,
                api_version: None,
            },
            scan: ScanConfig {
                interval: Duration::from_secs(600),
                cron: None,
                initial_scan_on_start: true,
                concurrency: 3,
                cache_ttl: Duration::from_secs(300),
                timezone: None,
                jitter: Duration::ZERO,
                newer_versions: false,
            },
            update: UpdateConfig {
                enabled: true,
                auto_update_cron: Some("0 3 * * *".into()),
                allow_compose_update: false,
                recreate_strategy: RecreateStrategy::Recreate,
                remove_old_container: true,
                timezone: None,
                stop_timeout: Duration::from_secs(10),
                health_timeout: Duration::from_secs(60),
                settle_time: Duration::from_secs(5),
                rollback: true,
                concurrency: 1,
                cleanup_images: false,
            },
            policy: PolicyConfig {
                skip_labels: vec!["watchdocker.skip=true".into()],
                only_labels: vec![],
                exclude_labels: vec![],
                skip_local_build: true,
                skip_pinned_digest: true,
                skip_semver_pinned: true,
                floating_tags: vec!["latest".into(), "main".into(), "stable".into()],
                label_enable: false,
            },
            registry: RegistryConfig {
                auth: vec![
                    RegistryAuth {
                        host: "registry-1.docker.io".into(),
                        username: String::new(),
                        password: Secret::default(),
                    },
                    RegistryAuth {
                        host: "ghcr.io".into(),
                        username: String::new(),
                        password: Secret::default(),
                    },
                ],
                docker_config: None,
                insecure: vec![],
                ca_file: None,
                timeout: Duration::from_secs(15),
                max_retries: 3,
            },
            logging: LoggingConfig {
                level: log::LevelFilter::Info,
                format: LogFormat::Text,
            },
            metrics: MetricsConfig { enabled: true },
            notify: NotifyConfig { webhooks: vec![] },
        }
    }
}

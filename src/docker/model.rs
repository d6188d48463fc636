//! The Engine API's JSON, reduced to the fields watch-docker reads.
//!
//! Unknown fields are ignored and missing ones take their default, so one model reads every
//! engine version we negotiate. The engine sends `null` for empty lists, maps and absent objects
//! (`RepoTags`, `Env`, `Labels`, `HostConfig`...): those read as empty through [`null_as_default`].
//! Plain strings, numbers and booleans are never `null` in the engine's JSON (Go encodes them as
//! values), so they only take their default when absent: one deserializer less per scalar type. Recreating a container
//! needs every field, which is why the client also hands out inspect data as raw JSON; this
//! module must not grow into a copy of the whole API.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// `null` or absent → `T::default()`. Use with `#[serde(default, deserialize_with = ...)]`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub type Labels = BTreeMap<String, String>;

/// `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Version {
    #[serde(rename = "Version")]
    pub version: String,
    /// The highest API version the engine speaks.
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    /// The lowest API version the engine accepts.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    #[serde(rename = "Os")]
    pub os: String,
    #[serde(rename = "Arch")]
    pub arch: String,
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
}

/// `GET /info`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "ServerVersion")]
    pub server_version: String,
    /// Storage driver: `overlay2` (classic store) or the snapshotter, e.g. `overlayfs`
    /// (containerd store).
    #[serde(rename = "Driver")]
    pub driver: String,
    /// Pairs such as `["driver-type", "io.containerd.snapshotter.v1"]`.
    #[serde(rename = "DriverStatus", deserialize_with = "null_as_default")]
    pub driver_status: Vec<Vec<String>>,
    #[serde(rename = "RegistryConfig", deserialize_with = "null_as_default")]
    pub registry_config: RegistryConfig,
    #[serde(rename = "Containers")]
    pub containers: i64,
    #[serde(rename = "Images")]
    pub images: i64,
    #[serde(rename = "OSType")]
    pub os_type: String,
    /// As the kernel says it (`x86_64`, `aarch64`), not normalised.
    #[serde(rename = "Architecture")]
    pub architecture: String,
}

impl Info {
    /// True when images live in containerd's store (default on fresh Docker 29 installs):
    /// there image ids and `RepoDigests` are manifest/index digests, not config digests.
    pub fn uses_containerd_store(&self) -> bool {
        let snapshotter = self.driver_status.iter().any(|pair| {
            pair.first().map(String::as_str) == Some("driver-type")
                && pair
                    .get(1)
                    .is_some_and(|v| v.starts_with("io.containerd.snapshotter"))
        });
        // `overlayfs` is the containerd snapshotter's name; the classic drivers are
        // `overlay2` and `fuse-overlayfs`.
        snapshotter || self.driver == "overlayfs"
    }

    /// Registry names the engine itself treats as insecure (its `IndexConfigs` with
    /// `Secure: false`). CIDR ranges are in `registry_config.insecure_registry_cidrs`.
    pub fn insecure_registry_names(&self) -> Vec<String> {
        self.registry_config
            .index_configs
            .iter()
            .filter(|(_, index)| !index.secure)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// E.g. `127.0.0.0/8`, always present on a default engine.
    #[serde(rename = "InsecureRegistryCIDRs", deserialize_with = "null_as_default")]
    pub insecure_registry_cidrs: Vec<String>,
    /// Keyed by registry name (`docker.io`, `myregistry:5000`).
    #[serde(rename = "IndexConfigs", deserialize_with = "null_as_default")]
    pub index_configs: BTreeMap<String, IndexInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct IndexInfo {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Secure")]
    pub secure: bool,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    /// With the leading slash: `/web`.
    #[serde(rename = "Names", deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    /// The reference the container was created with (or an id when that tag moved away).
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    #[serde(rename = "Labels", deserialize_with = "null_as_default")]
    pub labels: Labels,
    /// `created|running|paused|restarting|removing|exited|dead`.
    #[serde(rename = "State")]
    pub state: String,
    /// Human text, e.g. `Up 2 hours (healthy)`.
    #[serde(rename = "Status")]
    pub status: String,
    /// Unix seconds.
    #[serde(rename = "Created")]
    pub created: i64,
}

impl ContainerSummary {
    /// The first name without its leading slash, or the short id when it has none.
    pub fn name(&self) -> &str {
        match self.names.first() {
            Some(name) => name.strip_prefix('/').unwrap_or(name),
            None => self.id.get(..12).unwrap_or(&self.id),
        }
    }
}

/// `GET /containers/{id}/json`, the parts we read. The client also returns the raw JSON.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerInspect {
    #[serde(rename = "Id")]
    pub id: String,
    /// With the leading slash: `/web`.
    #[serde(rename = "Name")]
    pub name: String,
    /// RFC 3339.
    #[serde(rename = "Created")]
    pub created: String,
    /// The image id (`sha256:...`) the container runs.
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "State", deserialize_with = "null_as_default")]
    pub state: ContainerState,
    #[serde(rename = "RestartCount")]
    pub restart_count: i64,
    #[serde(rename = "Config", deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
    #[serde(rename = "HostConfig", deserialize_with = "null_as_default")]
    pub host_config: HostConfig,
    #[serde(rename = "NetworkSettings", deserialize_with = "null_as_default")]
    pub network_settings: NetworkSettings,
    #[serde(rename = "Mounts", deserialize_with = "null_as_default")]
    pub mounts: Vec<Mount>,
}

impl ContainerInspect {
    /// The name without its leading slash.
    pub fn name(&self) -> &str {
        self.name.strip_prefix('/').unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Running")]
    pub running: bool,
    #[serde(rename = "Restarting")]
    pub restarting: bool,
    #[serde(rename = "ExitCode")]
    pub exit_code: i64,
    /// Why the last start failed, if it did.
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "StartedAt")]
    pub started_at: String,
    #[serde(rename = "FinishedAt")]
    pub finished_at: String,
    /// None: the container has no healthcheck.
    #[serde(rename = "Health")]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `starting|healthy|unhealthy`.
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "FailingStreak")]
    pub failing_streak: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// The reference as the user wrote it (`nginx`, `ghcr.io/a/b:1.2`).
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "Labels", deserialize_with = "null_as_default")]
    pub labels: Labels,
    #[serde(rename = "Env", deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(rename = "Hostname")]
    pub hostname: String,
    #[serde(rename = "Healthcheck")]
    pub healthcheck: Option<Healthcheck>,
    /// Seconds; None means the engine default (10 s) applies.
    #[serde(rename = "StopTimeout")]
    pub stop_timeout: Option<i64>,
    #[serde(rename = "StopSignal")]
    pub stop_signal: String,
}

/// Durations are nanoseconds, 0 meaning "inherit".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    /// `[]` inherit, `["NONE"]` disabled, `["CMD", ...]`, `["CMD-SHELL", cmd]`.
    #[serde(rename = "Test", deserialize_with = "null_as_default")]
    pub test: Vec<String>,
    #[serde(rename = "Interval")]
    pub interval: i64,
    #[serde(rename = "Timeout")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod")]
    pub start_period: i64,
    #[serde(rename = "Retries")]
    pub retries: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    #[serde(rename = "RestartPolicy", deserialize_with = "null_as_default")]
    pub restart_policy: RestartPolicy,
    /// `default`, `bridge`, `host`, `none`, a network name, or `container:<id>`.
    #[serde(rename = "NetworkMode")]
    pub network_mode: String,
    /// `--rm`: the container disappears when it stops.
    #[serde(rename = "AutoRemove")]
    pub auto_remove: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// `""`/`no`, `always`, `unless-stopped`, `on-failure`.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "MaximumRetryCount")]
    pub maximum_retry_count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NetworkSettings {
    /// Keyed by network name.
    #[serde(rename = "Networks", deserialize_with = "null_as_default")]
    pub networks: BTreeMap<String, EndpointSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EndpointSettings {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "Aliases", deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Mount {
    /// `bind`, `volume`, `tmpfs`, `npipe`, `cluster`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name (volumes only).
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "RW")]
    pub rw: bool,
}

/// One entry of `GET /images/json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ImageSummary {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "RepoTags", deserialize_with = "null_as_default")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "RepoDigests", deserialize_with = "null_as_default")]
    pub repo_digests: Vec<String>,
    #[serde(rename = "Size")]
    pub size: i64,
    /// Unix seconds.
    #[serde(rename = "Created")]
    pub created: i64,
    #[serde(rename = "Labels", deserialize_with = "null_as_default")]
    pub labels: Labels,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ImageInspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "RepoTags", deserialize_with = "null_as_default")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "RepoDigests", deserialize_with = "null_as_default")]
    pub repo_digests: Vec<String>,
    #[serde(rename = "Os")]
    pub os: String,
    #[serde(rename = "Architecture")]
    pub architecture: String,
    #[serde(rename = "Variant")]
    pub variant: String,
    #[serde(rename = "Size")]
    pub size: i64,
    /// RFC 3339.
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "Config", deserialize_with = "null_as_default")]
    pub config: ImageConfig,
}

/// The image's defaults, which a recreate must subtract from the container's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    #[serde(rename = "Env", deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(rename = "Labels", deserialize_with = "null_as_default")]
    pub labels: Labels,
    /// None when the image sets none (distinct from an explicit empty list).
    #[serde(rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: String,
    #[serde(rename = "User")]
    pub user: String,
    /// Keys are paths; values are always `{}`.
    #[serde(rename = "Volumes", deserialize_with = "null_as_default")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// Keys like `80/tcp`; values are always `{}`.
    #[serde(rename = "ExposedPorts", deserialize_with = "null_as_default")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "Healthcheck")]
    pub healthcheck: Option<Healthcheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => panic!("{e}: {json}"),
        }
    }

    #[test]
    fn container_inspect_from_engine_20_10() {
        let c: ContainerInspect = parse(include_str!("testdata/inspect-container-20.10.json"));
        assert_eq!(c.name(), "web");
        assert!(c.id.starts_with("9281fd8c556d"));
        assert!(c.image.starts_with("sha256:"));
        assert!(c.state.running);
        assert_eq!(c.state.status, "running");
        assert_eq!(
            c.state.health.as_ref().map(|h| h.status.as_str()),
            Some("starting")
        );
        assert_eq!(c.config.image, "registry.example:5000/web:1.2");
        assert!(c.config.env.is_empty(), "Env: null reads as empty");
        assert_eq!(c.config.labels["com.docker.compose.service"], "web");
        assert_eq!(c.config.healthcheck.as_ref().map(|h| h.test.len()), Some(2));
        assert_eq!(c.config.stop_timeout, None);
        assert_eq!(c.host_config.restart_policy.name, "unless-stopped");
        assert_eq!(c.host_config.network_mode, "default");
        assert!(!c.host_config.auto_remove);
        let bridge = &c.network_settings.networks["bridge"];
        assert!(bridge.aliases.is_empty(), "Aliases: null reads as empty");
        assert_eq!(bridge.ip_address, "172.17.0.2");
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(c.mounts[0].kind, "volume");
        assert_eq!(c.mounts[0].destination, "/data");
    }

    #[test]
    fn nulls_and_absences_read_as_empty() {
        let c: ContainerInspect = parse(
            r#"{"Id":"x","State":{"Status":"exited","Health":null},
                "Config":{"Labels":null,"Env":null,"Healthcheck":null},
                "HostConfig":null,"NetworkSettings":{"Networks":null},"Mounts":null}"#,
        );
        assert_eq!(c.name(), "");
        assert!(c.state.health.is_none());
        assert!(c.config.labels.is_empty());
        assert_eq!(c.host_config, HostConfig::default());
        assert!(c.network_settings.networks.is_empty());
        assert!(c.mounts.is_empty());

        let c: ContainerInspect = parse("{}");
        assert_eq!(c, ContainerInspect::default());
    }

    #[test]
    fn image_inspect_from_engine_20_10() {
        let i: ImageInspect = parse(include_str!("testdata/inspect-image-20.10.json"));
        assert!(i.id.starts_with("sha256:"));
        assert_eq!(i.repo_tags, ["wdtest-engine-probe:v1"]);
        assert!(i.repo_digests.is_empty());
        assert_eq!((i.os.as_str(), i.architecture.as_str()), ("linux", "amd64"));
        assert_eq!(i.variant, "");
        assert_eq!(i.config.cmd, None);
        assert_eq!(i.config.entrypoint, None);
        assert!(i.config.env.is_empty());
        assert!(i.config.labels.is_empty());
    }

    #[test]
    fn image_config_keeps_explicit_values() {
        let i: ImageInspect = parse(
            r#"{"Id":"sha256:1","Config":{"Cmd":["nginx","-g","daemon off;"],"Entrypoint":[],
                "Env":["PATH=/usr/bin","NGINX_VERSION=1.27"],"Volumes":{"/data":{}},
                "ExposedPorts":{"80/tcp":{}},"WorkingDir":"/srv","User":"101"},
                "RepoTags":null,"RepoDigests":null}"#,
        );
        assert_eq!(i.config.cmd.as_deref().map(<[String]>::len), Some(3));
        assert_eq!(i.config.entrypoint, Some(vec![]));
        assert!(i.config.volumes.contains_key("/data"));
        assert!(i.config.exposed_ports.contains_key("80/tcp"));
        assert!(i.repo_tags.is_empty() && i.repo_digests.is_empty());
        // Images imported without any config send `"Config": null`.
        let i: ImageInspect = parse(r#"{"Id":"sha256:2","Config":null}"#);
        assert_eq!(i.config, ImageConfig::default());
    }

    #[test]
    fn summaries() {
        let list: Vec<ContainerSummary> = parse(
            r#"[{"Id":"9281fd8c556d9c9e","Names":["/web"],"Image":"web:1","ImageID":"sha256:4",
                 "Labels":{"a":"b"},"State":"running","Status":"Up 2 hours","Created":1795933953},
                {"Id":"0123456789abcdef","Names":null,"Labels":null}]"#,
        );
        assert_eq!(list[0].name(), "web");
        assert_eq!(list[0].created, 1795933953);
        assert_eq!(list[1].name(), "0123456789ab");
        assert!(list[1].labels.is_empty());

        let images: Vec<ImageSummary> = parse(
            r#"[{"Containers":-1,"Created":1795933953,"Id":"sha256:47","Labels":null,
                 "RepoDigests":null,"RepoTags":["wdtest:v1"],"Size":1982256}]"#,
        );
        assert!(images[0].repo_digests.is_empty());
        assert_eq!(images[0].repo_tags, ["wdtest:v1"]);
    }

    #[test]
    fn version_from_engine_20_10() {
        let v: Version = parse(include_str!("testdata/version-20.10.json"));
        assert_eq!(v.api_version, "1.41");
        assert_eq!(v.min_api_version, "1.12");
        assert_eq!((v.os.as_str(), v.arch.as_str()), ("linux", "amd64"));
    }

    #[test]
    fn info_classic_store_from_engine_20_10() {
        let i: Info = parse(include_str!("testdata/info-20.10.json"));
        assert_eq!(i.driver, "fuse-overlayfs");
        assert!(i.driver_status.is_empty());
        assert!(!i.uses_containerd_store());
        assert_eq!(i.registry_config.insecure_registry_cidrs, ["127.0.0.0/8"]);
        assert!(i.registry_config.index_configs["docker.io"].secure);
        assert!(i.insecure_registry_names().is_empty());
        assert_eq!(i.os_type, "linux");
        assert_eq!(i.architecture, "x86_64");
    }

    #[test]
    fn info_containerd_store_and_insecure_names() {
        // As Docker 29 reports a fresh install with an insecure registry configured.
        let i: Info = parse(
            r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],
                "RegistryConfig":{"InsecureRegistryCIDRs":["::1/128","127.0.0.0/8"],
                  "IndexConfigs":{"docker.io":{"Name":"docker.io","Secure":true},
                                  "reg.lan:5000":{"Name":"reg.lan:5000","Secure":false}}}}"#,
        );
        assert!(i.uses_containerd_store());
        assert_eq!(i.insecure_registry_names(), ["reg.lan:5000"]);

        let classic: Info = parse(
            r#"{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]],"RegistryConfig":null}"#,
        );
        assert!(!classic.uses_containerd_store());
        assert!(classic.registry_config.index_configs.is_empty());
    }
}

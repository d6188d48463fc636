//! The create request for a container's replacement, built from the old container's inspect data
//! and the inspect data of the image it runs (SPEC §6 step 2; ENGINE-AND-REGISTRY-NOTES.md,
//! "Recreating a container from its inspect data").
//!
//! Pure: no I/O, no clock (the update time is passed in). It knows the Engine API's JSON shapes
//! (raw `serde_json::Value`, so fields we do not model survive verbatim), not how to send them.
//!
//! The rule of thumb: keep what the user set, drop what the old image or the engine filled in,
//! so the new image's defaults apply and the new container is not frozen to the old one.

use crate::labels;
use serde_json::{json, Map, Value};
use std::fmt;
use std::time::Duration;

/// From this Engine API version a container can be created attached to all its networks at once,
/// and the MAC address is set per endpoint (`Config.MacAddress` is deprecated).
const MULTI_NETWORK_CREATE: (u32, u32) = (1, 44);

/// Docker's healthcheck defaults when a field is 0 (moby `container/health.go`).
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_RETRIES: u64 = 3;

/// What `plan` needs: raw inspect data and the few facts it cannot read from it.
pub struct RecreateInput<'a> {
    /// `GET /containers/{id}/json` of the old container.
    pub container: &'a Value,
    /// `GET /images/{id}/json` of the image the old container runs.
    pub old_image: &'a Value,
    /// The reference to create the new container from (e.g. `127.0.0.1:5000/app:latest`).
    pub new_image_ref: &'a str,
    /// The negotiated Engine API version.
    pub api_version: (u32, u32),
    /// RFC 3339 time of the update, for the `watchdocker.updated-at` label.
    pub updated_at: &'a str,
    /// Container id → its current name, to rewrite `container:<id>` network mode by name.
    pub name_of: &'a dyn Fn(&str) -> Option<String>,
}

/// The create request for the new container, and what must follow it before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RecreatePlan {
    /// The original name, without the leading `/`.
    pub name: String,
    /// Body of `POST /containers/create?name=<name>`.
    pub body: Value,
    /// Below API 1.44 only: networks to `POST /networks/{name}/connect` (with this
    /// `EndpointConfig`) after create and before start.
    pub connect_after_create: Vec<(String, Value)>,
    /// The old image id; also in the `watchdocker.previous-image` label of the body.
    pub previous_image: String,
}

/// Why the inspect data cannot be turned into a create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecreateError {
    /// A field without which the container cannot be rebuilt is missing or not of its type.
    MissingField {
        container: String,
        field: &'static str,
    },
    /// `NetworkMode: container:<id>` names a container that no longer exists.
    UnknownNetworkProvider { container: String, provider: String },
}

impl fmt::Display for RecreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecreateError::MissingField { container, field } => {
                write!(f, "recreate {container}: inspect data has no usable `{field}`")
            }
            RecreateError::UnknownNetworkProvider {
                container,
                provider,
            } => write!(
                f,
                "recreate {container}: it shares the network of container {provider}, which does not exist"
            ),
        }
    }
}

impl std::error::Error for RecreateError {}

/// Builds the create request for the replacement of `input.container`.
pub fn plan(input: &RecreateInput) -> Result<RecreatePlan, RecreateError> {
    let c = input.container;
    let id = str_at(c, "Id").unwrap_or("");
    let name = str_at(c, "Name").unwrap_or("").trim_start_matches('/');
    let subject = match (name, id) {
        ("", "") => "<unnamed container>".to_string(),
        ("", id) => id.to_string(),
        (name, _) => name.to_string(),
    };
    let missing = |field| RecreateError::MissingField {
        container: subject.clone(),
        field,
    };
    if name.is_empty() {
        return Err(missing("Name"));
    }
    if id.is_empty() {
        return Err(missing("Id"));
    }
    let mut config = obj_at(c, "Config")
        .cloned()
        .ok_or_else(|| missing("Config"))?;
    let mut host = obj_at(c, "HostConfig")
        .cloned()
        .ok_or_else(|| missing("HostConfig"))?;
    let previous_image = str_at(c, "Image")
        .or_else(|| str_at(input.old_image, "Id"))
        .ok_or_else(|| missing("Image"))?
        .to_string();
    let no_image_config = Map::new();
    let image = obj_at(input.old_image, "Config").unwrap_or(&no_image_config);
    let short_id: String = id.chars().take(12).collect();

    // `container:<id>`: the id dies with the provider's recreation; its name does not.
    let mode = host
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let shares_network = match mode.strip_prefix("container:") {
        Some(provider) => {
            let provider_name = (input.name_of)(provider)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| RecreateError::UnknownNetworkProvider {
                    container: subject.clone(),
                    provider: provider.to_string(),
                })?;
            let provider_name = provider_name.trim_start_matches('/');
            host.insert(
                "NetworkMode".into(),
                json!(format!("container:{provider_name}")),
            );
            true
        }
        None => false,
    };

    subtract_image_defaults(&mut config, image);
    restore_published_ports(&mut config, &host);

    // Docker's default hostname is the short id: copying it names the new container after the
    // old one (watchtower#1251).
    if str_at_map(&config, "Hostname").is_some_and(|h| h.is_empty() || h == short_id) {
        config.remove("Hostname");
    }
    if str_at_map(&config, "Domainname") == Some("") {
        config.remove("Domainname");
    }
    let uts_mode = host.get("UTSMode").and_then(Value::as_str).unwrap_or("");
    if shares_network || !uts_mode.is_empty() {
        // The hostname comes from the namespace's owner; the engine refuses both together.
        config.remove("Hostname");
        config.remove("Domainname");
    }
    if shares_network {
        // All of these belong to the provider's namespace; the engine refuses them here.
        config.remove("ExposedPorts");
        config.remove("MacAddress");
        for key in [
            "PortBindings",
            "PublishAllPorts",
            "Dns",
            "DnsOptions",
            "DnsSearch",
            "ExtraHosts",
            "Links",
        ] {
            host.remove(key);
        }
    }

    rewrite_links(&mut host);
    reuse_volumes(&mut host, c);

    let networks = plan_networks(
        c,
        &mut config,
        &mut host,
        input.api_version,
        &[id, &short_id, name],
    );

    config.insert("Image".into(), json!(input.new_image_ref));
    let mut labels = match config.remove("Labels") {
        Some(Value::Object(labels)) => labels,
        _ => Map::new(),
    };
    labels.insert(labels::PREVIOUS_IMAGE.into(), json!(previous_image));
    labels.insert(labels::UPDATED_AT.into(), json!(input.updated_at));
    config.insert("Labels".into(), Value::Object(labels));

    let mut body = config;
    body.insert("HostConfig".into(), Value::Object(host));
    body.insert(
        "NetworkingConfig".into(),
        json!({ "EndpointsConfig": networks.at_create }),
    );
    Ok(RecreatePlan {
        name: name.to_string(),
        body: Value::Object(body),
        connect_after_create: networks.after_create,
        previous_image,
    })
}

/// The container's own `StopTimeout` when it has one, else `default`. The `t` of a stop request
/// overrides the container's value, so it must be passed explicitly (a database started with
/// `--stop-timeout 120` must not be killed after the global default).
pub fn stop_timeout(container: &Value, default: Duration) -> Duration {
    container
        .pointer("/Config/StopTimeout")
        .and_then(Value::as_u64)
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// How long to wait for `healthy` after start: max(`health_timeout`, start period + interval ×
/// (retries + 1)), with Docker's defaults for zero fields; `None` without a healthcheck.
/// Takes a container's inspect data (`Config.Healthcheck`) or a bare config / create body
/// (`Healthcheck`). Pass the NEW container's inspect: it holds the image's merged healthcheck.
pub fn health_wait(container_or_config: &Value, health_timeout: Duration) -> Option<Duration> {
    let health = match container_or_config.get("Config") {
        Some(config) => config.get("Healthcheck")?,
        None => container_or_config.get("Healthcheck")?,
    };
    let test = health.get("Test").and_then(Value::as_array)?;
    match test.first().and_then(Value::as_str) {
        None | Some("NONE") => return None,
        Some(_) => {}
    }
    let nanos = |key| {
        health
            .get(key)
            .and_then(Value::as_u64)
            .map(Duration::from_nanos)
            .unwrap_or_default()
    };
    let interval = Some(nanos("Interval"))
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEALTH_INTERVAL);
    let start_period = nanos("StartPeriod");
    let retries = health
        .get("Retries")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .unwrap_or(DEFAULT_HEALTH_RETRIES);
    let attempts = u32::try_from(retries.saturating_add(1)).unwrap_or(u32::MAX);
    let needed = start_period.saturating_add(interval.saturating_mul(attempts));
    Some(health_timeout.max(needed))
}

/// Removes from `config` what the old image put there, so the new image's values apply.
fn subtract_image_defaults(config: &mut Map<String, Value>, image: &Map<String, Value>) {
    if let Some(Value::Array(env)) = config.get_mut("Env") {
        let image_env: Vec<&Value> = match image.get("Env") {
            Some(Value::Array(e)) => e.iter().collect(),
            _ => Vec::new(),
        };
        env.retain(|e| !image_env.contains(&e));
    }
    if matches!(config.get("Env"), Some(Value::Array(e)) if e.is_empty()) {
        config.remove("Env");
    }

    if let (Some(Value::Object(labels)), Some(Value::Object(image_labels))) =
        (config.get_mut("Labels"), image.get("Labels"))
    {
        labels.retain(|k, v| image_labels.get(k) != Some(v));
    }

    subtract_entrypoint_and_cmd(config, image);

    for key in ["WorkingDir", "User", "StopSignal"] {
        let same = match (config.get(key), image.get(key)) {
            (Some(Value::String(s)), _) if s.is_empty() => true,
            (Some(v), Some(i)) => v == i,
            (Some(Value::Null), None) => true,
            _ => false,
        };
        if same {
            config.remove(key);
        }
    }

    for key in ["Volumes", "ExposedPorts"] {
        subtract_keys(config, key, image.get(key));
    }

    subtract_healthcheck(config, image.get("Healthcheck"));
}

/// Entrypoint and Cmd. The engine fills both from the image only when the request has no
/// Entrypoint; with an overridden Entrypoint, the image's Cmd is not used, so the inspected Cmd
/// (possibly none) is exactly what the user gave.
fn subtract_entrypoint_and_cmd(config: &mut Map<String, Value>, image: &Map<String, Value>) {
    let entrypoint = present(config.get("Entrypoint")).cloned();
    let image_entrypoint = present(image.get("Entrypoint"));
    match &entrypoint {
        Some(ep) if Some(ep) != image_entrypoint => {
            if is_empty_command(ep) {
                // The user cleared the image's entrypoint (`--entrypoint ""`). `[]` would mean
                // "none" too but is easy to mistake for "unset"; send what the CLI sends.
                config.insert("Entrypoint".into(), json!([""]));
            }
            // Cmd stays as inspected.
        }
        _ => {
            config.remove("Entrypoint");
            if present(config.get("Cmd")) == present(image.get("Cmd")) {
                config.remove("Cmd");
            }
        }
    }
}

/// `[]` or `[""]`: no command.
fn is_empty_command(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().all(|s| s.as_str() == Some("")),
        _ => false,
    }
}

/// Healthcheck fields equal to the image's are dropped one by one: the engine fills each zero
/// field from the image, so a user's `--health-interval` alone survives and the rest follows the
/// new image.
fn subtract_healthcheck(config: &mut Map<String, Value>, image_health: Option<&Value>) {
    let Some(Value::Object(health)) = config.get_mut("Healthcheck") else {
        if matches!(config.get("Healthcheck"), Some(Value::Null)) {
            config.remove("Healthcheck");
        }
        return;
    };
    if let Some(Value::Object(image_health)) = image_health {
        health.retain(|k, v| image_health.get(k) != Some(v));
    }
    if health.is_empty() {
        config.remove("Healthcheck");
    }
}

/// Removes from the object at `config[key]` the keys that `image` also has; drops it when empty.
fn subtract_keys(config: &mut Map<String, Value>, key: &str, image: Option<&Value>) {
    match config.get_mut(key) {
        Some(Value::Object(own)) => {
            if let Some(Value::Object(image)) = image {
                own.retain(|k, _| !image.contains_key(k));
            }
            if own.is_empty() {
                config.remove(key);
            }
        }
        Some(Value::Null) => {
            config.remove(key);
        }
        _ => {}
    }
}

/// A published port must stay exposed even when only the old image exposed it.
fn restore_published_ports(config: &mut Map<String, Value>, host: &Map<String, Value>) {
    let Some(Value::Object(bindings)) = host.get("PortBindings") else {
        return;
    };
    if bindings.is_empty() {
        return;
    }
    if !matches!(config.get("ExposedPorts"), Some(Value::Object(_))) {
        config.insert("ExposedPorts".into(), Value::Object(Map::new()));
    }
    if let Some(Value::Object(exposed)) = config.get_mut("ExposedPorts") {
        for port in bindings.keys() {
            exposed.entry(port.clone()).or_insert_with(|| json!({}));
        }
    }
}

/// Inspect shows links as `/db:/app/db`; create wants `db:db` (name, then the alias, which is the
/// last segment of the second path).
fn rewrite_links(host: &mut Map<String, Value>) {
    let Some(Value::Array(links)) = host.get_mut("Links") else {
        return;
    };
    let rewritten: Vec<Value> = links
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|link| {
            let (target, alias) = link.split_once(':').unwrap_or((link, link));
            let target = target.trim_start_matches('/');
            let alias = alias.rsplit('/').next().unwrap_or(alias);
            (!target.is_empty() && !alias.is_empty()).then(|| json!(format!("{target}:{alias}")))
        })
        .collect();
    *links = rewritten;
}

/// Anonymous volumes (image `VOLUME`, `-v /path`, `--mount type=volume` without a source) are
/// not named in the create request: a plain copy gives the new container fresh empty ones, which
/// is silent data loss. Name the old ones (as compose does), once per destination.
fn reuse_volumes(host: &mut Map<String, Value>, container: &Value) {
    let used: Vec<(&str, &str, bool)> = match container.get("Mounts") {
        Some(Value::Array(mounts)) => mounts
            .iter()
            .filter(|m| m.get("Type").and_then(Value::as_str) == Some("volume"))
            .filter_map(|m| {
                let name = m.get("Name").and_then(Value::as_str)?;
                let dest = m.get("Destination").and_then(Value::as_str)?;
                let read_only = m.get("RW").and_then(Value::as_bool) == Some(false);
                (!name.is_empty() && !dest.is_empty()).then_some((name, dest, read_only))
            })
            .collect(),
        _ => Vec::new(),
    };
    let volume_at = |dest: &str| {
        used.iter()
            .find(|(_, d, _)| same_path(d, dest))
            .map(|(name, _, _)| *name)
    };

    let mut covered: Vec<String> = Vec::new();
    if let Some(Value::Array(mounts)) = host.get_mut("Mounts") {
        for mount in mounts.iter_mut().filter_map(Value::as_object_mut) {
            let target = mount
                .get("Target")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let is_volume = mount.get("Type").and_then(Value::as_str) == Some("volume");
            let has_source = mount
                .get("Source")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if is_volume && !has_source {
                if let Some(name) = volume_at(&target) {
                    mount.insert("Source".into(), json!(name));
                }
            }
            covered.push(target);
        }
    }
    if let Some(Value::Array(binds)) = host.get("Binds") {
        covered.extend(
            binds
                .iter()
                .filter_map(Value::as_str)
                .map(|b| bind_destination(b).to_string()),
        );
    }

    let mut added = Vec::new();
    for (name, dest, read_only) in &used {
        if covered.iter().any(|c| same_path(c, dest)) {
            continue;
        }
        covered.push(dest.to_string());
        let mode = if *read_only { ":ro" } else { "" };
        added.push(json!(format!("{name}:{dest}{mode}")));
    }
    if added.is_empty() {
        return;
    }
    match host.get_mut("Binds") {
        Some(Value::Array(binds)) => binds.extend(added),
        _ => {
            host.insert("Binds".into(), Value::Array(added));
        }
    }
}

/// `source:destination[:options]` → destination.
fn bind_destination(bind: &str) -> &str {
    let mut parts = bind.split(':');
    let first = parts.next().unwrap_or("");
    parts.next().unwrap_or(first)
}

fn same_path(a: &str, b: &str) -> bool {
    let trim = |p: &str| p.trim_end_matches('/').to_string();
    trim(a) == trim(b)
}

/// The endpoints to create with, and the ones to connect afterwards (below API 1.44).
struct NetworkPlan {
    at_create: Map<String, Value>,
    after_create: Vec<(String, Value)>,
}

/// Endpoint settings the user chose, from `NetworkSettings.Networks`; the primary network chosen
/// by `HostConfig.NetworkMode`; the MAC address placed where the API version wants it.
/// `implicit_aliases` are names the engine adds by itself (id, short id, container name).
fn plan_networks(
    container: &Value,
    config: &mut Map<String, Value>,
    host: &mut Map<String, Value>,
    api_version: (u32, u32),
    implicit_aliases: &[&str],
) -> NetworkPlan {
    let user_mac = config
        .remove("MacAddress")
        .and_then(|m| m.as_str().map(str::to_string))
        .filter(|m| !m.is_empty());
    let mut plan = NetworkPlan {
        at_create: Map::new(),
        after_create: Vec::new(),
    };
    let mode = host
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // These modes have no endpoints of their own to configure.
    if mode.starts_with("container:") || mode == "host" || mode == "none" {
        return plan;
    }
    let Some(Value::Object(networks)) = container.pointer("/NetworkSettings/Networks") else {
        if let Some(mac) = user_mac {
            config.insert("MacAddress".into(), json!(mac));
        }
        return plan;
    };
    if networks.is_empty() {
        return plan;
    }

    // "default" is the bridge on Linux. A mode naming a network the container has since left
    // would attach it again: create on one it is really on instead.
    let wanted = if mode.is_empty() || mode == "default" {
        "bridge"
    } else {
        mode.as_str()
    };
    let by_name = networks.keys().find(|k| k.as_str() == wanted);
    let by_id = || {
        networks.iter().find_map(|(k, ep)| {
            let nid = ep.get("NetworkID").and_then(Value::as_str).unwrap_or("");
            (wanted.len() >= 12 && nid.starts_with(wanted)).then_some(k)
        })
    };
    let primary = match by_name.or_else(by_id) {
        Some(k) => k.clone(),
        None => {
            let first = networks.keys().next().cloned().unwrap_or_default();
            host.insert("NetworkMode".into(), json!(first));
            first
        }
    };

    let multi = api_version >= MULTI_NETWORK_CREATE;
    let mac_network = user_mac.as_ref().map(|mac| {
        networks
            .iter()
            .find(|(_, ep)| ep.get("MacAddress").and_then(Value::as_str) == Some(mac.as_str()))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| primary.clone())
    });

    for (network, recorded) in networks {
        let mut endpoint = endpoint_settings(network, recorded, implicit_aliases);
        if multi && mac_network.as_ref() == Some(network) {
            if let (Some(mac), Value::Object(ep)) = (&user_mac, &mut endpoint) {
                ep.insert("MacAddress".into(), json!(mac));
            }
        }
        if multi || *network == primary {
            plan.at_create.insert(network.clone(), endpoint);
        } else {
            plan.after_create.push((network.clone(), endpoint));
        }
    }
    if !multi {
        // Below 1.44 the container-wide field is the only way; it applies to the primary network.
        if let Some(mac) = user_mac {
            config.insert("MacAddress".into(), json!(mac));
        }
    }
    plan
}

/// What the user configured on one endpoint; everything the engine assigned is left out
/// (ids, gateway, addresses, generated MAC, DNS names).
fn endpoint_settings(network: &str, recorded: &Value, implicit_aliases: &[&str]) -> Value {
    let mut out = Map::new();
    if let Some(Value::Object(ipam)) = recorded.get("IPAMConfig") {
        let configured = ipam.values().any(|v| match v {
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            _ => true,
        });
        if configured {
            out.insert("IPAMConfig".into(), Value::Object(ipam.clone()));
        }
    }
    if let Some(Value::Array(links)) = recorded.get("Links") {
        if !links.is_empty() {
            out.insert("Links".into(), Value::Array(links.clone()));
        }
    }
    // The default bridge refuses aliases.
    if network != "bridge" {
        if let Some(Value::Array(aliases)) = recorded.get("Aliases") {
            let own: Vec<Value> = aliases
                .iter()
                .filter(|a| a.as_str().is_some_and(|a| !implicit_aliases.contains(&a)))
                .cloned()
                .collect();
            if !own.is_empty() {
                out.insert("Aliases".into(), Value::Array(own));
            }
        }
    }
    if let Some(Value::Object(opts)) = recorded.get("DriverOpts") {
        if !opts.is_empty() {
            out.insert("DriverOpts".into(), Value::Object(opts.clone()));
        }
    }
    // API 1.48+: a user setting, zero by default.
    if let Some(priority) = recorded.get("GwPriority").filter(|p| p.as_i64() != Some(0)) {
        if !priority.is_null() {
            out.insert("GwPriority".into(), priority.clone());
        }
    }
    Value::Object(out)
}

/// `None` for a missing or null field.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn str_at_map<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    m.get(key).and_then(Value::as_str)
}

fn obj_at<'v>(v: &'v Value, key: &str) -> Option<&'v Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

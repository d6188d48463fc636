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
    // A tmpfs hides the image volume at its destination; a volume there would collide with it.
    if let Some(Value::Object(tmpfs)) = host.get("Tmpfs") {
        covered.extend(tmpfs.keys().cloned());
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
    // Engines report in `Config.MacAddress` only a configured MAC (moby copies the primary
    // endpoint's `DesiredMacAddress` there), never a generated one (except 25.0.0–25.0.1,
    // moby#47228). A configured MAC on another network is not visible in inspect at all.
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
    let networks = match container.pointer("/NetworkSettings/Networks") {
        Some(Value::Object(networks)) if !networks.is_empty() => networks,
        _ => {
            // No endpoint to carry it: the engine migrates the container-wide field itself.
            if let Some(mac) = user_mac {
                config.insert("MacAddress".into(), json!(mac));
            }
            return plan;
        }
    };

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

#[cfg(test)]
mod tests {
    //! Table tests on inspect JSON recorded from a real engine (tests/data/inspect/README.md).

    use super::*;

    const FULL_ID: &str = "0bda1f9e9e5694cc94123bc63bc4ac3687b6ef16c3d7f8fe24e886ade4e811f0";
    const IMAGE_ID: &str =
        "sha256:1d206adcfe371d5808e0b59c2818ddde6d281e9986c9eabeba1847a1d0d81100";
    const NEW_REF: &str = "127.0.0.1:5000/app:latest";
    const NOW: &str = "2026-11-29T06:40:00Z";
    const OLD_API: (u32, u32) = (1, 41);
    const NEW_API: (u32, u32) = (1, 44);

    fn recorded(name: &str) -> Value {
        let text = match name {
            "full" => include_str!("../../tests/data/inspect/container-full.json"),
            "ep" => include_str!("../../tests/data/inspect/container-ep.json"),
            "consumer" => include_str!("../../tests/data/inspect/container-consumer.json"),
            "db" => include_str!("../../tests/data/inspect/container-db.json"),
            "app" => include_str!("../../tests/data/inspect/container-app.json"),
            "mac" => include_str!("../../tests/data/inspect/container-mac.json"),
            "image" => include_str!("../../tests/data/inspect/image-v1.json"),
            other => panic!("no recording {other}"),
        };
        serde_json::from_str(text).expect("recordings are valid JSON")
    }

    fn names(id: &str) -> Option<String> {
        (id == FULL_ID).then(|| "/wdtest-rec-full".to_string())
    }

    fn try_plan(
        container: &Value,
        image: &Value,
        api: (u32, u32),
    ) -> Result<RecreatePlan, RecreateError> {
        plan(&RecreateInput {
            container,
            old_image: image,
            new_image_ref: NEW_REF,
            api_version: api,
            updated_at: NOW,
            name_of: &names,
        })
    }

    /// The plan for a recorded container at an API version.
    fn check(name: &str, api: (u32, u32)) -> RecreatePlan {
        try_plan(&recorded(name), &recorded("image"), api).expect("plan")
    }

    /// The plan for a recorded container edited first.
    fn check_edited(name: &str, api: (u32, u32), edit: impl FnOnce(&mut Value)) -> RecreatePlan {
        let mut c = recorded(name);
        edit(&mut c);
        try_plan(&c, &recorded("image"), api).expect("plan")
    }

    #[test]
    fn name_image_and_previous_image() {
        let p = check("full", OLD_API);
        assert_eq!(p.name, "wdtest-rec-full");
        assert_eq!(p.body["Image"], NEW_REF);
        assert_eq!(p.previous_image, IMAGE_ID);
    }

    #[test]
    fn image_env_is_subtracted_and_user_env_kept() {
        // PATH=/bin equals the image's entry: indistinguishable from the default, so it follows
        // the new image. APP_VERSION=2 overrides the image's APP_VERSION=1 and stays.
        let p = check("full", OLD_API);
        assert_eq!(p.body["Env"], json!(["USER_VAR=x", "APP_VERSION=2"]));
        let p = check("db", OLD_API);
        assert!(
            p.body.get("Env").is_none(),
            "only image env: {}",
            p.body["Env"]
        );
    }

    #[test]
    fn image_labels_are_subtracted_and_ours_added() {
        let p = check("full", OLD_API);
        assert_eq!(
            p.body["Labels"],
            json!({
                "app.role": "web",
                "watchdocker.previous-image": IMAGE_ID,
                "watchdocker.updated-at": NOW,
            })
        );
        let p = check_edited("db", OLD_API, |c| c["Config"]["Labels"] = Value::Null);
        assert_eq!(p.body["Labels"][labels::PREVIOUS_IMAGE], IMAGE_ID);
    }

    #[test]
    fn image_cmd_entrypoint_healthcheck_volumes_are_subtracted() {
        let p = check("db", OLD_API);
        for key in [
            "Cmd",
            "Entrypoint",
            "Healthcheck",
            "Volumes",
            "WorkingDir",
            "User",
            "Hostname",
        ] {
            assert!(p.body.get(key).is_none(), "{key}: {}", p.body[key]);
        }
        // Image VOLUME /data is subtracted, `-v /anon` is the user's.
        let p = check("full", OLD_API);
        assert_eq!(p.body["Volumes"], json!({ "/anon": {} }));
        assert_eq!(p.body["WorkingDir"], "/tmp");
        assert_eq!(p.body["User"], "1000:1000");
    }

    #[test]
    fn exposed_ports_follow_the_image_plus_published_ones() {
        let p = check("full", OLD_API);
        assert_eq!(
            p.body["ExposedPorts"],
            json!({ "80/tcp": {}, "8081/udp": {} })
        );
        assert!(check("db", OLD_API).body.get("ExposedPorts").is_none());
    }

    #[test]
    fn user_healthcheck_fields_survive_one_by_one() {
        let p = check_edited("full", OLD_API, |c| {
            c["Config"]["Healthcheck"]["Interval"] = json!(10_000_000_000u64);
            c["Config"]["Healthcheck"]["Retries"] = json!(7);
        });
        assert_eq!(
            p.body["Healthcheck"],
            json!({ "Interval": 10_000_000_000u64, "Retries": 7 })
        );
        let p = check_edited("full", OLD_API, |c| {
            c["Config"]["Healthcheck"] = json!({ "Test": ["NONE"] })
        });
        assert_eq!(p.body["Healthcheck"], json!({ "Test": ["NONE"] }));
    }

    #[test]
    fn entrypoint_override_keeps_cmd_as_inspected() {
        let p = check("ep", OLD_API);
        assert_eq!(p.body["Entrypoint"], json!(["/bin/sh"]));
        assert_eq!(
            p.body["Cmd"],
            json!(["-c", "trap 'exit 0' TERM; while :; do sleep 1; done"])
        );
        // Even a Cmd equal to the image's is the user's once the entrypoint is overridden.
        let p = check_edited("ep", OLD_API, |c| {
            c["Config"]["Cmd"] = recorded("image")["Config"]["Cmd"].clone();
        });
        assert_eq!(p.body["Cmd"], recorded("image")["Config"]["Cmd"]);
    }

    #[test]
    fn user_cmd_with_image_entrypoint_keeps_only_cmd() {
        let mut image = recorded("image");
        image["Config"]["Entrypoint"] = json!(["/entry"]);
        let mut c = recorded("db");
        c["Config"]["Entrypoint"] = json!(["/entry"]);
        c["Config"]["Cmd"] = json!(["serve"]);
        let p = try_plan(&c, &image, OLD_API).expect("plan");
        assert!(p.body.get("Entrypoint").is_none());
        assert_eq!(p.body["Cmd"], json!(["serve"]));
    }

    #[test]
    fn empty_entrypoint_is_never_sent() {
        for name in ["full", "ep", "consumer", "db", "app", "mac"] {
            for api in [OLD_API, NEW_API] {
                assert_ne!(
                    check(name, api).body.get("Entrypoint"),
                    Some(&json!([])),
                    "{name}"
                );
            }
        }
        // A cleared image entrypoint (`--entrypoint ""`) stays cleared, the way the CLI says it.
        let mut image = recorded("image");
        image["Config"]["Entrypoint"] = json!(["/entry"]);
        let mut c = recorded("db");
        c["Config"]["Entrypoint"] = json!([]);
        let p = try_plan(&c, &image, OLD_API).expect("plan");
        assert_eq!(p.body["Entrypoint"], json!([""]));
        assert_eq!(p.body["Cmd"], c["Config"]["Cmd"]);
    }

    #[test]
    fn hostname_dropped_when_short_id_kept_when_explicit() {
        assert!(check("full", OLD_API).body.get("Hostname").is_none());
        let p = check("ep", OLD_API);
        assert_eq!(p.body["Hostname"], "myhost");
        assert_eq!(p.body["Domainname"], "example.test");
        let p = check_edited("ep", OLD_API, |c| {
            c["HostConfig"]["UTSMode"] = json!("host")
        });
        assert!(p.body.get("Hostname").is_none());
        assert!(p.body.get("Domainname").is_none());
    }

    #[test]
    fn host_config_is_kept_verbatim() {
        let old = recorded("full");
        let p = check("full", OLD_API);
        for key in [
            "RestartPolicy",
            "LogConfig",
            "CapAdd",
            "Sysctls",
            "Tmpfs",
            "ExtraHosts",
            "Dns",
            "Init",
            "ShmSize",
            "PortBindings",
            "AutoRemove",
            "MaskedPaths",
            "NetworkMode",
        ] {
            assert_eq!(p.body["HostConfig"][key], old["HostConfig"][key], "{key}");
        }
        assert_eq!(p.body["StopTimeout"], 42);
        assert!(p.body.get("Id").is_none() && p.body.get("State").is_none());
    }

    #[test]
    fn anonymous_volumes_are_reused_by_name() {
        let p = check("full", OLD_API);
        let host = &p.body["HostConfig"];
        assert_eq!(
            host["Binds"],
            json!([
                "wdtest-rec-named:/named",
                "/tmp/wdtest-rec.O5Wx/bind:/bind:ro",
                "7b88e39d14bb1ad7ffb31e2094b621064bae4378c705ea3340b53179cfe45ab0:/anon",
                "35c6b6319322cf8f53e121a3074579980da5567bbfd5ba7300d8f1a8f6f0de3e:/data",
            ])
        );
        assert_eq!(
            host["Mounts"],
            json!([
                { "Type": "volume", "Target": "/anonmount",
                  "Source": "a26c70e4fbb4482c1bdb67fb62d61de7988c132f6c6874243e50b089a62869f4" },
                { "Type": "volume", "Source": "wdtest-rec-mnt", "Target": "/mnt2" },
            ])
        );
        let mut destinations: Vec<&str> = host["Binds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(bind_destination)
            .chain(
                host["Mounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["Target"].as_str()),
            )
            .collect();
        let count = destinations.len();
        destinations.sort_unstable();
        destinations.dedup();
        assert_eq!(
            destinations.len(),
            count,
            "a destination twice: {destinations:?}"
        );

        // Binds was null on a container without any: created with the image volume only.
        let p = check("db", OLD_API);
        assert_eq!(
            p.body["HostConfig"]["Binds"],
            json!(["e66f72a6f6a271b50f9a798c72c3ed20d11abbb30ffc7b9da1753165e71d775b:/data"])
        );
    }

    #[test]
    fn a_tmpfs_destination_gets_no_volume() {
        let p = check_edited("db", OLD_API, |c| {
            c["HostConfig"]["Tmpfs"] = json!({ "/data": "size=1m" });
        });
        assert!(p.body["HostConfig"].get("Binds").is_none_or(Value::is_null));
    }

    #[test]
    fn endpoints_keep_user_settings_only() {
        let p = check("full", NEW_API);
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"],
            json!({
                "wdtest-rec-net1": {
                    "IPAMConfig": { "IPv4Address": "172.31.250.10" },
                    "Aliases": ["web"],
                },
                "wdtest-rec-net2": {
                    "IPAMConfig": { "IPv4Address": "172.31.251.10" },
                    "Aliases": ["web2"],
                },
            })
        );
        assert!(p.connect_after_create.is_empty());
        assert!(p.body.get("MacAddress").is_none());
    }

    #[test]
    fn below_1_44_one_network_at_create_and_the_rest_after() {
        let p = check("full", OLD_API);
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"],
            json!({ "wdtest-rec-net1": {
                "IPAMConfig": { "IPv4Address": "172.31.250.10" },
                "Aliases": ["web"],
            } })
        );
        assert_eq!(
            p.connect_after_create,
            vec![(
                "wdtest-rec-net2".to_string(),
                json!({ "IPAMConfig": { "IPv4Address": "172.31.251.10" }, "Aliases": ["web2"] })
            )]
        );
        // The primary is the NetworkMode one even when it sorts last.
        let p = check_edited("full", OLD_API, |c| {
            c["HostConfig"]["NetworkMode"] = json!("wdtest-rec-net2")
        });
        let at_create = p.body["NetworkingConfig"]["EndpointsConfig"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(at_create.keys().collect::<Vec<_>>(), ["wdtest-rec-net2"]);
        assert_eq!(p.connect_after_create[0].0, "wdtest-rec-net1");
    }

    #[test]
    fn network_mode_default_is_the_bridge_and_a_left_network_is_not_rejoined() {
        let p = check("app", OLD_API);
        assert_eq!(p.body["HostConfig"]["NetworkMode"], "default");
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"],
            json!({ "bridge": {} })
        );
        // Disconnected from the bridge, connected to a user network: create on that one.
        let p = check_edited("app", OLD_API, |c| {
            let ep = c["NetworkSettings"]["Networks"]["bridge"].take();
            c["NetworkSettings"]["Networks"] = json!({ "wdtest-rec-net1": ep });
        });
        assert_eq!(p.body["HostConfig"]["NetworkMode"], "wdtest-rec-net1");
        assert!(p.body["NetworkingConfig"]["EndpointsConfig"]["wdtest-rec-net1"].is_object());
    }

    #[test]
    fn no_aliases_on_the_default_bridge() {
        let p = check_edited("app", NEW_API, |c| {
            c["NetworkSettings"]["Networks"]["bridge"]["Aliases"] = json!(["x", "793b5aa83e04"]);
        });
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"]["bridge"],
            json!({})
        );
    }

    #[test]
    fn endpoint_links_and_explicit_aliases_are_kept_minus_short_id_and_name() {
        let p = check_edited("ep", NEW_API, |c| {
            let aliases = &mut c["NetworkSettings"]["Networks"]["wdtest-rec-net1"]["Aliases"];
            if let Some(a) = aliases.as_array_mut() {
                a.push(json!("wdtest-rec-ep"));
            }
        });
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"]["wdtest-rec-net1"],
            json!({ "Links": ["wdtest-rec-full:upstream"], "Aliases": ["myhost"] })
        );
    }

    #[test]
    fn user_mac_goes_where_the_api_version_wants_it() {
        let p = check("mac", OLD_API);
        assert_eq!(p.body["MacAddress"], "02:42:ac:11:00:99");
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"]["bridge"],
            json!({})
        );
        let p = check("mac", NEW_API);
        assert!(p.body.get("MacAddress").is_none());
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"]["bridge"],
            json!({ "MacAddress": "02:42:ac:11:00:99" })
        );
        // A generated MAC (no Config.MacAddress) is left to the engine.
        for api in [OLD_API, NEW_API] {
            let p = check("app", api);
            assert!(p.body.get("MacAddress").is_none());
            assert_eq!(
                p.body["NetworkingConfig"]["EndpointsConfig"]["bridge"],
                json!({})
            );
        }
    }

    #[test]
    fn container_network_mode_is_rewritten_by_name_and_its_settings_dropped() {
        for api in [OLD_API, NEW_API] {
            let p = check("consumer", api);
            let host = &p.body["HostConfig"];
            assert_eq!(host["NetworkMode"], "container:wdtest-rec-full");
            for key in [
                "PortBindings",
                "PublishAllPorts",
                "Dns",
                "DnsOptions",
                "DnsSearch",
                "ExtraHosts",
                "Links",
            ] {
                assert!(host.get(key).is_none(), "{key}");
            }
            for key in ["Hostname", "Domainname", "ExposedPorts", "MacAddress"] {
                assert!(p.body.get(key).is_none(), "{key}");
            }
            assert_eq!(p.body["NetworkingConfig"]["EndpointsConfig"], json!({}));
            assert!(p.connect_after_create.is_empty());
        }
    }

    #[test]
    fn container_network_mode_with_a_gone_provider_is_an_error() {
        let c = check_edited_err("consumer", |c| {
            c["HostConfig"]["NetworkMode"] = json!("container:deadbeef");
        });
        assert_eq!(
            c,
            RecreateError::UnknownNetworkProvider {
                container: "wdtest-rec-consumer".into(),
                provider: "deadbeef".into(),
            }
        );
        assert!(c.to_string().contains("wdtest-rec-consumer"));
    }

    fn check_edited_err(name: &str, edit: impl FnOnce(&mut Value)) -> RecreateError {
        let mut c = recorded(name);
        edit(&mut c);
        try_plan(&c, &recorded("image"), OLD_API).expect_err("an error")
    }

    #[test]
    fn links_are_rewritten_to_name_and_alias() {
        let p = check("app", OLD_API);
        assert_eq!(p.body["HostConfig"]["Links"], json!(["wdtest-rec-db:db"]));
        let p = check_edited("app", OLD_API, |c| {
            c["HostConfig"]["Links"] = json!(["/db:/app/db", "cache:cache", 5]);
        });
        assert_eq!(
            p.body["HostConfig"]["Links"],
            json!(["db:db", "cache:cache"])
        );
    }

    #[test]
    fn missing_parts_are_named_errors() {
        let missing = |edit: fn(&mut Value)| check_edited_err("full", edit);
        let field = |e: RecreateError| match e {
            RecreateError::MissingField { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(missing(|c| c["Config"] = Value::Null)), "Config");
        assert_eq!(
            field(missing(|c| c["HostConfig"] = json!([]))),
            "HostConfig"
        );
        assert_eq!(field(missing(|c| c["Name"] = Value::Null)), "Name");
        assert_eq!(field(missing(|c| c["Id"] = json!(3))), "Id");
        let e = try_plan(&json!(null), &json!(null), OLD_API).expect_err("nothing to plan");
        assert_eq!(
            e.to_string(),
            "recreate <unnamed container>: inspect data has no usable `Name`"
        );
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        let odd = json!({
            "Id": "abc", "Name": "/x", "Image": "sha256:1",
            "Config": { "Env": 5, "Labels": "x", "Cmd": {}, "Entrypoint": 1, "Volumes": [],
                        "ExposedPorts": null, "Healthcheck": [], "Hostname": 7, "MacAddress": 3 },
            "HostConfig": { "NetworkMode": 5, "Links": "a", "Binds": {}, "Mounts": [1, null, {}],
                            "PortBindings": [] },
            "Mounts": [null, { "Type": "volume" }, { "Type": "volume", "Name": "v", "Destination": "/v" }],
            "NetworkSettings": { "Networks": { "n": null, "m": { "Aliases": [1, "abc", "ok"], "IPAMConfig": [] } } },
        });
        for image in [
            json!(null),
            json!({ "Config": { "Env": {}, "Labels": [] } }),
            recorded("image"),
        ] {
            for api in [OLD_API, NEW_API] {
                let p = try_plan(&odd, &image, api).expect("plan");
                assert_eq!(p.name, "x");
            }
        }
        let p = try_plan(&odd, &json!(null), NEW_API).expect("plan");
        assert_eq!(
            p.body["NetworkingConfig"]["EndpointsConfig"]["m"],
            json!({ "Aliases": ["ok"] })
        );
        // An unreadable Binds is replaced by the volumes the container really uses.
        assert_eq!(p.body["HostConfig"]["Binds"], json!(["v:/v"]));
    }

    #[test]
    fn stop_timeout_is_the_containers_own_when_set() {
        let default = Duration::from_secs(10);
        assert_eq!(
            stop_timeout(&recorded("full"), default),
            Duration::from_secs(42)
        );
        assert_eq!(stop_timeout(&recorded("db"), default), default);
        assert_eq!(
            stop_timeout(&json!({ "Config": { "StopTimeout": -1 } }), default),
            default
        );
        assert_eq!(stop_timeout(&json!(null), default), default);
    }

    #[test]
    fn health_wait_covers_the_healthchecks_own_schedule() {
        let s = Duration::from_secs;
        // Recorded: interval 5s, start period 0, retries 0 → 3: 0 + 5 × 4.
        let full = recorded("full");
        assert_eq!(health_wait(&full, s(10)), Some(s(20)));
        assert_eq!(health_wait(&full, s(60)), Some(s(60)));
        let table = [
            (json!({ "Test": ["CMD", "true"] }), Some(s(120))),
            (
                json!({ "Test": ["CMD", "true"], "Interval": 2_000_000_000u64,
                        "StartPeriod": 10_000_000_000u64, "Retries": 5 }),
                Some(s(22)),
            ),
            (json!({ "Test": ["NONE"] }), None),
            (json!({ "Test": [] }), None),
            (json!(null), None),
        ];
        for (health, want) in table {
            assert_eq!(
                health_wait(&json!({ "Config": { "Healthcheck": health } }), s(1)),
                want,
                "{health}"
            );
            assert_eq!(
                health_wait(&json!({ "Healthcheck": health }), s(1)),
                want,
                "{health}"
            );
        }
        assert_eq!(health_wait(&json!({}), s(1)), None);
    }
}

//! Configuration: YAML file, then `WATCH_*` environment overrides, then command-line flags, into a
//! validated, typed `Config` (SPEC.md §3). Owns parsing and validation of every key; knows nothing of
//! the engine, registries or the API.
//!
//! All three layers write into one tree of text values shaped by `SCHEMA` (seeded with the
//! defaults), and one conversion turns that tree into `Config`, so a value is validated the same way
//! whichever layer set it, and every error names the key, the bad value, what is allowed and the
//! layer it came from (`file ./config.yaml`, `env WATCH_SCAN_INTERVAL`, `flag scan.interval`).
//!
//! - YAML keys are exact (`cacheTTL`); an unknown key is an error.
//! - `WATCH_<SECTION>_<KEY>` is case-insensitive and underscores inside a key are optional
//!   (`WATCH_SCAN_CACHETTL` = `WATCH_SCAN_CACHE_TTL`); list items by index (`WATCH_REGISTRY_AUTH_0_HOST`);
//!   lists of strings also take `a,b,c`. An unknown `WATCH_*` variable is a warning.
//! - Every secret key `k` may instead be given as `kFile` (a path whose content, minus one trailing
//!   newline, is the value). Setting both in one layer is an error.
//! - `DOCKER_HOST`, when set, replaces the built-in `docker.host` (below the file, env and flags),
//!   because that is what every Docker client does.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
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
                        // Stored normalised (SPEC §3: the three Docker Hub names are one registry).
                        host: "docker.io".into(),
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

// ----------------------------------------------------------------------------------------------
// Loading: public surface.

/// What [`load`] reads besides the file. The environment is passed in (not read here) so that tests
/// need not touch the process environment.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// `--config FILE`; None = `WATCH_CONFIG`, else `./config.yaml` if present, else the defaults.
    pub file: Option<PathBuf>,
    /// The environment; only `WATCH_*` and `DOCKER_HOST` are read.
    pub env: Vec<(String, String)>,
    /// Dotted-key overrides from the command line, e.g. `("server.addr", ":9090")`.
    pub flags: Vec<(String, String)>,
}

impl fmt::Debug for LoadOptions {
    /// Names only: environment values and flags may carry secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        let flags: Vec<&str> = self.flags.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("LoadOptions")
            .field("file", &self.file)
            .field("env", &env)
            .field("flags", &flags)
            .finish()
    }
}

/// A validated configuration, the startup warnings it produced, and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Things worth logging at startup (e.g. an unknown `WATCH_*` variable); never fatal.
    pub warnings: Vec<String>,
    /// The YAML file that was read; None when only the defaults, env and flags apply.
    pub source: Option<PathBuf>,
}

/// Where a value came from; named in every error so the operator knows which layer to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Default,
    File(PathBuf),
    /// The variable's name, e.g. `WATCH_SCAN_INTERVAL`.
    Env(String),
    /// The dotted key as given on the command line.
    Flag(String),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => f.write_str("built-in default"),
            Layer::File(p) => write!(f, "file {}", p.display()),
            Layer::Env(name) => write!(f, "env {name}"),
            Layer::Flag(key) => write!(f, "flag {key}"),
        }
    }
}

/// A configuration the process must refuse to start with. Display is one line naming the key, the
/// bad value (never a secret's) and what is allowed, followed by the layer that set it. I/O causes
/// are part of that line (so a plain `{}` is enough) and are not repeated by `source()`.
#[derive(Debug)]
pub enum ConfigError {
    /// The chosen config file could not be read.
    ReadFile { path: PathBuf, error: io::Error },
    /// The config file is not valid YAML; `message` carries the line and column.
    Syntax { path: PathBuf, message: String },
    /// A key that does not exist; `known` lists the keys valid at that place.
    UnknownKey {
        key: String,
        known: Vec<&'static str>,
        hint: Option<&'static str>,
        layer: Layer,
    },
    /// A value that is not allowed; `problem` shows the value and what is allowed.
    Invalid {
        key: String,
        problem: String,
        layer: Layer,
    },
    /// A `*File` secret whose file could not be read (the content is never shown).
    SecretFile {
        key: String,
        path: PathBuf,
        error: io::Error,
        layer: Layer,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::ReadFile { .. } | ConfigError::Syntax { .. } => None,
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::SecretFile { key, .. } => Some(key),
        }
    }
}

struct LayerSuffix<'a>(&'a Layer);

impl fmt::Display for LayerSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Layer::Default => Ok(()),
            other => write!(f, " [{other}]"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ReadFile { path, error } => {
                write!(f, "config file {}: cannot read: {error}", path.display())
            }
            ConfigError::Syntax { path, message } => {
                write!(f, "config file {}: invalid YAML: {message}", path.display())
            }
            ConfigError::UnknownKey {
                key,
                known,
                hint,
                layer,
            } => {
                write!(f, "{key}: unknown key")?;
                if let Some(h) = hint {
                    write!(f, " (did you mean {h}?)")?;
                }
                write!(f, " (known: {}){}", known.join(", "), LayerSuffix(layer))
            }
            ConfigError::Invalid {
                key,
                problem,
                layer,
            } => write!(f, "{key}: {problem}{}", LayerSuffix(layer)),
            ConfigError::SecretFile {
                key,
                path,
                error,
                layer,
            } => write!(
                f,
                "{key}: cannot read {:?}: {error}{}",
                path.display().to_string(),
                LayerSuffix(layer)
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads the configuration: defaults, then `DOCKER_HOST`, then the YAML file, then `WATCH_*`
/// variables from `opts.env`, then `opts.flags`; validates the result.
pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let mut tree = tree_of(&Config::default(), false);

    if let Some((name, value)) = opts.env.iter().find(|(k, _)| k == "DOCKER_HOST") {
        if !value.trim().is_empty() {
            let ov = Override {
                path: vec![Seg::Key("docker"), Seg::Key("host")],
                shape: Shape::Leaf,
                file: false,
                value: value.clone(),
                layer: Layer::Env(name.clone()),
            };
            apply_layer(&mut tree, vec![ov])?;
        }
    }

    let source = choose_file(opts);
    if let Some(path) = &source {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
            path: path.clone(),
            error,
        })?;
        let layer = parse_yaml(&text, path)?;
        if let Node::Map(base) = &mut tree {
            merge(base, layer);
        }
    }

    let env = env_overrides(&opts.env, &mut warnings);
    apply_layer(&mut tree, env)?;
    let flags = flag_overrides(&opts.flags)?;
    apply_layer(&mut tree, flags)?;

    let config = convert(&tree)?;
    Ok(Loaded {
        config,
        warnings,
        source,
    })
}

/// [`load`] with the process environment.
pub fn load_from_process(
    file: Option<PathBuf>,
    flags: Vec<(String, String)>,
) -> Result<Loaded, ConfigError> {
    let mut env = Vec::new();
    let mut skipped = Vec::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => env.push((k, v)),
            (Ok(k), Err(_)) if k.to_ascii_uppercase().starts_with("WATCH_") => skipped.push(k),
            _ => {}
        }
    }
    let mut loaded = load(&LoadOptions { file, env, flags })?;
    for k in skipped {
        loaded.warnings.push(format!(
            "environment variable {k} ignored: its value is not UTF-8"
        ));
    }
    Ok(loaded)
}

/// `--config`, else `WATCH_CONFIG`, else `./config.yaml` when it exists.
fn choose_file(opts: &LoadOptions) -> Option<PathBuf> {
    if let Some(f) = &opts.file {
        return Some(f.clone());
    }
    let from_env = opts
        .env
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("WATCH_CONFIG") && !v.trim().is_empty());
    if let Some((_, v)) = from_env {
        return Some(PathBuf::from(v.trim()));
    }
    let local = Path::new("./config.yaml");
    local.is_file().then(|| local.to_path_buf())
}

/// The cron parser every schedule uses: 5 fields, or 6 with leading seconds; POSIX weekdays
/// (0 and 7 = Sunday); no year field.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
}

/// Parses `90s`, `10m`, `1h30m`, `2d`, `500ms`, `0s` (and a bare `0`). None when malformed or
/// absurdly large.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let s = text.trim().to_ascii_lowercase();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.as_str();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// The inverse of [`parse_duration`], in the largest units: `1h30m`, `10m`, `500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// The effective configuration as YAML with the same key names as `config.yaml`; a secret that is
/// set shows as `***`, one that is not as `""`.
pub fn render_effective(cfg: &Config) -> String {
    let mut out = String::new();
    if let Node::Map(entries) = tree_of(cfg, true) {
        emit_map(&mut out, &entries, 0);
    }
    out
}

// ----------------------------------------------------------------------------------------------
// The schema: every key, its shape, in the order config.yaml documents them.

#[derive(Clone, Copy)]
enum Shape {
    /// One value.
    Leaf,
    /// One value that may also be given as `<name>File`.
    Secret,
    /// A list of strings (`[a, b]`, or `a,b` from env and flags).
    List,
    Section(&'static [Field]),
    /// A list of objects with these fields.
    Objects(&'static [Field]),
}

struct Field {
    name: &'static str,
    shape: Shape,
}

const fn f(name: &'static str, shape: Shape) -> Field {
    Field { name, shape }
}

use Shape::{Leaf as L, List as LS, Objects as O, Secret as S, Section as SEC};

const SERVER: &[Field] = &[
    f("addr", L),
    f("token", S),
    f("readToken", S),
    f("allowUnauthenticated", L),
    f("ui", L),
    f("readTimeout", L),
    f("maxConnections", L),
];
const DOCKER: &[Field] = &[f("host", L), f("includeStopped", L), f("apiVersion", L)];
const SCAN: &[Field] = &[
    f("interval", L),
    f("cron", L),
    f("initialScanOnStart", L),
    f("concurrency", L),
    f("cacheTTL", L),
    f("timezone", L),
    f("jitter", L),
    f("newerVersions", L),
];
const UPDATE: &[Field] = &[
    f("enabled", L),
    f("autoUpdateCron", L),
    f("allowComposeUpdate", L),
    f("recreateStrategy", L),
    f("removeOldContainer", L),
    f("timezone", L),
    f("stopTimeout", L),
    f("healthTimeout", L),
    f("settleTime", L),
    f("rollback", L),
    f("concurrency", L),
    f("cleanupImages", L),
];
const POLICY: &[Field] = &[
    f("skipLabels", LS),
    f("onlyLabels", LS),
    f("excludeLabels", LS),
    f("skipLocalBuild", L),
    f("skipPinnedDigest", L),
    f("skipSemverPinned", L),
    f("floatingTags", LS),
    f("labelEnable", L),
];
const AUTH: &[Field] = &[f("host", L), f("username", L), f("password", S)];
const REGISTRY: &[Field] = &[
    f("auth", O(AUTH)),
    f("dockerConfig", L),
    f("insecure", LS),
    f("caFile", L),
    f("timeout", L),
    f("maxRetries", L),
];
const LOGGING: &[Field] = &[f("level", L), f("format", L)];
const METRICS: &[Field] = &[f("enabled", L)];
const WEBHOOK: &[Field] = &[f("url", S), f("events", LS), f("format", L)];
const NOTIFY: &[Field] = &[f("webhooks", O(WEBHOOK))];
const SCHEMA: &[Field] = &[
    f("server", SEC(SERVER)),
    f("docker", SEC(DOCKER)),
    f("scan", SEC(SCAN)),
    f("update", SEC(UPDATE)),
    f("policy", SEC(POLICY)),
    f("registry", SEC(REGISTRY)),
    f("logging", SEC(LOGGING)),
    f("metrics", SEC(METRICS)),
    f("notify", SEC(NOTIFY)),
];

// ----------------------------------------------------------------------------------------------
// The tree all layers write into. Values stay text until `convert`, so one parser per type serves
// YAML, env and flags alike. (No Debug: leaves may hold secrets.)

type Entries = Vec<(&'static str, Node)>;

#[derive(Clone)]
enum Node {
    Leaf(Leaf),
    List(Vec<Node>),
    Map(Entries),
}

#[derive(Clone)]
struct Leaf {
    text: String,
    from: Layer,
    style: Style,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Rendered as is (booleans, numbers); also everything read from YAML, env or flags.
    Plain,
    /// Rendered as a double-quoted string.
    Quoted,
    /// The text is the path of a file holding the secret (`*File` keys).
    File,
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Key comparison for env and flags: case and underscores do not matter.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn names(fields: &[Field]) -> Vec<&'static str> {
    fields.iter().map(|f| f.name).collect()
}

/// A known key that is probably what was meant: same letters ignoring case, or at most two edits.
fn suggest(fields: &[Field], wrong: &str) -> Option<&'static str> {
    let w = norm(wrong);
    let mut best: Option<(usize, &'static str)> = None;
    for f in fields {
        let d = edit_distance(&w, &norm(f.name));
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, f.name));
        }
    }
    best.map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ----------------------------------------------------------------------------------------------
// Layer 1: the YAML file.

fn parse_yaml(text: &str, path: &Path) -> Result<Entries, ConfigError> {
    use serde_norway::Value;
    let value: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: one_line(&e.to_string()),
    })?;
    let layer = Layer::File(path.to_path_buf());
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(m) => map_from_yaml(&m, SCHEMA, "", &layer),
        _ => Err(ConfigError::Invalid {
            key: "(top level)".into(),
            problem: format!(
                "expected a mapping of sections (allowed: {})",
                names(SCHEMA).join(", ")
            ),
            layer,
        }),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn map_from_yaml(
    m: &serde_norway::Mapping,
    fields: &'static [Field],
    prefix: &str,
    layer: &Layer,
) -> Result<Entries, ConfigError> {
    use serde_norway::Value;
    let mut out: Entries = Vec::new();
    for (k, v) in m {
        let name = match k {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => "(non-text key)".to_string(),
        };
        let exact = fields.iter().find(|f| f.name == name).map(|f| (f, false));
        let as_file = || {
            let base = name.strip_suffix("File")?;
            fields
                .iter()
                .find(|f| f.name == base && matches!(f.shape, Shape::Secret))
                .map(|f| (f, true))
        };
        let Some((field, file)) = exact.or_else(as_file) else {
            return Err(ConfigError::UnknownKey {
                key: join_key(prefix, &name),
                known: names(fields),
                hint: suggest(fields, &name),
                layer: layer.clone(),
            });
        };
        let key = join_key(prefix, field.name);
        if out.iter().any(|(n, _)| *n == field.name) {
            return Err(both_set(&key, field.name, layer));
        }
        let node = node_from_yaml(v, field.shape, &key, file, layer)?;
        out.push((field.name, node));
    }
    Ok(out)
}

fn both_set(key: &str, name: &str, layer: &Layer) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: format!("both {name} and {name}File are set (allowed: one of them)"),
        layer: layer.clone(),
    }
}

fn node_from_yaml(
    v: &serde_norway::Value,
    shape: Shape,
    key: &str,
    file: bool,
    layer: &Layer,
) -> Result<Node, ConfigError> {
    use serde_norway::Value;
    let invalid = |problem: String| ConfigError::Invalid {
        key: key.to_string(),
        problem,
        layer: layer.clone(),
    };
    match shape {
        Shape::Leaf | Shape::Secret => Ok(Node::Leaf(Leaf {
            text: yaml_scalar(v, key, layer)?,
            from: layer.clone(),
            style: if file { Style::File } else { Style::Plain },
        })),
        Shape::List => match v {
            Value::Null => Ok(Node::List(Vec::new())),
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    out.push(plain(
                        yaml_scalar(item, &format!("{key}[{i}]"), layer)?,
                        layer,
                    ));
                }
                Ok(Node::List(out))
            }
            other => Ok(split_list(&yaml_scalar(other, key, layer)?, layer)),
        },
        Shape::Section(fields) => match v {
            Value::Null => Ok(Node::Map(Vec::new())),
            Value::Mapping(m) => Ok(Node::Map(map_from_yaml(m, fields, key, layer)?)),
            _ => Err(invalid(format!(
                "expected a mapping (allowed keys: {})",
                names(fields).join(", ")
            ))),
        },
        Shape::Objects(fields) => match v {
            Value::Null => Ok(Node::List(Vec::new())),
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let item_key = format!("{key}[{i}]");
                    match item {
                        Value::Mapping(m) => {
                            out.push(Node::Map(map_from_yaml(m, fields, &item_key, layer)?))
                        }
                        _ => {
                            return Err(ConfigError::Invalid {
                                key: item_key,
                                problem: format!(
                                    "expected a mapping (allowed keys: {})",
                                    names(fields).join(", ")
                                ),
                                layer: layer.clone(),
                            })
                        }
                    }
                }
                Ok(Node::List(out))
            }
            _ => Err(invalid(format!(
                "expected a list of mappings (allowed keys: {})",
                names(fields).join(", ")
            ))),
        },
    }
}

fn yaml_scalar(v: &serde_norway::Value, key: &str, layer: &Layer) -> Result<String, ConfigError> {
    use serde_norway::Value;
    let what = match v {
        Value::Null => return Ok(String::new()),
        Value::Bool(b) => return Ok(b.to_string()),
        Value::Number(n) => return Ok(n.to_string()),
        Value::String(s) => return Ok(s.clone()),
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    };
    Err(ConfigError::Invalid {
        key: key.to_string(),
        problem: format!("expected a single value, found {what}"),
        layer: layer.clone(),
    })
}

fn plain(text: String, layer: &Layer) -> Node {
    Node::Leaf(Leaf {
        text,
        from: layer.clone(),
        style: Style::Plain,
    })
}

/// `a, b,c` → three items; empty text → an empty list.
fn split_list(text: &str, layer: &Layer) -> Node {
    Node::List(
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| plain(s.to_string(), layer))
            .collect(),
    )
}

/// A later layer's mapping replaces values and lists, and merges into sections.
fn merge(base: &mut Entries, over: Entries) {
    for (name, node) in over {
        match base.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => match node {
                Node::Map(o) => {
                    if let Node::Map(b) = slot {
                        merge(b, o);
                    } else {
                        *slot = Node::Map(o);
                    }
                }
                other => *slot = other,
            },
            None => base.push((name, node)),
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Layers 2 and 3: `WATCH_*` variables and command-line flags, as path overrides.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

struct Target {
    path: Vec<Seg>,
    /// The shape at the end of the path (`List` = the whole list, from a comma-separated value).
    shape: Shape,
    /// Set through `<secret>File`.
    file: bool,
}

struct Override {
    path: Vec<Seg>,
    shape: Shape,
    file: bool,
    value: String,
    layer: Layer,
}

fn path_key(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Finds the key that lowercase, underscore-free tokens spell: `["scan","cache","ttl"]` and
/// `["scan","cachettl"]` both reach `scan.cacheTTL`; numbers index lists.
fn resolve(fields: &'static [Field], toks: &[String]) -> Option<Target> {
    for field in fields {
        let want = norm(field.name);
        let want_file = format!("{want}file");
        let mut joined = String::new();
        for k in 1..=toks.len() {
            joined.push_str(&toks[k - 1]);
            if joined.len() > want_file.len() {
                break;
            }
            let rest = &toks[k..];
            let hit = joined == want;
            let hit_file = matches!(field.shape, Shape::Secret) && joined == want_file;
            if !hit && !hit_file {
                continue;
            }
            let here = Seg::Key(field.name);
            let found = match field.shape {
                Shape::Leaf | Shape::Secret => rest.is_empty().then(|| Target {
                    path: vec![here],
                    shape: field.shape,
                    file: hit_file,
                }),
                Shape::List => match rest {
                    [] => Some(Target {
                        path: vec![here],
                        shape: Shape::List,
                        file: false,
                    }),
                    [i] => i.parse().ok().map(|i| Target {
                        path: vec![here, Seg::Index(i)],
                        shape: Shape::Leaf,
                        file: false,
                    }),
                    _ => None,
                },
                Shape::Section(sub) => resolve(sub, rest).map(|mut t| {
                    t.path.insert(0, here);
                    t
                }),
                Shape::Objects(sub) => rest.split_first().and_then(|(i, rest)| {
                    let i: usize = i.parse().ok()?;
                    let mut t = resolve(sub, rest)?;
                    t.path.splice(0..0, [here, Seg::Index(i)]);
                    Some(t)
                }),
            };
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn env_overrides(env: &[(String, String)], warnings: &mut Vec<String>) -> Vec<Override> {
    let mut out = Vec::new();
    for (name, value) in env {
        let Some(tail) = name
            .get(..6)
            .filter(|p| p.eq_ignore_ascii_case("WATCH_"))
            .and_then(|_| name.get(6..))
        else {
            continue;
        };
        if tail.eq_ignore_ascii_case("CONFIG") {
            continue;
        }
        let toks: Vec<String> = tail
            .split('_')
            .filter(|t| !t.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        match resolve(SCHEMA, &toks) {
            Some(t) => out.push(Override {
                path: t.path,
                shape: t.shape,
                file: t.file,
                value: value.clone(),
                layer: Layer::Env(name.clone()),
            }),
            None => warnings.push(format!(
                "unknown environment variable {name} ignored (names look like WATCH_SCAN_INTERVAL or WATCH_REGISTRY_AUTH_0_HOST)"
            )),
        }
    }
    out
}

fn flag_overrides(flags: &[(String, String)]) -> Result<Vec<Override>, ConfigError> {
    let mut out = Vec::new();
    for (key, value) in flags {
        let dotted = key.replace('[', ".").replace(']', "");
        let toks: Vec<String> = dotted
            .split('.')
            .filter(|t| !t.is_empty())
            .map(norm)
            .collect();
        let Some(t) = resolve(SCHEMA, &toks) else {
            // Name the keys of the section the flag reaches into, else the sections.
            let section = toks.first().and_then(|first| {
                SCHEMA.iter().find_map(|f| match f.shape {
                    Shape::Section(sub) if norm(f.name) == *first => Some(sub),
                    _ => None,
                })
            });
            let fields = section.unwrap_or(SCHEMA);
            let last = toks.last().map(String::as_str).unwrap_or("");
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                known: names(fields),
                hint: suggest(fields, last),
                layer: Layer::Flag(key.clone()),
            });
        };
        out.push(Override {
            path: t.path,
            shape: t.shape,
            file: t.file,
            value: value.clone(),
            layer: Layer::Flag(key.clone()),
        });
    }
    Ok(out)
}

/// Applies one layer's overrides; a key set twice within the layer (e.g. `WATCH_SCAN_CACHETTL` and
/// `WATCH_SCAN_CACHE_TTL`, or a secret and its `*File`) is an error. Sorting by path applies a whole
/// list before its items and item 1 before item 2.
fn apply_layer(tree: &mut Node, mut ovs: Vec<Override>) -> Result<(), ConfigError> {
    ovs.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in ovs.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(ConfigError::Invalid {
                key: path_key(&pair[0].path),
                problem: format!(
                    "set twice, by {} and {} (allowed: one of them)",
                    pair[0].layer, pair[1].layer
                ),
                layer: pair[1].layer.clone(),
            });
        }
    }
    for ov in ovs {
        let new = match ov.shape {
            Shape::List => split_list(&ov.value, &ov.layer),
            _ => Node::Leaf(Leaf {
                text: ov.value.clone(),
                from: ov.layer.clone(),
                style: if ov.file { Style::File } else { Style::Plain },
            }),
        };
        set_in(tree, &ov.path, 0, new, &ov)?;
    }
    Ok(())
}

fn set_in(
    node: &mut Node,
    path: &[Seg],
    depth: usize,
    new: Node,
    ov: &Override,
) -> Result<(), ConfigError> {
    let Some(seg) = path.get(depth) else {
        *node = new;
        return Ok(());
    };
    let empty_for = |next: Option<&Seg>| match next {
        Some(Seg::Key(_)) => Node::Map(Vec::new()),
        Some(Seg::Index(_)) => Node::List(Vec::new()),
        None => plain(String::new(), &Layer::Default),
    };
    match (seg, node) {
        (Seg::Key(k), Node::Map(entries)) => {
            let pos = match entries.iter().position(|(n, _)| n == k) {
                Some(p) => p,
                None => {
                    entries.push((k, empty_for(path.get(depth + 1))));
                    entries.len() - 1
                }
            };
            set_in(&mut entries[pos].1, path, depth + 1, new, ov)
        }
        (Seg::Index(i), Node::List(items)) => {
            if *i > items.len() {
                return Err(ConfigError::Invalid {
                    key: path_key(&path[..depth]),
                    problem: format!(
                        "item {i} given without item {} (items are numbered from 0 without gaps)",
                        items.len()
                    ),
                    layer: ov.layer.clone(),
                });
            }
            if *i == items.len() {
                items.push(empty_for(path.get(depth + 1)));
            }
            set_in(&mut items[*i], path, depth + 1, new, ov)
        }
        _ => Err(ConfigError::Invalid {
            key: path_key(path),
            problem: "does not fit the shape of the configuration".into(),
            layer: ov.layer.clone(),
        }),
    }
}

// ----------------------------------------------------------------------------------------------
// Value parsers: each returns the problem text (showing the value and what is allowed).

/// Longest accepted duration, so that schedulers never overflow a clock.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

fn duration_in(s: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (examples: 30s, 10m, 1h)"))?;
    if d < min {
        return Err(format!(
            "{s:?} is too short (minimum: {})",
            format_duration(min)
        ));
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is too long (maximum: {})",
            format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!(
            "{s:?} is not a boolean (allowed: true, false, yes, no, 1, 0)"
        )),
    }
}

fn int_in(s: &str, min: u64, max: u64) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("{s:?} is out of range (allowed: {min} to {max})")),
        Err(_) => Err(format!(
            "{s:?} is not a whole number (allowed: {min} to {max})"
        )),
    }
}

fn parse_cron_opt(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    match parse_cron(s) {
        Ok(_) => Ok(Some(s.to_string())),
        Err(e) => Err(format!(
            "{s:?} is not a cron expression ({}; allowed: 5 fields like \"0 3 * * *\", or 6 with leading seconds, or empty)",
            one_line(&e.to_string()).trim_end_matches('.')
        )),
    }
}

fn parse_tz(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    match jiff::tz::TimeZone::get(s) {
        Ok(_) => Ok(Some(s.to_string())),
        Err(_) => Err(format!(
            "{s:?} is not a time zone (allowed: IANA names like UTC, Europe/Berlin, America/New_York, or empty)"
        )),
    }
}

fn parse_api_version(s: &str) -> Result<Option<(u32, u32)>, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let bad = || {
        format!("{s:?} is not an API version (allowed: auto, or 1.24 and up written as a quoted string like \"1.43\")")
    };
    let v = s.strip_prefix('v').unwrap_or(s);
    let (major, minor) = v.split_once('.').ok_or_else(bad)?;
    let major: u32 = major.parse().map_err(|_| bad())?;
    let minor: u32 = minor.parse().map_err(|_| bad())?;
    if major != 1 || minor < 24 {
        return Err(bad());
    }
    Ok(Some((major, minor)))
}

fn parse_addr(s: &str) -> Result<String, String> {
    let bad = || {
        format!("{s:?} is not a listen address (allowed: \":PORT\" for all interfaces, or HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        inner.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
    } else if host.contains(':')
        || host
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(bad());
    }
    Ok(s.to_string())
}

fn parse_docker_host(s: &str) -> Result<String, String> {
    let bad = || {
        format!("{s:?} is not an engine address (allowed: unix:///path/to/docker.sock or tcp://host:port)")
    };
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(bad());
        }
    } else if let Some(hostport) = s.strip_prefix("tcp://") {
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    } else {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Docker Hub has three names (SPEC §3); stored as `docker.io`. A `https://host/v1/` form, as found
/// in docker's config.json, is reduced to the host.
pub fn normalise_registry_host(s: &str) -> Option<String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let t = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let host = t.split('/').next().unwrap_or("");
    if host.is_empty()
        || host
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
    {
        return None;
    }
    Some(match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    })
}

fn parse_label_filter(s: &str) -> Result<String, String> {
    let key = s.split_once('=').map_or(s, |(k, _)| k);
    if key.trim().is_empty() || key.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} is not a label filter (allowed: key or key=value)"
        ));
    }
    Ok(s.to_string())
}

fn parse_nonempty_word(s: &str, what: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(format!("{s:?} is not {what}"));
    }
    Ok(s.to_string())
}

fn choice<T: Copy>(s: &str, allowed: &[(&str, T)]) -> Result<T, String> {
    let lower = s.to_ascii_lowercase();
    allowed
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            format!("{s:?} is not allowed (allowed: {})", names.join(", "))
        })
}

const LEVELS: &[(&str, log::LevelFilter)] = &[
    ("error", log::LevelFilter::Error),
    ("warn", log::LevelFilter::Warn),
    ("info", log::LevelFilter::Info),
    ("debug", log::LevelFilter::Debug),
    ("trace", log::LevelFilter::Trace),
    ("off", log::LevelFilter::Off),
];
const LOG_FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];
const STRATEGIES: &[(&str, RecreateStrategy)] = &[("recreate", RecreateStrategy::Recreate)];
const EVENTS: &[(&str, WebhookEvent)] = &[
    ("available", WebhookEvent::Available),
    ("updated", WebhookEvent::Updated),
    ("failed", WebhookEvent::Failed),
];
const HOOK_FORMATS: &[(&str, WebhookFormat)] = &[
    ("json", WebhookFormat::Json),
    ("slack", WebhookFormat::Slack),
    ("discord", WebhookFormat::Discord),
    ("ntfy", WebhookFormat::Ntfy),
];

fn name_of<T: PartialEq>(allowed: &[(&'static str, T)], v: &T) -> &'static str {
    allowed.iter().find(|(_, x)| x == v).map_or("", |(n, _)| n)
}

// ----------------------------------------------------------------------------------------------
// The tree → Config.

/// A view of one mapping of the tree, with its dotted prefix for messages.
struct Sec<'a> {
    entries: &'a [(&'static str, Node)],
    prefix: String,
}

impl<'a> Sec<'a> {
    fn new(node: Option<&'a Node>, prefix: String) -> Self {
        let entries: &'a [(&'static str, Node)] = match node {
            Some(Node::Map(e)) => e,
            _ => &[],
        };
        Sec { entries, prefix }
    }

    fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn key(&self, name: &str) -> String {
        join_key(&self.prefix, name)
    }

    fn sub(&self, name: &str) -> Sec<'a> {
        Sec::new(self.get(name), self.key(name))
    }

    fn leaf(&self, name: &str) -> Result<Option<&'a Leaf>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Node::Leaf(l)) => Ok(Some(l)),
            Some(_) => Err(ConfigError::Invalid {
                key: self.key(name),
                problem: "expected a single value".into(),
                layer: Layer::Default,
            }),
        }
    }

    /// The value of `name` parsed by `parse`, or `default` when absent.
    fn parse<T>(
        &self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.leaf(name)? {
            None => Ok(default),
            Some(l) => parse(l.text.trim()).map_err(|problem| ConfigError::Invalid {
                key: self.key(name),
                problem,
                layer: l.from.clone(),
            }),
        }
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.parse(name, default, parse_bool)
    }

    fn duration(
        &self,
        name: &str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse(name, default, |s| duration_in(s, min))
    }

    fn count(&self, name: &str, default: usize, min: u64, max: u64) -> Result<usize, ConfigError> {
        self.parse(name, default, |s| {
            int_in(s, min, max).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// A list of strings, each parsed by `parse`; `default` when absent.
    fn list<T>(
        &self,
        name: &str,
        default: Vec<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let items = match self.get(name) {
            None => return Ok(default),
            Some(Node::List(items)) => items,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: self.key(name),
                    problem: "expected a list".into(),
                    layer: Layer::Default,
                })
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = format!("{}[{i}]", self.key(name));
            let Node::Leaf(l) = item else {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "expected a single value".into(),
                    layer: Layer::Default,
                });
            };
            out.push(
                parse(l.text.trim()).map_err(|problem| ConfigError::Invalid {
                    key,
                    problem,
                    layer: l.from.clone(),
                })?,
            );
        }
        Ok(out)
    }

    /// The items of a list of objects.
    fn items(&self, name: &str) -> Vec<Sec<'a>> {
        match self.get(name) {
            Some(Node::List(items)) => items
                .iter()
                .enumerate()
                .map(|(i, n)| Sec::new(Some(n), format!("{}[{i}]", self.key(name))))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A secret given inline or as `<name>File`; None when empty.
    fn secret(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        let Some(l) = self.leaf(name)? else {
            return Ok(None);
        };
        if l.style != Style::File {
            return Ok((!l.text.is_empty()).then(|| Secret::new(l.text.clone())));
        }
        let path = l.text.trim();
        if path.is_empty() {
            return Ok(None);
        }
        let content = read_small(Path::new(path)).map_err(|error| ConfigError::SecretFile {
            key: format!("{}File", self.key(name)),
            path: PathBuf::from(path),
            error,
            layer: l.from.clone(),
        })?;
        // Files written by `echo` or editors end with one newline that is not part of the secret.
        let value = content
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&content);
        Ok((!value.is_empty()).then(|| Secret::new(value)))
    }
}

/// Largest secret file we read: a mistaken `/dev/zero` must not exhaust memory.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than 64 KiB, not a secret",
        ));
    }
    Ok(text)
}

fn convert(tree: &Node) -> Result<Config, ConfigError> {
    let d = Config::default();
    let root = Sec::new(Some(tree), String::new());
    let ms = Duration::from_millis;

    let s = root.sub("server");
    let server = ServerConfig {
        addr: s.parse("addr", d.server.addr, parse_addr)?,
        token: s.secret("token")?,
        read_token: s.secret("readToken")?,
        allow_unauthenticated: s.bool("allowUnauthenticated", d.server.allow_unauthenticated)?,
        ui: s.bool("ui", d.server.ui)?,
        read_timeout: s.duration("readTimeout", d.server.read_timeout, ms(100))?,
        max_connections: s.count("maxConnections", d.server.max_connections, 1, 65_536)?,
    };

    let s = root.sub("docker");
    let docker = DockerConfig {
        host: s.parse("host", d.docker.host, parse_docker_host)?,
        include_stopped: s.bool("includeStopped", d.docker.include_stopped)?,
        api_version: s.parse("apiVersion", d.docker.api_version, parse_api_version)?,
    };

    let s = root.sub("scan");
    let scan = ScanConfig {
        interval: s.duration("interval", d.scan.interval, ms(1_000))?,
        cron: s.parse("cron", d.scan.cron, parse_cron_opt)?,
        initial_scan_on_start: s.bool("initialScanOnStart", d.scan.initial_scan_on_start)?,
        concurrency: s.count("concurrency", d.scan.concurrency, 1, 256)?,
        cache_ttl: s.duration("cacheTTL", d.scan.cache_ttl, Duration::ZERO)?,
        timezone: s.parse("timezone", d.scan.timezone, parse_tz)?,
        jitter: s.duration("jitter", d.scan.jitter, Duration::ZERO)?,
        newer_versions: s.bool("newerVersions", d.scan.newer_versions)?,
    };

    let s = root.sub("update");
    let update = UpdateConfig {
        enabled: s.bool("enabled", d.update.enabled)?,
        auto_update_cron: s.parse("autoUpdateCron", d.update.auto_update_cron, parse_cron_opt)?,
        allow_compose_update: s.bool("allowComposeUpdate", d.update.allow_compose_update)?,
        recreate_strategy: s.parse("recreateStrategy", d.update.recreate_strategy, |v| {
            choice(v, STRATEGIES)
        })?,
        remove_old_container: s.bool("removeOldContainer", d.update.remove_old_container)?,
        timezone: s.parse("timezone", d.update.timezone, parse_tz)?,
        stop_timeout: s.duration("stopTimeout", d.update.stop_timeout, Duration::ZERO)?,
        health_timeout: s.duration("healthTimeout", d.update.health_timeout, ms(1_000))?,
        settle_time: s.duration("settleTime", d.update.settle_time, Duration::ZERO)?,
        rollback: s.bool("rollback", d.update.rollback)?,
        concurrency: s.count("concurrency", d.update.concurrency, 1, 64)?,
        cleanup_images: s.bool("cleanupImages", d.update.cleanup_images)?,
    };

    let s = root.sub("policy");
    let tag = |v: &str| parse_nonempty_word(v, "a tag (allowed: a tag name like latest)");
    let policy = PolicyConfig {
        skip_labels: s.list("skipLabels", d.policy.skip_labels, parse_label_filter)?,
        only_labels: s.list("onlyLabels", d.policy.only_labels, parse_label_filter)?,
        exclude_labels: s.list("excludeLabels", d.policy.exclude_labels, parse_label_filter)?,
        skip_local_build: s.bool("skipLocalBuild", d.policy.skip_local_build)?,
        skip_pinned_digest: s.bool("skipPinnedDigest", d.policy.skip_pinned_digest)?,
        skip_semver_pinned: s.bool("skipSemverPinned", d.policy.skip_semver_pinned)?,
        floating_tags: s.list("floatingTags", d.policy.floating_tags, tag)?,
        label_enable: s.bool("labelEnable", d.policy.label_enable)?,
    };

    let s = root.sub("registry");
    let host = |v: &str| {
        normalise_registry_host(v).ok_or_else(|| {
            format!(
                "{v:?} is not a registry host (examples: docker.io, ghcr.io, registry.local:5000)"
            )
        })
    };
    let mut auth = Vec::new();
    for item in s.items("auth") {
        if item.leaf("host")?.is_none_or(|l| l.text.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                key: item.key("host"),
                problem: "is required (examples: docker.io, ghcr.io)".into(),
                layer: first_layer(&item),
            });
        }
        auth.push(RegistryAuth {
            host: item.parse("host", String::new(), host)?,
            username: item.parse("username", String::new(), |v| Ok(v.to_string()))?,
            password: item.secret("password")?.unwrap_or_default(),
        });
    }
    let path_opt = |v: &str| Ok((!v.is_empty()).then(|| PathBuf::from(v)));
    let registry = RegistryConfig {
        auth,
        docker_config: s.parse("dockerConfig", d.registry.docker_config, path_opt)?,
        insecure: s.list("insecure", d.registry.insecure, |v| {
            normalise_registry_host(v).ok_or_else(|| {
                format!(
                    "{v:?} is not a registry host (examples: registry.local:5000, 10.0.0.5:5000)"
                )
            })
        })?,
        ca_file: s.parse("caFile", d.registry.ca_file, |v| {
            if v.is_empty() {
                return Ok(None);
            }
            // Checked now so a typo stops the start instead of failing every TLS connection later.
            match std::fs::metadata(v) {
                Ok(m) if m.is_file() => Ok(Some(PathBuf::from(v))),
                Ok(_) => Err(format!(
                    "{v:?} is not a file (allowed: a PEM file of CA certificates, or empty)"
                )),
                Err(e) => Err(format!(
                    "{v:?} cannot be read: {e} (allowed: a PEM file of CA certificates, or empty)"
                )),
            }
        })?,
        timeout: s.duration("timeout", d.registry.timeout, ms(100))?,
        max_retries: s.parse("maxRetries", d.registry.max_retries, |v| {
            int_in(v, 0, 10).map(|n| u32::try_from(n).unwrap_or(10))
        })?,
    };

    let s = root.sub("logging");
    let logging = LoggingConfig {
        level: s.parse("level", d.logging.level, |v| choice(v, LEVELS))?,
        format: s.parse("format", d.logging.format, |v| choice(v, LOG_FORMATS))?,
    };

    let s = root.sub("metrics");
    let metrics = MetricsConfig {
        enabled: s.bool("enabled", d.metrics.enabled)?,
    };

    let s = root.sub("notify");
    let mut webhooks = Vec::new();
    for item in s.items("webhooks") {
        let Some(url) = item.secret("url")? else {
            return Err(ConfigError::Invalid {
                key: item.key("url"),
                problem: "is required (allowed: an http:// or https:// URL, or urlFile)".into(),
                layer: first_layer(&item),
            });
        };
        let lower = url.expose().trim().to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            let layer = item.leaf("url")?.map_or(Layer::Default, |l| l.from.clone());
            return Err(ConfigError::Invalid {
                key: item.key("url"),
                problem: "is not an http(s) URL (value not shown: it is a secret; allowed: http://... or https://...)".into(),
                layer,
            });
        }
        let mut events = item.list(
            "events",
            vec![
                WebhookEvent::Available,
                WebhookEvent::Updated,
                WebhookEvent::Failed,
            ],
            |v| choice(v, EVENTS),
        )?;
        if events.is_empty() {
            let layer = first_layer(&item);
            return Err(ConfigError::Invalid {
                key: item.key("events"),
                problem:
                    "is empty (allowed: one or more of available, updated, failed; omit for all)"
                        .into(),
                layer,
            });
        }
        let mut seen = Vec::new();
        events.retain(|e| {
            let new = !seen.contains(e);
            seen.push(*e);
            new
        });
        webhooks.push(Webhook {
            url: Secret::new(url.expose().trim()),
            events,
            format: item.parse("format", WebhookFormat::Json, |v| choice(v, HOOK_FORMATS))?,
        });
    }

    Ok(Config {
        server,
        docker,
        scan,
        update,
        policy,
        registry,
        logging,
        metrics,
        notify: NotifyConfig { webhooks },
    })
}

/// The layer of some value of a list item, to name in a "missing field" error.
fn first_layer(item: &Sec<'_>) -> Layer {
    item.entries
        .iter()
        .find_map(|(_, n)| match n {
            Node::Leaf(l) => Some(l.from.clone()),
            _ => None,
        })
        .unwrap_or(Layer::Default)
}

// ----------------------------------------------------------------------------------------------
// Config → tree (the defaults layer, and `render_effective`).

fn tree_of(c: &Config, mask: bool) -> Node {
    fn q(s: &str) -> Node {
        Node::Leaf(Leaf {
            text: s.to_string(),
            from: Layer::Default,
            style: Style::Quoted,
        })
    }
    fn p(s: impl ToString) -> Node {
        Node::Leaf(Leaf {
            text: s.to_string(),
            from: Layer::Default,
            style: Style::Plain,
        })
    }
    fn dur(d: Duration) -> Node {
        q(&format_duration(d))
    }
    fn list(v: &[String]) -> Node {
        Node::List(v.iter().map(|s| q(s)).collect())
    }
    let secret = |s: Option<&Secret>| match s {
        Some(s) if !s.is_empty() => q(if mask { "***" } else { s.expose() }),
        _ => q(""),
    };
    let opt = |s: &Option<String>| q(s.as_deref().unwrap_or(""));
    let path = |s: &Option<PathBuf>| {
        q(&s.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default())
    };

    let api = c
        .docker
        .api_version
        .map_or("auto".to_string(), |(a, b)| format!("{a}.{b}"));
    let auth = c
        .registry
        .auth
        .iter()
        .map(|a| {
            Node::Map(vec![
                ("host", q(&a.host)),
                ("username", q(&a.username)),
                ("password", secret(Some(&a.password))),
            ])
        })
        .collect();
    let hooks = c
        .notify
        .webhooks
        .iter()
        .map(|w| {
            Node::Map(vec![
                ("url", secret(Some(&w.url))),
                (
                    "events",
                    Node::List(w.events.iter().map(|e| q(name_of(EVENTS, e))).collect()),
                ),
                ("format", q(name_of(HOOK_FORMATS, &w.format))),
            ])
        })
        .collect();

    let (s, dk, sc, u, po, r) = (
        &c.server,
        &c.docker,
        &c.scan,
        &c.update,
        &c.policy,
        &c.registry,
    );
    Node::Map(vec![
        (
            "server",
            Node::Map(vec![
                ("addr", q(&s.addr)),
                ("token", secret(s.token.as_ref())),
                ("readToken", secret(s.read_token.as_ref())),
                ("allowUnauthenticated", p(s.allow_unauthenticated)),
                ("ui", p(s.ui)),
                ("readTimeout", dur(s.read_timeout)),
                ("maxConnections", p(s.max_connections)),
            ]),
        ),
        (
            "docker",
            Node::Map(vec![
                ("host", q(&dk.host)),
                ("includeStopped", p(dk.include_stopped)),
                ("apiVersion", q(&api)),
            ]),
        ),
        (
            "scan",
            Node::Map(vec![
                ("interval", dur(sc.interval)),
                ("cron", opt(&sc.cron)),
                ("initialScanOnStart", p(sc.initial_scan_on_start)),
                ("concurrency", p(sc.concurrency)),
                ("cacheTTL", dur(sc.cache_ttl)),
                ("timezone", opt(&sc.timezone)),
                ("jitter", dur(sc.jitter)),
                ("newerVersions", p(sc.newer_versions)),
            ]),
        ),
        (
            "update",
            Node::Map(vec![
                ("enabled", p(u.enabled)),
                ("autoUpdateCron", opt(&u.auto_update_cron)),
                ("allowComposeUpdate", p(u.allow_compose_update)),
                (
                    "recreateStrategy",
                    q(name_of(STRATEGIES, &u.recreate_strategy)),
                ),
                ("removeOldContainer", p(u.remove_old_container)),
                ("timezone", opt(&u.timezone)),
                ("stopTimeout", dur(u.stop_timeout)),
                ("healthTimeout", dur(u.health_timeout)),
                ("settleTime", dur(u.settle_time)),
                ("rollback", p(u.rollback)),
                ("concurrency", p(u.concurrency)),
                ("cleanupImages", p(u.cleanup_images)),
            ]),
        ),
        (
            "policy",
            Node::Map(vec![
                ("skipLabels", list(&po.skip_labels)),
                ("onlyLabels", list(&po.only_labels)),
                ("excludeLabels", list(&po.exclude_labels)),
                ("skipLocalBuild", p(po.skip_local_build)),
                ("skipPinnedDigest", p(po.skip_pinned_digest)),
                ("skipSemverPinned", p(po.skip_semver_pinned)),
                ("floatingTags", list(&po.floating_tags)),
                ("labelEnable", p(po.label_enable)),
            ]),
        ),
        (
            "registry",
            Node::Map(vec![
                ("auth", Node::List(auth)),
                ("dockerConfig", path(&r.docker_config)),
                ("insecure", list(&r.insecure)),
                ("caFile", path(&r.ca_file)),
                ("timeout", dur(r.timeout)),
                ("maxRetries", p(r.max_retries)),
            ]),
        ),
        (
            "logging",
            Node::Map(vec![
                ("level", q(name_of(LEVELS, &c.logging.level))),
                ("format", q(name_of(LOG_FORMATS, &c.logging.format))),
            ]),
        ),
        (
            "metrics",
            Node::Map(vec![("enabled", p(c.metrics.enabled))]),
        ),
        ("notify", Node::Map(vec![("webhooks", Node::List(hooks))])),
    ])
}

fn emit_scalar(l: &Leaf) -> String {
    match l.style {
        Style::Plain => l.text.clone(),
        // A JSON string is a valid YAML double-quoted scalar.
        Style::Quoted | Style::File => serde_json::to_string(&l.text).unwrap_or_default(),
    }
}

fn emit_map(out: &mut String, entries: &[(&'static str, Node)], indent: usize) {
    for (i, (name, node)) in entries.iter().enumerate() {
        if indent == 0 && i > 0 {
            out.push('\n');
        }
        out.push_str(&" ".repeat(indent));
        out.push_str(name);
        out.push(':');
        match node {
            Node::Leaf(l) => {
                out.push(' ');
                out.push_str(&emit_scalar(l));
                out.push('\n');
            }
            Node::List(items) if items.iter().all(|n| matches!(n, Node::Leaf(_))) => {
                let texts: Vec<String> = items
                    .iter()
                    .filter_map(|n| match n {
                        Node::Leaf(l) => Some(emit_scalar(l)),
                        _ => None,
                    })
                    .collect();
                out.push_str(&format!(" [{}]\n", texts.join(", ")));
            }
            Node::List(items) => {
                out.push('\n');
                for item in items {
                    if let Node::Map(e) = item {
                        let mut block = String::new();
                        emit_map(&mut block, e, indent + 4);
                        let first = format!("{}- ", " ".repeat(indent + 2));
                        out.push_str(&first);
                        out.push_str(&block[(indent + 4).min(block.len())..]);
                    }
                }
            }
            Node::Map(e) => {
                out.push('\n');
                emit_map(out, e, indent + 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory removed on drop, for config files and secret files.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wdtest-config-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
        fn file(&self, name: &str, content: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, content).expect("write temp file");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Loads with a YAML text (always an explicit file, so ./config.yaml never leaks in).
    fn load_all(
        yaml: &str,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Loaded, ConfigError> {
        let dir = TempDir::new();
        let file = dir.file("config.yaml", yaml);
        load(&LoadOptions {
            file: Some(file),
            env: pairs(env),
            flags: pairs(flags),
        })
    }

    fn cfg(yaml: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Config {
        match load_all(yaml, env, flags) {
            Ok(l) => l.config,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(yaml: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> String {
        match load_all(yaml, env, flags) {
            Ok(_) => panic!("expected an error for yaml={yaml:?} env={env:?} flags={flags:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    type Check = fn(&Config) -> bool;

    /// Every key with a non-default value, and how to see it arrived.
    const KEYS: &[(&str, &str, Check)] = &[
        ("server.addr", "127.0.0.1:9090", |c| {
            c.server.addr == "127.0.0.1:9090"
        }),
        ("server.token", "tok", |c| {
            c.server.token == Some(Secret::new("tok"))
        }),
        ("server.readToken", "rtok", |c| {
            c.server.read_token == Some(Secret::new("rtok"))
        }),
        ("server.allowUnauthenticated", "true", |c| {
            c.server.allow_unauthenticated
        }),
        ("server.ui", "false", |c| !c.server.ui),
        ("server.readTimeout", "30s", |c| {
            c.server.read_timeout == secs(30)
        }),
        ("server.maxConnections", "12", |c| {
            c.server.max_connections == 12
        }),
        ("docker.host", "tcp://10.0.0.1:2375", |c| {
            c.docker.host == "tcp://10.0.0.1:2375"
        }),
        ("docker.includeStopped", "yes", |c| c.docker.include_stopped),
        ("docker.apiVersion", "1.43", |c| {
            c.docker.api_version == Some((1, 43))
        }),
        ("scan.interval", "1h30m", |c| c.scan.interval == secs(5400)),
        ("scan.cron", "*/5 * * * *", |c| {
            c.scan.cron.as_deref() == Some("*/5 * * * *")
        }),
        ("scan.initialScanOnStart", "0", |c| {
            !c.scan.initial_scan_on_start
        }),
        ("scan.concurrency", "16", |c| c.scan.concurrency == 16),
        ("scan.cacheTTL", "2d", |c| {
            c.scan.cache_ttl == secs(2 * 86_400)
        }),
        ("scan.timezone", "Europe/Berlin", |c| {
            c.scan.timezone.as_deref() == Some("Europe/Berlin")
        }),
        ("scan.jitter", "500ms", |c| {
            c.scan.jitter == Duration::from_millis(500)
        }),
        ("scan.newerVersions", "TRUE", |c| c.scan.newer_versions),
        ("update.enabled", "false", |c| !c.update.enabled),
        ("update.autoUpdateCron", "30 0 4 * * 1", |c| {
            c.update.auto_update_cron.as_deref() == Some("30 0 4 * * 1")
        }),
        ("update.allowComposeUpdate", "true", |c| {
            c.update.allow_compose_update
        }),
        ("update.recreateStrategy", "Recreate", |c| {
            c.update.recreate_strategy == RecreateStrategy::Recreate
        }),
        ("update.removeOldContainer", "false", |c| {
            !c.update.remove_old_container
        }),
        ("update.timezone", "America/New_York", |c| {
            c.update.timezone.as_deref() == Some("America/New_York")
        }),
        ("update.stopTimeout", "0s", |c| {
            c.update.stop_timeout == Duration::ZERO
        }),
        ("update.healthTimeout", "2m", |c| {
            c.update.health_timeout == secs(120)
        }),
        ("update.settleTime", "1s", |c| {
            c.update.settle_time == secs(1)
        }),
        ("update.rollback", "no", |c| !c.update.rollback),
        ("update.concurrency", "2", |c| c.update.concurrency == 2),
        ("update.cleanupImages", "true", |c| c.update.cleanup_images),
        ("policy.skipLabels", "a=b,c", |c| {
            c.policy.skip_labels == ["a=b", "c"]
        }),
        ("policy.onlyLabels", "x", |c| c.policy.only_labels == ["x"]),
        ("policy.excludeLabels", "y=1", |c| {
            c.policy.exclude_labels == ["y=1"]
        }),
        ("policy.skipLocalBuild", "false", |c| {
            !c.policy.skip_local_build
        }),
        ("policy.skipPinnedDigest", "false", |c| {
            !c.policy.skip_pinned_digest
        }),
        ("policy.skipSemverPinned", "false", |c| {
            !c.policy.skip_semver_pinned
        }),
        ("policy.floatingTags", "latest, edge", |c| {
            c.policy.floating_tags == ["latest", "edge"]
        }),
        ("policy.labelEnable", "true", |c| c.policy.label_enable),
        ("registry.dockerConfig", "/etc/docker/config.json", |c| {
            c.registry.docker_config == Some(PathBuf::from("/etc/docker/config.json"))
        }),
        ("registry.insecure", "registry.local:5000", |c| {
            c.registry.insecure == ["registry.local:5000"]
        }),
        ("registry.timeout", "3s", |c| c.registry.timeout == secs(3)),
        ("registry.maxRetries", "0", |c| c.registry.max_retries == 0),
        ("logging.level", "debug", |c| {
            c.logging.level == log::LevelFilter::Debug
        }),
        ("logging.format", "json", |c| {
            c.logging.format == LogFormat::Json
        }),
        ("metrics.enabled", "false", |c| !c.metrics.enabled),
        ("registry.auth[0].host", "quay.io", |c| {
            c.registry.auth[0].host == "quay.io"
        }),
        ("registry.auth[1].username", "bob", |c| {
            c.registry.auth[1].username == "bob"
        }),
        ("registry.auth[0].password", "pw", |c| {
            c.registry.auth[0].password == Secret::new("pw")
        }),
        ("notify.webhooks[0].url", "https://hooks.example/x", |c| {
            c.notify.webhooks.len() == 1
                && c.notify.webhooks[0].url == Secret::new("https://hooks.example/x")
                && c.notify.webhooks[0].events.len() == 3
                && c.notify.webhooks[0].format == WebhookFormat::Json
        }),
    ];

    /// `scan.cacheTTL` → (`WATCH_SCAN_CACHETTL`, `WATCH_SCAN_CACHE_T_T_L`).
    fn env_names(key: &str) -> (String, String) {
        let segs: Vec<String> = key
            .replace('[', ".")
            .replace(']', "")
            .split('.')
            .map(str::to_string)
            .collect();
        let joined = segs
            .iter()
            .map(|s| s.to_uppercase())
            .collect::<Vec<_>>()
            .join("_");
        let split = segs
            .iter()
            .map(|seg| {
                let mut out = String::new();
                for (i, ch) in seg.chars().enumerate() {
                    if i > 0 && ch.is_ascii_uppercase() {
                        out.push('_');
                    }
                    out.push(ch.to_ascii_uppercase());
                }
                out
            })
            .collect::<Vec<_>>()
            .join("_");
        (format!("WATCH_{joined}"), format!("WATCH_{split}"))
    }

    /// `scan.cacheTTL` = `v` as a YAML document.
    fn yaml_for(key: &str, value: &str) -> String {
        let (section, name) = key.split_once('.').expect("dotted key");
        format!(
            "{section}:\n  {name}: {}\n",
            serde_json::to_string(value).unwrap_or_default()
        )
    }

    #[test]
    fn every_key_is_reachable_by_yaml_env_and_flags() {
        for (key, value, check) in KEYS {
            let default = Config::default();
            assert!(
                !check(&default) || *key == "update.recreateStrategy",
                "{key}: value equals the default"
            );
            if !key.contains('[') {
                let c = cfg(&yaml_for(key, value), &[], &[]);
                assert!(check(&c), "yaml {key}={value}");
            }
            let (joined, split) = env_names(key);
            for name in [&joined, &split, &joined.to_lowercase()] {
                let l =
                    load_all("", &[(name, value)], &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(check(&l.config), "env {name}={value}");
                assert!(l.warnings.is_empty(), "env {name}: {:?}", l.warnings);
            }
            let c = cfg("", &[], &[(key, value)]);
            assert!(check(&c), "flag {key}={value}");
        }
    }

    #[test]
    fn every_schema_key_is_in_the_table_and_in_the_rendering() {
        fn walk(fields: &'static [Field], prefix: &str, out: &mut Vec<String>) {
            for f in fields {
                let key = join_key(prefix, f.name);
                match f.shape {
                    Shape::Section(sub) => walk(sub, &key, out),
                    Shape::Objects(sub) => walk(sub, &format!("{key}[]"), out),
                    _ => out.push(key),
                }
            }
        }
        let mut all = Vec::new();
        walk(SCHEMA, "", &mut all);
        let table: Vec<String> = KEYS
            .iter()
            .map(|(k, _, _)| k.replace("[0]", "[]").replace("[1]", "[]"))
            .collect();
        let rendered = render_effective(&Config {
            notify: NotifyConfig {
                webhooks: vec![Webhook {
                    url: Secret::new("https://x"),
                    events: vec![WebhookEvent::Failed],
                    format: WebhookFormat::Ntfy,
                }],
            },
            ..Config::default()
        });
        for key in all {
            // registry.caFile needs a real file: tested in `ca_file_must_exist`.
            assert!(
                table.contains(&key) || key.ends_with("caFile") || key.contains("webhooks[]."),
                "{key} missing from KEYS"
            );
            let last = key.rsplit('.').next().unwrap_or_default();
            assert!(
                rendered.contains(&format!("{last}:")),
                "{key} missing from render_effective"
            );
        }
    }

    #[test]
    fn layers_apply_file_then_env_then_flags() {
        let yaml = "scan:\n  interval: 1m\n";
        let env = [("WATCH_SCAN_INTERVAL", "2m")];
        let flag = [("scan.interval", "3m")];
        assert_eq!(cfg(yaml, &[], &[]).scan.interval, secs(60));
        assert_eq!(cfg(yaml, &env, &[]).scan.interval, secs(120));
        assert_eq!(cfg(yaml, &env, &flag).scan.interval, secs(180));
        assert_eq!(cfg(yaml, &[], &flag).scan.interval, secs(180));
        // Untouched keys keep the file's or the default value.
        let c = cfg("scan:\n  concurrency: 5\n", &env, &flag);
        assert_eq!((c.scan.concurrency, c.scan.cache_ttl), (5, secs(300)));
    }

    #[test]
    fn docker_host_env_replaces_only_the_default() {
        let env = [("DOCKER_HOST", "tcp://10.1.1.1:2376")];
        assert_eq!(cfg("", &env, &[]).docker.host, "tcp://10.1.1.1:2376");
        let yaml = "docker:\n  host: unix:///run/docker.sock\n";
        assert_eq!(cfg(yaml, &env, &[]).docker.host, "unix:///run/docker.sock");
        assert!(err("", &[("DOCKER_HOST", "ssh://x")], &[]).ends_with("[env DOCKER_HOST]"));
    }

    #[test]
    fn file_selection() {
        let dir = TempDir::new();
        let f = dir.file("a.yaml", "scan:\n  concurrency: 7\n");
        let env = pairs(&[("WATCH_CONFIG", f.to_str().unwrap_or_default())]);
        let l = load(&LoadOptions {
            file: None,
            env: env.clone(),
            flags: vec![],
        })
        .expect("load");
        assert_eq!((l.config.scan.concurrency, l.source), (7, Some(f.clone())));
        assert!(
            l.warnings.is_empty(),
            "WATCH_CONFIG is known: {:?}",
            l.warnings
        );
        // --config wins over WATCH_CONFIG.
        let g = dir.file("b.yaml", "scan:\n  concurrency: 8\n");
        let l = load(&LoadOptions {
            file: Some(g),
            env,
            flags: vec![],
        })
        .expect("load");
        assert_eq!(l.config.scan.concurrency, 8);
        // An explicit file that does not exist is an error naming it.
        let missing = dir.0.join("nope.yaml");
        let e = load(&LoadOptions {
            file: Some(missing.clone()),
            ..Default::default()
        })
        .expect_err("missing file");
        assert!(
            e.to_string()
                .starts_with(&format!("config file {}: cannot read:", missing.display())),
            "{e}"
        );
        // An empty file is the defaults.
        assert_eq!(cfg("", &[], &[]), Config::default());
        assert_eq!(cfg("# only a comment\n", &[], &[]), Config::default());
    }

    #[test]
    fn validation_errors_name_key_value_allowed_and_layer() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "scan.interval",
                "10x",
                r#"scan.interval: "10x" is not a duration (examples: 30s, 10m, 1h)"#,
            ),
            (
                "scan.interval",
                "0s",
                r#"scan.interval: "0s" is too short (minimum: 1s)"#,
            ),
            (
                "scan.cacheTTL",
                "99999d",
                r#"scan.cacheTTL: "99999d" is too long (maximum: 3650d)"#,
            ),
            (
                "update.recreateStrategy",
                "rolling",
                r#"update.recreateStrategy: "rolling" is not allowed (allowed: recreate)"#,
            ),
            (
                "scan.concurrency",
                "0",
                r#"scan.concurrency: "0" is out of range (allowed: 1 to 256)"#,
            ),
            (
                "update.concurrency",
                "-1",
                r#"update.concurrency: "-1" is not a whole number (allowed: 1 to 64)"#,
            ),
            (
                "server.maxConnections",
                "abc",
                r#"server.maxConnections: "abc" is not a whole number (allowed: 1 to 65536)"#,
            ),
            (
                "registry.maxRetries",
                "11",
                r#"registry.maxRetries: "11" is out of range (allowed: 0 to 10)"#,
            ),
            (
                "scan.initialScanOnStart",
                "maybe",
                r#"scan.initialScanOnStart: "maybe" is not a boolean (allowed: true, false, yes, no, 1, 0)"#,
            ),
            (
                "scan.cron",
                "* * *",
                r#"scan.cron: "* * *" is not a cron expression ("#,
            ),
            (
                "scan.cron",
                "0 0 0 * * * 2030",
                r#"scan.cron: "0 0 0 * * * 2030" is not a cron expression ("#,
            ),
            (
                "update.autoUpdateCron",
                "61 * * * *",
                r#"update.autoUpdateCron: "61 * * * *" is not a cron expression ("#,
            ),
            (
                "scan.timezone",
                "Mars/Olympus",
                r#"scan.timezone: "Mars/Olympus" is not a time zone (allowed: IANA names"#,
            ),
            (
                "docker.apiVersion",
                "2.0",
                r#"docker.apiVersion: "2.0" is not an API version (allowed: auto, or 1.24 and up"#,
            ),
            (
                "docker.apiVersion",
                "1.12",
                r#"docker.apiVersion: "1.12" is not an API version"#,
            ),
            (
                "logging.level",
                "verbose",
                r#"logging.level: "verbose" is not allowed (allowed: error, warn, info, debug, trace, off)"#,
            ),
            (
                "logging.format",
                "xml",
                r#"logging.format: "xml" is not allowed (allowed: text, json)"#,
            ),
            (
                "docker.host",
                "http://x:1",
                r#"docker.host: "http://x:1" is not an engine address (allowed: unix:///path/to/docker.sock or tcp://host:port)"#,
            ),
            (
                "docker.host",
                "unix://relative.sock",
                r#"docker.host: "unix://relative.sock" is not an engine address"#,
            ),
            (
                "docker.host",
                "tcp://host",
                r#"docker.host: "tcp://host" is not an engine address"#,
            ),
            (
                "server.addr",
                "8080",
                r#"server.addr: "8080" is not a listen address (allowed: ":PORT" for all interfaces, or HOST:PORT"#,
            ),
            (
                "server.addr",
                "host:99999",
                r#"server.addr: "host:99999" is not a listen address"#,
            ),
            (
                "server.addr",
                "a b:80",
                r#"server.addr: "a b:80" is not a listen address"#,
            ),
            (
                "server.addr",
                "[zz]:80",
                r#"server.addr: "[zz]:80" is not a listen address"#,
            ),
            (
                "server.readTimeout",
                "10",
                r#"server.readTimeout: "10" is not a duration"#,
            ),
            (
                "policy.skipLabels",
                "=x",
                r#"policy.skipLabels[0]: "=x" is not a label filter (allowed: key or key=value)"#,
            ),
            (
                "registry.insecure",
                "a b",
                r#"registry.insecure[0]: "a b" is not a registry host"#,
            ),
            (
                "registry.auth[0].host",
                "",
                "registry.auth[0].host: is required",
            ),
            (
                "registry.auth[0].host",
                "bad host",
                r#"registry.auth[0].host: "bad host" is not a registry host (examples: docker.io"#,
            ),
            (
                "notify.webhooks[0].url",
                "ftp://hooks.example/x",
                "notify.webhooks[0].url: is not an http(s) URL (value not shown",
            ),
        ];
        for (key, value, want) in cases {
            let got = err("", &[], &[(key, value)]);
            assert!(
                got.starts_with(want),
                "{key}={value:?}\n got: {got}\nwant: {want}"
            );
            assert!(got.ends_with(&format!("[flag {key}]")), "{got}");
            assert!(!got.contains('\n'), "{got}");
        }
        // The secret URL never appears in the message.
        assert!(!err("", &[], &[("notify.webhooks[0].url", "ftp://s3cret")]).contains("s3cret"));
    }

    #[test]
    fn errors_name_the_layer_they_came_from() {
        let e = err("", &[("WATCH_SCAN_INTERVAL", "10x")], &[]);
        assert_eq!(
            e,
            r#"scan.interval: "10x" is not a duration (examples: 30s, 10m, 1h) [env WATCH_SCAN_INTERVAL]"#
        );
        let dir = TempDir::new();
        let f = dir.file("c.yaml", "scan:\n  interval: 10x\n");
        let e = load(&LoadOptions {
            file: Some(f.clone()),
            ..Default::default()
        })
        .expect_err("bad");
        assert_eq!(
            e.to_string(),
            format!(
                r#"scan.interval: "10x" is not a duration (examples: 30s, 10m, 1h) [file {}]"#,
                f.display()
            )
        );
        assert_eq!(e.key(), Some("scan.interval"));
    }

    #[test]
    fn webhook_events_and_formats() {
        let yaml = "notify:\n  webhooks:\n    - url: https://a.example/hook\n      events: [updated, failed, updated]\n      format: slack\n    - url: http://b.example\n";
        let c = cfg(yaml, &[], &[]);
        let hooks = &c.notify.webhooks;
        assert_eq!(hooks.len(), 2);
        assert_eq!(
            hooks[0].events,
            [WebhookEvent::Updated, WebhookEvent::Failed]
        );
        assert_eq!(hooks[0].format, WebhookFormat::Slack);
        assert_eq!(hooks[1].events.len(), 3);
        assert_eq!(hooks[1].format, WebhookFormat::Json);
        let e = err(
            "",
            &[
                ("WATCH_NOTIFY_WEBHOOKS_0_URL", "https://x"),
                ("WATCH_NOTIFY_WEBHOOKS_0_EVENTS", "available,bogus"),
            ],
            &[],
        );
        assert_eq!(
            e,
            r#"notify.webhooks[0].events[1]: "bogus" is not allowed (allowed: available, updated, failed) [env WATCH_NOTIFY_WEBHOOKS_0_EVENTS]"#
        );
        let e = err(
            "",
            &[
                ("WATCH_NOTIFY_WEBHOOKS_0_URL", "https://x"),
                ("WATCH_NOTIFY_WEBHOOKS_0_FORMAT", "teams"),
            ],
            &[],
        );
        assert_eq!(
            e,
            r#"notify.webhooks[0].format: "teams" is not allowed (allowed: json, slack, discord, ntfy) [env WATCH_NOTIFY_WEBHOOKS_0_FORMAT]"#
        );
        let e = err(
            "",
            &[
                ("WATCH_NOTIFY_WEBHOOKS_0_URL", "https://x"),
                ("WATCH_NOTIFY_WEBHOOKS_0_EVENTS", ""),
            ],
            &[],
        );
        assert!(e.starts_with("notify.webhooks[0].events: is empty"), "{e}");
        let e = err("", &[("WATCH_NOTIFY_WEBHOOKS_0_FORMAT", "ntfy")], &[]);
        assert!(e.starts_with("notify.webhooks[0].url: is required"), "{e}");
    }

    #[test]
    fn comma_lists_and_indexed_lists() {
        let c = cfg("", &[("WATCH_POLICY_FLOATINGTAGS", "latest,edge")], &[]);
        assert_eq!(c.policy.floating_tags, ["latest", "edge"]);
        let c = cfg("", &[("WATCH_POLICY_FLOATINGTAGS", "")], &[]);
        assert!(c.policy.floating_tags.is_empty());
        let c = cfg("", &[("WATCH_POLICY_FLOATING_TAGS", " a , ,b ")], &[]);
        assert_eq!(c.policy.floating_tags, ["a", "b"]);
        // One item of a string list; the next index appends.
        let c = cfg(
            "",
            &[
                ("WATCH_POLICY_FLOATINGTAGS_1", "edge"),
                ("WATCH_POLICY_FLOATINGTAGS_3", "x"),
            ],
            &[],
        );
        assert_eq!(c.policy.floating_tags, ["latest", "edge", "stable", "x"]);
        // A whole list then its items, whatever the order given.
        let c = cfg(
            "",
            &[
                ("WATCH_POLICY_SKIPLABELS_1", "b"),
                ("WATCH_POLICY_SKIPLABELS", "a"),
            ],
            &[],
        );
        assert_eq!(c.policy.skip_labels, ["a", "b"]);
        // YAML sequences and YAML comma strings.
        let c = cfg(
            "policy:\n  floatingTags: [dev, nightly]\n  onlyLabels: a,b\n",
            &[],
            &[],
        );
        assert_eq!(
            (c.policy.floating_tags.clone(), c.policy.only_labels.clone()),
            (s(&["dev", "nightly"]), s(&["a", "b"]))
        );
        // Items of objects: env fills and extends the file's list, in index order.
        let yaml = "registry:\n  auth:\n    - host: ghcr.io\n      username: me\n";
        let env = [
            ("WATCH_REGISTRY_AUTH_2_HOST", "quay.io"),
            ("WATCH_REGISTRY_AUTH_1_HOST", "index.docker.io"),
            ("WATCH_REGISTRY_AUTH_0_PASSWORD", "pw"),
        ];
        let c = cfg(yaml, &env, &[]);
        let hosts: Vec<&str> = c.registry.auth.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(hosts, ["ghcr.io", "docker.io", "quay.io"]);
        assert_eq!(
            (
                c.registry.auth[0].username.as_str(),
                c.registry.auth[0].password.expose()
            ),
            ("me", "pw")
        );
        // Gaps are errors naming the list, the index and the variable.
        let e = err("", &[("WATCH_NOTIFY_WEBHOOKS_1_URL", "https://x")], &[]);
        assert_eq!(e, "notify.webhooks: item 1 given without item 0 (items are numbered from 0 without gaps) [env WATCH_NOTIFY_WEBHOOKS_1_URL]");
        let e = err("", &[("WATCH_REGISTRY_AUTH_3_HOST", "x.io")], &[]);
        assert!(
            e.starts_with("registry.auth: item 3 given without item 2"),
            "{e}"
        );
        let e = err("", &[], &[("policy.floatingTags[5]", "x")]);
        assert!(
            e.starts_with("policy.floatingTags: item 5 given without item 3"),
            "{e}"
        );
        // Flags accept both index spellings.
        let c = cfg(
            "",
            &[],
            &[
                ("registry.auth.1.username", "u"),
                ("registry.auth[0].username", "v"),
            ],
        );
        assert_eq!(
            (
                c.registry.auth[0].username.as_str(),
                c.registry.auth[1].username.as_str()
            ),
            ("v", "u")
        );
    }

    #[test]
    fn registry_hosts_are_normalised() {
        for (given, want) in [
            ("docker.io", Some("docker.io")),
            ("index.docker.io", Some("docker.io")),
            ("registry-1.docker.io", Some("docker.io")),
            ("https://index.docker.io/v1/", Some("docker.io")),
            ("GHCR.io", Some("ghcr.io")),
            ("registry.local:5000", Some("registry.local:5000")),
            ("", None),
            ("a b", None),
        ] {
            assert_eq!(normalise_registry_host(given).as_deref(), want, "{given}");
        }
        let c = cfg(
            "registry:\n  auth:\n    - host: registry-1.docker.io\n      username: u\n",
            &[],
            &[],
        );
        assert_eq!(c.registry.auth.len(), 1);
        assert_eq!(c.registry.auth[0].host, "docker.io");
    }

    #[test]
    fn unknown_keys() {
        let e = load_all("scan:\n  intervall: 5m\n", &[], &[]).expect_err("unknown");
        let msg = e.to_string();
        assert!(
            msg.starts_with("scan.intervall: unknown key (did you mean interval?) (known: interval, cron, initialScanOnStart, concurrency, cacheTTL, timezone, jitter, newerVersions) [file "),
            "{msg}"
        );
        assert!(matches!(e, ConfigError::UnknownKey { .. }));
        assert!(err("scan:\n  cachettl: 5m\n", &[], &[]).contains("did you mean cacheTTL?"));
        assert!(err("sacn:\n  interval: 5m\n", &[], &[])
            .starts_with("sacn: unknown key (did you mean scan?) (known: server, docker, scan,"));
        assert!(err(
            "registry:\n  auth:\n    - host: x.io\n      pass: y\n",
            &[],
            &[]
        )
        .starts_with("registry.auth[0].pass: unknown key (known: host, username, password)"));
        assert!(
            err("server:\n  addrFile: /x\n", &[], &[]).starts_with("server.addrFile: unknown key")
        );
        // Unknown flags are errors; unknown env variables are warnings.
        assert!(err("", &[], &[("scan.intervall", "5m")])
            .starts_with("scan.intervall: unknown key (did you mean interval?)"));
        assert!(
            err("", &[], &[("nope", "1")]).starts_with("nope: unknown key (known: server, docker,")
        );
        let l = load_all(
            "",
            &[
                ("WATCH_SCAN_INTERVALL", "5m"),
                ("WATCH_CONFIG", ""),
                ("PATH", "/bin"),
                ("WATCH_REGISTRY_AUTH", "x"),
            ],
            &[],
        )
        .expect("load");
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("WATCH_SCAN_INTERVALL"));
        assert!(l.warnings[1].contains("WATCH_REGISTRY_AUTH"));
        assert_eq!(l.config, Config::default());
    }

    #[test]
    fn yaml_shape_and_syntax_errors() {
        let dir = TempDir::new();
        let f = dir.file("bad.yaml", "scan: [\n");
        let e = load(&LoadOptions {
            file: Some(f.clone()),
            ..Default::default()
        })
        .expect_err("syntax");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("config file {}: invalid YAML: ", f.display())),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        for (yaml, want) in [
            (
                "scan: 5\n",
                "scan: expected a mapping (allowed keys: interval,",
            ),
            (
                "policy:\n  floatingTags: {a: 1}\n",
                "policy.floatingTags: expected a single value, found a mapping",
            ),
            (
                "policy:\n  floatingTags: [[a]]\n",
                "policy.floatingTags[0]: expected a single value, found a list",
            ),
            (
                "registry:\n  auth: [x]\n",
                "registry.auth[0]: expected a mapping (allowed keys: host, username, password)",
            ),
            (
                "registry:\n  auth: x\n",
                "registry.auth: expected a list of mappings",
            ),
            (
                "scan:\n  interval: [1m]\n",
                "scan.interval: expected a single value, found a list",
            ),
            ("- a\n", "(top level): expected a mapping of sections"),
            (
                "scan:\n  interval: !tag 1m\n",
                "scan.interval: expected a single value, found a tagged value",
            ),
        ] {
            let got = err(yaml, &[], &[]);
            assert!(got.starts_with(want), "{yaml:?}\n got: {got}\nwant: {want}");
        }
        // YAML scalars of any type are read as text; null is empty.
        let c = cfg("scan:\n  cron:\n  concurrency: 4\n  initialScanOnStart: no\nupdate:\n  autoUpdateCron: ~\n", &[], &[]);
        assert_eq!(
            (
                c.scan.cron,
                c.scan.concurrency,
                c.scan.initial_scan_on_start,
                c.update.auto_update_cron
            ),
            (None, 4, false, None)
        );
    }

    #[test]
    fn a_key_set_twice_in_one_layer_is_an_error() {
        let e = err(
            "",
            &[
                ("WATCH_SCAN_CACHETTL", "1m"),
                ("WATCH_SCAN_CACHE_TTL", "2m"),
            ],
            &[],
        );
        assert_eq!(e, "scan.cacheTTL: set twice, by env WATCH_SCAN_CACHETTL and env WATCH_SCAN_CACHE_TTL (allowed: one of them) [env WATCH_SCAN_CACHE_TTL]");
        let e = err(
            "",
            &[
                ("WATCH_SERVER_TOKEN", "a"),
                ("WATCH_SERVER_TOKENFILE", "/x"),
            ],
            &[],
        );
        assert!(
            e.starts_with(
                "server.token: set twice, by env WATCH_SERVER_TOKEN and env WATCH_SERVER_TOKENFILE"
            ),
            "{e}"
        );
        let e = err("server:\n  token: a\n  tokenFile: /x\n", &[], &[]);
        assert!(
            e.starts_with(
                "server.token: both token and tokenFile are set (allowed: one of them) [file "
            ),
            "{e}"
        );
    }

    #[test]
    fn secrets_from_files() {
        let dir = TempDir::new();
        let tok = dir.file("tok", "s3cret\n");
        let crlf = dir.file("crlf", "pw\r\n");
        let two = dir.file("two", "keep\n\n");
        let hook = dir.file("hook", "https://hooks.example/T0/B0/xyz\n");
        let yaml = format!(
            "server:\n  tokenFile: {}\nregistry:\n  auth:\n    - host: ghcr.io\n      username: me\n      passwordFile: {}\nnotify:\n  webhooks:\n    - urlFile: {}\n",
            tok.display(),
            crlf.display(),
            hook.display()
        );
        let c = cfg(
            &yaml,
            &[(
                "WATCH_SERVER_READTOKENFILE",
                two.to_str().unwrap_or_default(),
            )],
            &[],
        );
        assert_eq!(c.server.token, Some(Secret::new("s3cret")));
        assert_eq!(c.server.read_token, Some(Secret::new("keep\n")));
        assert_eq!(c.registry.auth[0].password, Secret::new("pw"));
        assert_eq!(
            c.notify.webhooks[0].url,
            Secret::new("https://hooks.example/T0/B0/xyz")
        );
        // A later layer's *File replaces an inline value, and the reverse.
        let c = cfg(
            "server:\n  token: inline\n",
            &[("WATCH_SERVER_TOKEN_FILE", tok.to_str().unwrap_or_default())],
            &[],
        );
        assert_eq!(c.server.token, Some(Secret::new("s3cret")));
        let c = cfg(
            &format!("server:\n  tokenFile: {}\n", tok.display()),
            &[],
            &[("server.token", "flag")],
        );
        assert_eq!(c.server.token, Some(Secret::new("flag")));
        let c = cfg(
            "",
            &[],
            &[(
                "registry.auth[1].passwordFile",
                crlf.to_str().unwrap_or_default(),
            )],
        );
        assert_eq!(c.registry.auth[1].password, Secret::new("pw"));
        // A missing file names the key and the path.
        let missing = dir.0.join("missing");
        let e = err(
            "",
            &[(
                "WATCH_SERVER_TOKENFILE",
                missing.to_str().unwrap_or_default(),
            )],
            &[],
        );
        assert!(
            e.starts_with(&format!(
                "server.tokenFile: cannot read {:?}: ",
                missing.display().to_string()
            )),
            "{e}"
        );
        assert!(e.ends_with("[env WATCH_SERVER_TOKENFILE]"), "{e}");
        // A huge file is refused, without reading it all.
        let e = err("", &[("WATCH_SERVER_TOKENFILE", "/dev/zero")], &[]);
        assert!(
            e.starts_with(r#"server.tokenFile: cannot read "/dev/zero": larger than 64 KiB"#),
            "{e}"
        );
        // Empty values mean "not set".
        let c = cfg("server:\n  token: \"\"\n  readTokenFile: \"\"\n", &[], &[]);
        assert_eq!((c.server.token, c.server.read_token), (None, None));
    }

    #[test]
    fn secrets_are_masked_in_render_and_debug() {
        let mut c = Config::default();
        c.server.token = Some(Secret::new("tok-123"));
        c.registry.auth[0].password = Secret::new("pw-456");
        c.notify.webhooks.push(Webhook {
            url: Secret::new("https://hooks.example/secret-789"),
            events: vec![WebhookEvent::Updated],
            format: WebhookFormat::Discord,
        });
        let text = render_effective(&c);
        let debug = format!("{c:?}");
        for shown in [&text, &debug] {
            for secret in ["tok-123", "pw-456", "secret-789"] {
                assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
            }
        }
        assert!(text.contains("  token: \"***\"\n"), "{text}");
        assert!(text.contains("  readToken: \"\"\n"), "{text}");
        assert!(text.contains("      password: \"***\"\n"), "{text}");
        assert!(
            text.contains(
                "    - url: \"***\"\n      events: [\"updated\"]\n      format: \"discord\"\n"
            ),
            "{text}"
        );
        let opts = LoadOptions {
            file: None,
            env: pairs(&[("WATCH_SERVER_TOKEN", "tok-123")]),
            flags: pairs(&[("server.token", "tok-123")]),
        };
        assert!(!format!("{opts:?}").contains("tok-123"));
    }

    #[test]
    fn rendering_round_trips() {
        assert_eq!(
            cfg(&render_effective(&Config::default()), &[], &[]),
            Config::default()
        );
        let mut c = Config::default();
        c.server.addr = "[::1]:9000".into();
        c.docker.api_version = Some((1, 41));
        c.scan.interval = Duration::from_millis(5_400_500);
        c.scan.cron = Some("0 */2 * * *".into());
        c.scan.timezone = Some("Europe/Paris".into());
        c.update.auto_update_cron = None;
        c.policy.floating_tags = s(&["edge"]);
        c.policy.skip_labels = s(&["note=we \"quote\", ok", "x"]);
        c.registry.auth = vec![];
        c.registry.insecure = s(&["registry.local:5000"]);
        c.registry.docker_config = Some(PathBuf::from("/cfg/config.json"));
        c.logging.level = log::LevelFilter::Off;
        c.notify.webhooks.push(Webhook {
            url: Secret::default(),
            events: vec![WebhookEvent::Available],
            format: WebhookFormat::Ntfy,
        });
        // The masked webhook URL cannot round-trip: give it back through a flag.
        let text = render_effective(&c);
        let back = cfg(
            &text,
            &[],
            &[("notify.webhooks[0].url", "https://n.example/t")],
        );
        c.notify.webhooks[0].url = Secret::new("https://n.example/t");
        assert_eq!(back, c, "{text}");
    }

    #[test]
    fn config_yaml_at_the_top_is_the_defaults_with_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let l = load(&LoadOptions {
            file: Some(path.clone()),
            ..Default::default()
        })
        .expect("config.yaml loads");
        assert_eq!(l.config, Config::default());
        assert!(l.warnings.is_empty());
        // Same keys as the rendering of the defaults (values may be spelled differently: 60s = 1m).
        fn keys(v: &serde_norway::Value, prefix: &str, out: &mut Vec<String>) {
            match v {
                serde_norway::Value::Mapping(m) => {
                    for (k, v) in m {
                        let k = join_key(prefix, k.as_str().unwrap_or("?"));
                        out.push(k.clone());
                        keys(v, &k, out);
                    }
                }
                serde_norway::Value::Sequence(items) => {
                    for (i, v) in items.iter().enumerate() {
                        keys(v, &format!("{prefix}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
        let text = std::fs::read_to_string(&path).expect("read config.yaml");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        keys(&serde_norway::from_str(&text).expect("yaml"), "", &mut a);
        keys(
            &serde_norway::from_str(&render_effective(&Config::default())).expect("yaml"),
            "",
            &mut b,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn ca_file_must_exist() {
        let dir = TempDir::new();
        let ca = dir.file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
        let c = cfg(
            "",
            &[("WATCH_REGISTRY_CA_FILE", ca.to_str().unwrap_or_default())],
            &[],
        );
        assert_eq!(c.registry.ca_file, Some(ca));
        let e = err("", &[], &[("registry.caFile", "/nonexistent/ca.pem")]);
        assert!(
            e.starts_with(r#"registry.caFile: "/nonexistent/ca.pem" cannot be read: "#),
            "{e}"
        );
    }

    #[test]
    fn durations_parse_and_format() {
        for (text, ms) in [
            ("90s", Some(90_000)),
            ("10m", Some(600_000)),
            ("1h30m", Some(5_400_000)),
            ("2d", Some(172_800_000)),
            ("500ms", Some(500)),
            ("0s", Some(0)),
            ("0", Some(0)),
            ("1H", Some(3_600_000)),
            (" 5m ", Some(300_000)),
            ("1m30", None),
            ("10x", None),
            ("", None),
            ("m", None),
            ("-5s", None),
            ("1.5h", None),
            ("99999999999999999999s", None),
            ("18446744073709551615d", None),
        ] {
            assert_eq!(
                parse_duration(text),
                ms.map(Duration::from_millis),
                "{text:?}"
            );
        }
        for (ms, text) in [
            (0, "0s"),
            (90_000, "1m30s"),
            (5_400_000, "1h30m"),
            (172_800_000, "2d"),
            (500, "500ms"),
            (86_401_001, "1d1s1ms"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Some(d));
        }
    }

    #[test]
    fn cron_takes_five_or_six_fields_and_posix_weekdays() {
        for ok in [
            "0 3 * * *",
            "0 3 * * 0",
            "0 3 * * 7",
            "0 3 * * MON-FRI",
            "*/10 * * * * *",
            "@daily",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in ["", "* * * *", "0 0 0 * * * 2030", "60 * * * *", "x"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_versions_and_addresses() {
        assert_eq!(parse_api_version("auto"), Ok(None));
        assert_eq!(parse_api_version(""), Ok(None));
        assert_eq!(parse_api_version("1.24"), Ok(Some((1, 24))));
        assert_eq!(parse_api_version("v1.44"), Ok(Some((1, 44))));
        for ok in [":8080", "0.0.0.0:80", "localhost:1", "[::]:8080", "[::1]:9"] {
            assert!(parse_addr(ok).is_ok(), "{ok}");
        }
        for ok in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "tcp://docker:2376/",
        ] {
            assert!(parse_docker_host(ok).is_ok(), "{ok}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(yaml in "\\PC{0,80}", value in "\\PC{0,20}", key in "[a-zA-Z_.\\[\\]0-9]{0,30}") {
            let _ = load_all(&yaml, &[("WATCH_SCAN_INTERVAL", &value), (&format!("WATCH_{key}"), &value)], &[(&key, &value)]);
            let _ = parse_duration(&value);
        }
    }
}

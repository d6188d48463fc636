//! Where registry credentials come from, in order (SPEC.md §5): `registry.auth` entries from our config,
//! then docker's `config.json`: `credHelpers[host]` → `credsStore` → `auths[host]`. Credential helpers
//! are run as `docker-credential-<name> get` with a timeout. A missing helper binary (the scratch image
//! has none) is one warning per helper name and a fall-back to `auths`.
//! Owns host matching (`docker.io` ≡ `index.docker.io` ≡ `registry-1.docker.io`). Knows nothing of
//! HTTP or tokens; the environment (config path, HOME, PATH) is injectable so tests never read ours.

use crate::config::{RegistryConfig, Secret};
use base64::Engine as _;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Docker Hub's key in `config.json` and the server URL its helpers expect.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// Helpers print one small JSON object; anything bigger is not a credential.
const HELPER_OUTPUT_MAX: u64 = 64 * 1024;

/// A credential for one registry. Debug prints no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token (docker login with a token; helper username `<token>`).
    IdentityToken(Secret),
}

#[derive(Debug)]
pub enum CredentialError {
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    BadAuthField {
        path: PathBuf,
        key: String,
    },
    HelperSpawn {
        helper: String,
        source: std::io::Error,
    },
    HelperTimeout {
        helper: String,
        timeout: Duration,
    },
    HelperFailed {
        helper: String,
        status: String,
        stderr: String,
    },
    HelperOutput {
        helper: String,
        source: serde_json::Error,
    },
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::ConfigRead { path, .. } => {
                write!(f, "read docker config {}", path.display())
            }
            CredentialError::ConfigParse { path, .. } => {
                write!(f, "parse docker config {}", path.display())
            }
            CredentialError::BadAuthField { path, key } => write!(
                f,
                "docker config {}: auths[{key:?}].auth is not base64 of user:password",
                path.display()
            ),
            CredentialError::HelperSpawn { helper, .. } => write!(f, "run {helper}"),
            CredentialError::HelperTimeout { helper, timeout } => {
                write!(
                    f,
                    "{helper} get: no answer within {}s (killed)",
                    timeout.as_secs()
                )
            }
            CredentialError::HelperFailed {
                helper,
                status,
                stderr,
            } => write!(f, "{helper} get: {status}: {stderr}"),
            CredentialError::HelperOutput { helper, .. } => {
                write!(f, "{helper} get: output is not the credential JSON")
            }
        }
    }
}

impl std::error::Error for CredentialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CredentialError::ConfigRead { source, .. } => Some(source),
            CredentialError::ConfigParse { source, .. } => Some(source),
            CredentialError::HelperSpawn { source, .. } => Some(source),
            CredentialError::HelperOutput { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The parts of the process environment the lookup depends on; injectable for tests.
#[derive(Debug, Clone, Default)]
pub struct LookupEnv {
    /// `$DOCKER_CONFIG`.
    pub docker_config_dir: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// Directories searched for `docker-credential-*` (`$PATH`).
    pub path: Vec<PathBuf>,
}

impl LookupEnv {
    /// Reads `DOCKER_CONFIG`, `HOME` and `PATH` from the process environment.
    pub fn from_process() -> Self {
        LookupEnv {
            docker_config_dir: std::env::var_os("DOCKER_CONFIG").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }
}

/// Finds the credential for a registry. Cheap to share between threads.
#[derive(Debug)]
pub struct CredentialStore {
    /// (canonical host, credential) from `registry.auth`, empty entries dropped.
    configured: Vec<(String, Credential)>,
    config_json: Option<PathBuf>,
    path: Vec<PathBuf>,
    helper_timeout: Duration,
    missing_helper_warnings: AtomicUsize,
}

impl CredentialStore {
    /// From our config and the process environment.
    pub fn new(cfg: &RegistryConfig) -> Self {
        Self::with_env(cfg, LookupEnv::from_process())
    }

    pub fn with_env(cfg: &RegistryConfig, env: LookupEnv) -> Self {
        let configured = cfg
            .auth
            .iter()
            // The defaults list Docker Hub and ghcr.io with blank credentials: placeholders, not logins.
            .filter(|a| !a.username.is_empty() || !a.password.is_empty())
            .map(|a| {
                (
                    canonical_host(&a.host),
                    Credential::Basic {
                        username: a.username.clone(),
                        password: a.password.clone(),
                    },
                )
            })
            .collect();
        let config_json = cfg
            .docker_config
            .clone()
            .or_else(|| env.docker_config_dir.map(|d| d.join("config.json")))
            .or_else(|| env.home.map(|h| h.join(".docker").join("config.json")));
        CredentialStore {
            configured,
            config_json,
            path: env.path,
            helper_timeout: HELPER_TIMEOUT,
            missing_helper_warnings: AtomicUsize::new(0),
        }
    }

    /// Changes the helper timeout (10 s by default).
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// The credential for `registry` (a normalised reference's registry: `docker.io`, `ghcr.io`,
    /// `localhost:5000`), or None for anonymous access.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        let host = canonical_host(registry);
        if let Some((_, c)) = self.configured.iter().find(|(h, _)| *h == host) {
            return Ok(Some(c.clone()));
        }
        let Some(path) = &self.config_json else {
            return Ok(None);
        };
        let file = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialError::ConfigRead {
                    path: path.clone(),
                    source,
                })
            }
        };
        let file: DockerConfigFile =
            serde_json::from_slice(&file).map_err(|source| CredentialError::ConfigParse {
                path: path.clone(),
                source,
            })?;

        let helper = file
            .cred_helpers
            .iter()
            .find(|(k, _)| canonical_host(k) == host)
            .map(|(_, v)| v)
            .or(file.creds_store.as_ref())
            .filter(|h| !h.is_empty());
        if let Some(name) = helper {
            if let Some(c) = self.run_helper(name, &server_url(&host))? {
                return Ok(Some(c));
            }
        }
        for (key, entry) in &file.auths {
            if canonical_host(key) == host {
                if let Some(c) = entry.credential(path, key)? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// How many missing-helper warnings this store has logged (for tests and diagnostics).
    pub fn missing_helper_warnings(&self) -> usize {
        self.missing_helper_warnings.load(Ordering::Relaxed)
    }

    fn run_helper(
        &self,
        name: &str,
        server_url: &str,
    ) -> Result<Option<Credential>, CredentialError> {
        let program = format!("docker-credential-{name}");
        let Some(exe) = find_in(&self.path, &program) else {
            if first_warning_for(name) {
                self.missing_helper_warnings.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    component = "registry", helper = program.as_str();
                    "credential helper {program} not found on PATH; using config.json auths instead"
                );
            }
            return Ok(None);
        };
        let out = run_with_timeout(&exe, server_url, self.helper_timeout).map_err(|e| match e {
            RunError::Spawn(source) => CredentialError::HelperSpawn {
                helper: program.clone(),
                source,
            },
            RunError::Timeout => CredentialError::HelperTimeout {
                helper: program.clone(),
                timeout: self.helper_timeout,
            },
        })?;
        parse_helper_output(&program, out)
    }
}

/// Canonical host for matching: scheme and path dropped, lowercased, Docker Hub's names unified.
pub fn canonical_host(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// The server URL helpers are asked about (docker's convention: Hub has its legacy v1 URL).
fn server_url(canonical: &str) -> String {
    if canonical == "docker.io" {
        DOCKER_HUB_CONFIG_KEY.to_string()
    } else {
        canonical.to_string()
    }
}

/// One warning per helper name per process, however many stores and lookups there are.
fn first_warning_for(name: &str) -> bool {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let set = WARNED.get_or_init(Default::default);
    match set.lock() {
        Ok(mut s) => s.insert(name.to_string()),
        Err(poisoned) => poisoned.into_inner().insert(name.to_string()),
    }
}

fn find_in(dirs: &[PathBuf], program: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(program)).find(|p| p.is_file())
}

#[derive(Debug, serde::Deserialize, Default)]
#[serde(default)]
struct DockerConfigFile {
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthEntry(***)")
    }
}

impl AuthEntry {
    fn credential(&self, path: &Path, key: &str) -> Result<Option<Credential>, CredentialError> {
        if let Some(t) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(Secret::new(t))));
        }
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = || CredentialError::BadAuthField {
                path: path.to_path_buf(),
                key: key.to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::Basic {
                username: user.to_string(),
                password: Secret::new(pass),
            }));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() || !p.is_empty() => Ok(Some(Credential::Basic {
                username: u.clone(),
                password: Secret::new(p.as_str()),
            })),
            _ => Ok(None),
        }
    }
}

struct HelperOutput {
    success: bool,
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum RunError {
    Spawn(std::io::Error),
    Timeout,
}

/// Runs `exe get` with `input` on stdin; kills it when it outlives `timeout`.
fn run_with_timeout(exe: &Path, input: &str, timeout: Duration) -> Result<HelperOutput, RunError> {
    let mut child = Command::new(exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let deadline = Instant::now() + timeout;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading gives EPIPE here; its exit status tells the story.
        let _ = stdin.write_all(input.as_bytes());
    }
    let readers = [
        child.stdout.take().map(|s| spawn_reader(Box::new(s))),
        child.stderr.take().map(|s| spawn_reader(Box::new(s))),
    ];
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout);
            }
        }
    };
    let [stdout, stderr] = readers.map(|r| {
        r.and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
            .unwrap_or_default()
    });
    Ok(HelperOutput {
        success: status.success(),
        status: status.to_string(),
        stdout,
        stderr,
    })
}

/// Reads a pipe to its end (bounded) on its own thread, so a chatty helper cannot block on a full pipe.
fn spawn_reader(pipe: Box<dyn Read + Send>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("cred-helper-io".into())
        .spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.take(HELPER_OUTPUT_MAX).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    if spawned.is_err() {
        log::warn!(component = "registry"; "could not start a thread to read a credential helper");
    }
    rx
}

#[derive(serde::Deserialize)]
struct HelperCredential {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn parse_helper_output(
    program: &str,
    out: HelperOutput,
) -> Result<Option<Credential>, CredentialError> {
    if !out.success {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The helper protocol's "no credentials" answer (docker-credential-helpers ErrCredentialsNotFound).
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        let message = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return Err(CredentialError::HelperFailed {
            helper: program.to_string(),
            status: out.status,
            stderr: message.trim().chars().take(200).collect(),
        });
    }
    let c: HelperCredential =
        serde_json::from_slice(&out.stdout).map_err(|source| CredentialError::HelperOutput {
            helper: program.to_string(),
            source,
        })?;
    if c.username.is_empty() && c.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if c.username == "<token>" {
        Credential::IdentityToken(Secret::new(c.secret))
    } else {
        Credential::Basic {
            username: c.username,
            password: Secret::new(c.secret),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RegistryAuth};

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: Secret::new(p),
        })
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// A temp dir with a config.json and a bin dir; removed on drop.
    struct Fixture {
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str, config_json: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("wdtest-cred-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("bin")).unwrap();
            std::fs::write(dir.join("config.json"), config_json).unwrap();
            Fixture { dir }
        }

        fn helper(&self, name: &str, script: &str) -> &Self {
            use std::os::unix::fs::PermissionsExt;
            let p = self
                .dir
                .join("bin")
                .join(format!("docker-credential-{name}"));
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            self
        }

        fn store(&self, auth: Vec<RegistryAuth>) -> CredentialStore {
            let mut cfg = Config::default().registry;
            cfg.auth = auth;
            CredentialStore::with_env(
                &cfg,
                LookupEnv {
                    docker_config_dir: Some(self.dir.clone()),
                    home: None,
                    path: vec![self.dir.join("bin")],
                },
            )
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn canonical_hosts() {
        for (input, want) in [
            ("docker.io", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("GHCR.io", "ghcr.io"),
            ("https://ghcr.io", "ghcr.io"),
            ("http://localhost:5000/v2/", "localhost:5000"),
            ("localhost:5000", "localhost:5000"),
        ] {
            assert_eq!(canonical_host(input), want, "{input}");
        }
    }

    #[test]
    fn config_file_location() {
        let cfg = Config::default().registry;
        let env = |dc: Option<&str>, home: Option<&str>| LookupEnv {
            docker_config_dir: dc.map(PathBuf::from),
            home: home.map(PathBuf::from),
            path: vec![],
        };
        let at = |cfg: &RegistryConfig, e| CredentialStore::with_env(cfg, e).config_json;
        assert_eq!(
            at(&cfg, env(Some("/dc"), Some("/h"))),
            Some("/dc/config.json".into())
        );
        assert_eq!(
            at(&cfg, env(None, Some("/h"))),
            Some("/h/.docker/config.json".into())
        );
        assert_eq!(at(&cfg, env(None, None)), None);
        let mut explicit = cfg.clone();
        explicit.docker_config = Some("/x/c.json".into());
        assert_eq!(
            at(&explicit, env(Some("/dc"), Some("/h"))),
            Some("/x/c.json".into())
        );
    }

    #[test]
    fn order_config_then_auths() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "ghcr.io": {{"username": "gu", "password": "gp"}},
                "http://localhost:5000": {{"identitytoken": "idt"}},
                "empty.io": {{}},
                "bad.io": {{"auth": "!!!"}}
            }}}}"#,
            b64("hub:pw:with:colons")
        );
        let f = Fixture::new("order", &json);
        let configured = vec![
            RegistryAuth {
                host: "registry-1.docker.io".into(),
                username: String::new(),
                password: Secret::default(),
            },
            RegistryAuth {
                host: "quay.io".into(),
                username: "qu".into(),
                password: Secret::new("qp"),
            },
        ];
        let s = f.store(configured);
        assert_eq!(
            s.lookup("docker.io").unwrap(),
            basic("hub", "pw:with:colons")
        );
        assert_eq!(s.lookup("ghcr.io").unwrap(), basic("gu", "gp"));
        assert_eq!(s.lookup("quay.io").unwrap(), basic("qu", "qp"));
        assert_eq!(
            s.lookup("localhost:5000").unwrap(),
            Some(Credential::IdentityToken(Secret::new("idt")))
        );
        assert_eq!(s.lookup("empty.io").unwrap(), None);
        assert_eq!(s.lookup("nowhere.io").unwrap(), None);
        let e = s.lookup("bad.io").unwrap_err().to_string();
        assert!(e.contains("bad.io") && e.contains("base64"), "{e}");

        // registry.auth wins over config.json.
        let s = f.store(vec![RegistryAuth {
            host: "index.docker.io".into(),
            username: "cfg".into(),
            password: Secret::new("cp"),
        }]);
        assert_eq!(s.lookup("docker.io").unwrap(), basic("cfg", "cp"));
    }

    #[test]
    fn missing_or_broken_config_file() {
        let f = Fixture::new("broken", "{not json");
        let e = f.store(vec![]).lookup("ghcr.io").unwrap_err();
        assert!(matches!(e, CredentialError::ConfigParse { .. }), "{e}");
        std::fs::remove_file(f.dir.join("config.json")).unwrap();
        assert_eq!(f.store(vec![]).lookup("ghcr.io").unwrap(), None);
    }

    #[test]
    fn helpers_in_order() {
        let json = format!(
            r#"{{"credsStore": "wdtest-store",
                "credHelpers": {{"ghcr.io": "wdtest", "quay.io": "wdtest-gone-{pid}"}},
                "auths": {{"quay.io": {{"auth": "{a}"}}, "ghcr.io": {{"auth": "{a}"}}}}}}"#,
            pid = std::process::id(),
            a = b64("fallback:fp"),
        );
        let f = Fixture::new("helpers", &json);
        // Echoes the server URL it was asked about, so the test sees what was written on stdin.
        f.helper(
            "wdtest",
            r#"[ "$1" = get ] || exit 9
read url
case "$url" in
  ghcr.io) printf '{"ServerURL":"%s","Username":"<token>","Secret":"tok-%s"}' "$url" "$url" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#,
        )
        .helper(
            "wdtest-store",
            r#"read url
case "$url" in
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"hubuser","Secret":"hubpw"}' ;;
  fail.io) echo "keychain locked" >&2; exit 3 ;;
  garbage.io) echo "<html>" ;;
  slow.io) exec sleep 30 ;;
  *) echo "credentials not found"; exit 1 ;;
esac"#,
        );
        let s = f
            .store(vec![])
            .with_helper_timeout(Duration::from_millis(300));
        assert_eq!(
            s.lookup("ghcr.io").unwrap(),
            Some(Credential::IdentityToken(Secret::new("tok-ghcr.io")))
        );
        assert_eq!(s.lookup("docker.io").unwrap(), basic("hubuser", "hubpw"));
        assert_eq!(s.lookup("other.io").unwrap(), None);

        // A missing helper: one warning, then config.json auths.
        assert_eq!(s.lookup("quay.io").unwrap(), basic("fallback", "fp"));
        assert_eq!(s.lookup("quay.io").unwrap(), basic("fallback", "fp"));
        assert_eq!(s.missing_helper_warnings(), 1);

        let e = s.lookup("fail.io").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-wdtest-store") && e.contains("keychain locked"),
            "{e}"
        );
        let e = s.lookup("garbage.io").unwrap_err();
        assert!(matches!(e, CredentialError::HelperOutput { .. }), "{e}");
        let quick = f
            .store(vec![])
            .with_helper_timeout(Duration::from_millis(200));
        let e = quick.lookup("slow.io").unwrap_err();
        assert!(matches!(e, CredentialError::HelperTimeout { .. }), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = basic("u", "hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = Credential::IdentityToken(Secret::new("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

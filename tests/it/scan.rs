//! Update detection end to end: containers discovered on the real engine, checked by the scanner
//! against the real `docker-registry` (open, Basic, Bearer token), with request counts taken from the
//! registry's access log, the token issuer and the client's own statistics. Failure modes the real
//! registry cannot produce on demand (429, 500, garbage, slow or no answers) come from a small local
//! HTTP server posing as a registry, next to a healthy registry in the same scan. The 100-image
//! measurement behind a latency-injecting proxy runs only with `WATCH_IT_BENCH=1`.

use crate::fixtures::{
    self, unique, ContainerBuilder, ContainerGuard, Image, OciIndexBuilder, Registry, TempDir,
    TokenOptions,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use watch_docker::config::{Config, RegistryAuth, RegistryConfig, Secret};
use watch_docker::discovery;
use watch_docker::docker::Engine;
use watch_docker::model::{ContainerInfo, Platform, Status};
use watch_docker::registry::{CredentialStore, LookupEnv, RegistryClient};
use watch_docker::scanner::{CheckResult, ScanOptions, Scanner};

const NOW: &str = "2026-01-01T00:00:00Z";
const TTL: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------------------------------------
// Helpers: the product's pieces built the way the daemon builds them, but with injected settings.

/// The default registry settings without the placeholder logins, with short retries.
fn registry_config() -> RegistryConfig {
    let mut cfg = Config::default().registry;
    cfg.auth.clear();
    cfg.timeout = Duration::from_secs(10);
    cfg.max_retries = 1;
    cfg
}

/// A client that sees only `cfg.auth` and `env`: never this machine's docker config or PATH.
fn client_with(cfg: &RegistryConfig, env: LookupEnv, concurrency: usize) -> Arc<RegistryClient> {
    let store = CredentialStore::with_env(cfg, env).with_helper_timeout(Duration::from_secs(5));
    let client = RegistryClient::with_credentials(cfg, vec![], concurrency, store)
        .expect("registry client")
        .with_backoff(Duration::from_millis(10));
    Arc::new(client)
}

fn client(cfg: &RegistryConfig) -> Arc<RegistryClient> {
    client_with(cfg, LookupEnv::default(), 4)
}

fn scanner_with(client: &Arc<RegistryClient>, ttl: Duration, concurrency: usize) -> Scanner {
    Scanner::new(
        Arc::clone(client),
        Config::default().policy,
        ScanOptions {
            concurrency,
            cache_ttl: ttl,
            newer_versions: false,
            containerd_store: false,
        },
    )
}

fn scanner(client: &Arc<RegistryClient>, ttl: Duration) -> Scanner {
    scanner_with(client, ttl, 4)
}

fn engine() -> Engine {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    Engine::new(&host, None, Duration::from_secs(30)).expect("engine client")
}

/// Discovery on the real engine, kept to these containers (other tests run beside us).
fn discover(guards: &[&ContainerGuard]) -> Vec<ContainerInfo> {
    let all = discovery::discover(&engine(), false, None).expect("discover");
    let found: Vec<ContainerInfo> = all
        .containers
        .into_iter()
        .filter(|c| guards.iter().any(|g| g.id() == c.id))
        .collect();
    assert_eq!(
        found.len(),
        guards.len(),
        "discovery found {:?}",
        found.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    found
}

fn result_of<'a>(results: &'a [CheckResult], id: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.container_id == id)
        .unwrap_or_else(|| panic!("no result for {id} in {results:#?}"))
}

/// The client's request count for one registry (token requests included).
fn client_requests(client: &RegistryClient, host: &str) -> u64 {
    client
        .stats()
        .iter()
        .find(|s| s.host == host)
        .map_or(0, |s| s.requests)
}

/// Lines in the registry's access log (every request it answered so far).
fn access_lines(reg: &Registry) -> usize {
    reg.access_log().lines().count()
}

/// Image references removed on Drop, after the containers and images declared later: for local
/// references the other guards leave behind (a digest reference of an image whose tag moved on).
struct RmiOnDrop(Vec<String>);

impl Drop for RmiOnDrop {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = fixtures::docker(&["rmi", "-f", r]);
        }
    }
}

/// A repository name the stale sweep recognises as ours.
fn repo(what: &str) -> String {
    format!("wdtest/{}", unique(what))
}

// ------------------------------------------------------------------------------------------------
// 1. A tag that moves on the real registry.

#[test]
fn scan_tag_moved_on_the_registry_is_an_update() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let reg = Registry::start();
    let mut leftovers = RmiOnDrop(vec![]);
    let name = repo("app");
    let tag = format!("{name}:latest");
    let v1 = Image::build(&unique("scan-v1"))
        .file("/etc/version", "v1")
        .create();
    let v2 = Image::build(&unique("scan-v2"))
        .file("/etc/version", "v2")
        .create();
    let p1 = v1.push_to(&reg, &tag);
    p1.pull_back();
    // Once v2 takes the tag, v1 keeps only its digest reference.
    leftovers
        .0
        .push(format!("{}@{}", p1.repository(), p1.digest()));
    let ctr = ContainerBuilder::new(p1.reference()).run();

    let found = discover(&[&ctr]);
    let expected = format!("{}@{}", p1.repository(), p1.digest());
    assert!(
        found[0].repo_digests.contains(&expected),
        "{:?}",
        found[0].repo_digests
    );
    let client = client(&registry_config());
    let (results, summary) = scanner(&client, TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpToDate, "{r:?}");
    assert_eq!(r.current_digest.as_deref(), Some(p1.digest()));
    assert_eq!(r.remote_digest.as_deref(), Some(p1.digest()));
    assert_eq!((summary.checked, summary.updates_found), (1, 0));

    let p2 = v2.push_to(&reg, &tag);
    assert_ne!(p1.digest(), p2.digest());
    let found = discover(&[&ctr]);
    // A new scanner: the first one would answer from its cache for cacheTTL.
    let (results, summary) = scanner(&client, TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpdateAvailable, "{r:?}");
    assert_eq!(r.current_digest.as_deref(), Some(p1.digest()));
    assert_eq!(r.remote_digest.as_deref(), Some(p2.digest()));
    assert_eq!(summary.updates_found, 1);

    // The tag vanishes from the registry: an error naming the 404, the local digest still shown.
    assert_eq!(reg.delete_manifest(&name, p2.digest()), Ok(202));
    let (results, _) = scanner(&client, TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::Error, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or_default().contains("404"),
        "{r:?}"
    );
    assert_eq!(r.current_digest.as_deref(), Some(p1.digest()));
}

// ------------------------------------------------------------------------------------------------
// 2. Multi-platform index: a change for another platform only is not an update.

#[test]
fn scan_index_changed_for_another_platform_only_is_up_to_date() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let reg = Registry::start();
    let tag = format!("{}:latest", repo("multi"));
    let layout1 = OciIndexBuilder::standard().write();
    let pushed1 = layout1.push(&reg, &tag);
    pushed1.pull();
    // Later pushes of the tag are dropped after the container: dropping one untags the running image.
    let mut later = Vec::new();
    let ctr = ContainerBuilder::new(pushed1.reference()).run();
    let found = discover(&[&ctr]);
    assert_eq!(
        found[0].platform,
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None
        }
    );
    let client = client(&registry_config());
    let (results, _) = scanner(&client, TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpToDate, "{r:?}");
    assert_eq!(r.current_digest.as_deref(), Some(layout1.index_digest()));

    // Only arm64 changes: a new index digest, the same amd64 manifest.
    let layout2 = OciIndexBuilder::standard()
        .marker("linux/arm64", "v2")
        .write();
    assert_ne!(layout1.index_digest(), layout2.index_digest());
    assert_eq!(
        layout1.manifest_digest("linux/amd64"),
        layout2.manifest_digest("linux/amd64")
    );
    later.push(layout2.push(&reg, &tag));
    let gets_before = reg.count_requests("GET", "/manifests/");
    let (results, _) = scanner(&client, TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpToDate, "only arm64 changed: {r:?}");
    assert_eq!(r.current_digest.as_deref(), Some(layout1.index_digest()));
    assert_eq!(r.remote_digest.as_deref(), Some(layout2.index_digest()));
    let confirm_gets = reg.count_requests("GET", "/manifests/") - gets_before;
    assert!(
        (1..=2).contains(&confirm_gets),
        "the index and at most the amd64 manifest: {confirm_gets}"
    );

    // The same state again: the verdict is remembered, only the HEAD goes out.
    let heads_before = reg.count_requests("HEAD", "/manifests/");
    let gets_before = reg.count_requests("GET", "/manifests/");
    let (results, _) = scanner(&client, TTL).scan(&found, NOW);
    assert_eq!(result_of(&results, ctr.id()).status, Status::UpToDate);
    let rescan_gets = reg.count_requests("GET", "/manifests/") - gets_before;
    let rescan_heads = reg.count_requests("HEAD", "/manifests/") - heads_before;
    println!(
        "multi-platform: confirmation GETs {confirm_gets}, unchanged rescan: {rescan_heads} HEAD, {rescan_gets} manifest GET"
    );
    assert_eq!(rescan_gets, 0, "an unchanged rescan sends no manifest GET");
    assert_eq!(rescan_heads, 1);

    // Someone pulls the tag again: the same amd64 image, now also known by the new index digest.
    // Whatever the order of its RepoDigests, it is the remote digest (no confirmation needed).
    later[0].pull();
    let mut repulled = discover(&[&ctr]).remove(0);
    assert_eq!(
        repulled.repo_digests.len(),
        2,
        "{:?}",
        repulled.repo_digests
    );
    for _ in 0..2 {
        repulled.repo_digests.reverse();
        let gets_before = reg.count_requests("GET", "/manifests/");
        let fresh = self::client(&registry_config());
        let (results, _) = scanner(&fresh, TTL).scan(std::slice::from_ref(&repulled), NOW);
        let r = result_of(&results, ctr.id());
        assert_eq!(r.status, Status::UpToDate, "{r:?}");
        assert_eq!(r.current_digest.as_deref(), Some(layout2.index_digest()));
        assert_eq!(r.remote_digest.as_deref(), Some(layout2.index_digest()));
        assert_eq!(reg.count_requests("GET", "/manifests/"), gets_before);
    }

    // amd64 changes too: that is an update.
    let layout3 = OciIndexBuilder::standard()
        .marker("linux/amd64", "v2")
        .marker("linux/arm64", "v2")
        .write();
    assert_ne!(
        layout1.manifest_digest("linux/amd64"),
        layout3.manifest_digest("linux/amd64")
    );
    later.push(layout3.push(&reg, &tag));
    let (results, _) = scanner(&client, TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpdateAvailable, "{r:?}");
    assert_eq!(r.remote_digest.as_deref(), Some(layout3.index_digest()));
}

// ------------------------------------------------------------------------------------------------
// 3. Basic auth with credentials from `registry.auth`, and without any.

#[test]
fn scan_basic_auth_registry_with_and_without_credentials() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let (user, pass) = ("wduser", "wd-pass:with colon");
    let locked = Registry::start_basic_auth(user, pass);
    let open = Registry::start();
    let image = Image::build(&unique("scan-basic")).create();
    let p_locked = image.push_to(&locked, &format!("{}:latest", repo("locked")));
    p_locked.pull_back();
    let p_open = image.push_to(&open, &format!("{}:latest", repo("open")));
    p_open.pull_back();
    let c_locked = ContainerBuilder::new(p_locked.reference()).run();
    let c_open = ContainerBuilder::new(p_open.reference()).run();
    let found = discover(&[&c_locked, &c_open]);

    let mut cfg = registry_config();
    cfg.auth.push(RegistryAuth {
        host: locked.host(),
        username: user.into(),
        password: Secret::new(pass),
    });
    let (results, _) = scanner(&client(&cfg), TTL).scan(&found, NOW);
    let r = result_of(&results, c_locked.id());
    assert_eq!(r.status, Status::UpToDate, "{r:?}");
    assert_eq!(r.remote_digest.as_deref(), Some(p_locked.digest()));
    assert_eq!(result_of(&results, c_open.id()).status, Status::UpToDate);

    let (results, summary) = scanner(&client(&registry_config()), TTL).scan(&found, NOW);
    let r = result_of(&results, c_locked.id());
    assert_eq!(r.status, Status::Error, "{r:?}");
    let msg = r.error.as_deref().unwrap_or_default();
    assert!(
        msg.contains("401") && msg.contains("credentials") && msg.contains(&locked.host()),
        "{msg}"
    );
    assert_eq!(r.current_digest.as_deref(), Some(p_locked.digest()));
    let r = result_of(&results, c_open.id());
    assert_eq!(
        r.status,
        Status::UpToDate,
        "other registries unaffected: {r:?}"
    );
    assert_eq!((summary.errors, summary.checked), (1, 1));
}

// ------------------------------------------------------------------------------------------------
// 4. Bearer tokens: one batched token per registry, reused across scans; the cache within cacheTTL.

#[test]
fn scan_token_registry_request_counts() {
    if !fixtures::require_registry_tools() {
        return;
    }
    const N: usize = 5;
    let reg = Registry::start_token_auth(TokenOptions::new());
    let issuer = reg.issuer().expect("token issuer");
    let image = Image::build(&unique("scan-token")).create();
    let pushed: Vec<_> = (0..N)
        .map(|i| image.push_to(&reg, &format!("{}:latest", repo(&format!("tok{i}")))))
        .collect();
    for p in &pushed {
        p.pull_back();
    }
    let ctrs: Vec<ContainerGuard> = pushed
        .iter()
        .map(|p| ContainerBuilder::new(p.reference()).run())
        .collect();
    let found = discover(&ctrs.iter().collect::<Vec<_>>());
    let host = reg.host();

    let client = client(&registry_config());
    let count = |label: &str, f: &dyn Fn()| -> (usize, usize, u64) {
        let (log0, tok0, cli0) = (
            access_lines(&reg),
            issuer.requests(),
            client_requests(&client, &host),
        );
        f();
        let (reg_n, tok_n, cli_n) = (
            access_lines(&reg) - log0,
            issuer.requests() - tok0,
            client_requests(&client, &host) - cli0,
        );
        println!(
            "token registry, {N} images, {label}: {} requests ({reg_n} registry + {tok_n} token); client counted {cli_n}",
            reg_n + tok_n
        );
        (reg_n, tok_n, cli_n)
    };
    let all_up = |results: &[CheckResult]| {
        for p in &found {
            let r = result_of(results, &p.id);
            assert_eq!(r.status, Status::UpToDate, "{r:?}");
        }
    };

    // Cold: GET /v2/ for the challenge, one token for all five repositories, five HEADs.
    let first = scanner(&client, TTL);
    let (reg_n, tok_n, cli_n) = count("cold", &|| all_up(&first.scan(&found, NOW).0));
    assert_eq!(tok_n, 1, "one batched token request: {:?}", issuer.scopes());
    assert_eq!(issuer.scopes().last().map(Vec::len), Some(N));
    assert!(reg_n + tok_n <= N + 2, "cold: {} > N + 2", reg_n + tok_n);
    assert_eq!(cli_n as usize, reg_n + tok_n);

    // Cache expired (a new scanner), token still valid: the five HEADs only.
    let second = scanner(&client, TTL);
    let (reg_n, tok_n, _) = count("cached token", &|| all_up(&second.scan(&found, NOW).0));
    assert_eq!((reg_n, tok_n), (N, 0));

    // Within cacheTTL: nothing at all.
    let (reg_n, tok_n, _) = count("within cacheTTL", &|| {
        let (results, summary) = second.scan(&found, NOW);
        all_up(&results);
        assert_eq!(summary.references_fetched, 0);
    });
    assert_eq!((reg_n, tok_n), (0, 0));

    // An issuer that refuses several scopes at once: one token per repository instead.
    issuer.set_refuse_multi_scope(true);
    let fresh = self::client(&registry_config());
    let tok0 = issuer.requests();
    let (results, summary) = scanner(&fresh, TTL).scan(&found, NOW);
    all_up(&results);
    assert_eq!(summary.errors, 0);
    let tok_n = issuer.requests() - tok0;
    println!("token registry, multi-scope refused: {tok_n} token requests");
    assert_eq!(tok_n, 1 + N, "the refused batch, then one per repository");
}

/// A token server on another port of the registry's host (docker_auth's usual layout, plain HTTP
/// inside a network) gets the configured credentials; without them the error names the token refusal.
#[test]
fn scan_token_registry_with_credentials_on_another_port() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let (user, pass) = ("tokuser", "tok-pass");
    let reg = Registry::start_token_auth(TokenOptions::new().credentials(user, pass));
    let issuer = reg.issuer().expect("token issuer");
    assert_ne!(
        issuer.realm(),
        format!("{}/token", reg.url()),
        "the realm is on another port"
    );
    let image = Image::build(&unique("scan-tokcred")).create();
    let pushed = image.push_to(&reg, &format!("{}:latest", repo("tokcred")));
    pushed.pull_back();
    let ctr = ContainerBuilder::new(pushed.reference()).run();
    let found = discover(&[&ctr]);

    let mut cfg = registry_config();
    cfg.auth.push(RegistryAuth {
        host: reg.host(),
        username: user.into(),
        password: Secret::new(pass),
    });
    let (results, _) = scanner(&client(&cfg), TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpToDate, "{r:?}");
    assert_eq!(r.remote_digest.as_deref(), Some(pushed.digest()));

    let (results, _) = scanner(&client(&registry_config()), TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::Error, "{r:?}");
    let msg = r.error.as_deref().unwrap_or_default();
    assert!(msg.contains("token endpoint answered 401"), "{msg}");
}

/// Many repositories on one token registry: as few token requests as the URL limit allows (each
/// batch well filled), one HEAD per repository, and the real registry accepts the batched token.
#[test]
fn scan_token_registry_many_repositories_in_batches() {
    if !fixtures::require_registry_tools() {
        return;
    }
    const N: usize = 100;
    let reg = Registry::start_token_auth(TokenOptions::new());
    let issuer = reg.issuer().expect("token issuer");
    let image = Image::build(&unique("scan-many")).create();
    let base_repo = repo("many");
    let pushed = image.push_to(&reg, &format!("{base_repo}:latest"));
    let prefix = unique("m");
    let repos: Vec<String> = (0..N).map(|i| format!("wdtest/{prefix}-{i}")).collect();
    let mut scopes = vec![format!("repository:{base_repo}:pull")];
    scopes.extend(repos.iter().map(|r| format!("repository:{r}:push,pull")));
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let auth = format!("Bearer {}", issuer.mint(&scopes));
    let agent = setup_agent();
    for r in &repos {
        copy_repository(&agent, &reg.url(), &base_repo, r, Some(&auth));
    }
    let containers: Vec<ContainerInfo> = repos
        .iter()
        .enumerate()
        .map(|(i, r)| {
            synthetic(
                &format!("many{i}"),
                &format!("{}/{r}:latest", reg.host()),
                pushed.digest(),
            )
        })
        .collect();

    let (log0, tok0, asked0) = (access_lines(&reg), issuer.requests(), issuer.scopes().len());
    let client = client_with(&registry_config(), LookupEnv::default(), 8);
    let (results, summary) = scanner_with(&client, TTL, 8).scan(&containers, NOW);
    assert_eq!((summary.checked, summary.errors), (N, 0), "{results:#?}");
    let (requests, tokens) = (access_lines(&reg) - log0, issuer.requests() - tok0);
    let batches: Vec<usize> = issuer.scopes()[asked0..].iter().map(Vec::len).collect();
    println!(
        "token registry, {N} images, cold: {} requests ({requests} registry + {tokens} token, batches of {batches:?})",
        requests + tokens
    );
    assert_eq!(requests, N + 1, "GET /v2/ and one HEAD per repository");
    assert_eq!(
        batches.iter().sum::<usize>(),
        N,
        "every repository asked once"
    );
    // Scopes here are ~60 characters encoded: 100 of them fit one 7 KB token URL (SPEC.md §11:
    // at most N + 2 requests cold).
    assert_eq!(tokens, 1, "{batches:?}");
    assert!(requests + tokens <= N + 2);
}

// ------------------------------------------------------------------------------------------------
// 5. Credentials from a docker config.json and from a credential helper.

/// A docker config dir whose `config.json` sends `host` to the helper `docker-credential-wdtest`, and
/// a bin dir holding that helper (it records the server URL it was asked about).
fn helper_setup(host: &str, user: &str, pass: &str) -> (TempDir, TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let config = TempDir::new("helpercfg");
    config.write(
        "config.json",
        serde_json::json!({"credHelpers": {host: "wdtest"}, "auths": {}}).to_string(),
    );
    let bin = TempDir::new("helperbin");
    let calls = bin.path().join("calls");
    let secret = serde_json::json!({"ServerURL": host, "Username": user, "Secret": pass});
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server || true\necho \"$server\" >> '{}'\ncat <<'EOF'\n{secret}\nEOF\n",
        calls.display()
    );
    let path = bin.write("docker-credential-wdtest", script);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
    // A fork elsewhere in this process may still hold the file open for writing for a moment
    // (ETXTBSY): wait until the helper runs before the product runs it.
    fixtures::wait_for(
        "the credential helper to be runnable",
        Duration::from_secs(10),
        || {
            let out = std::process::Command::new(&path)
                .arg("get")
                .stdin(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status.success().then_some(())
        },
    );
    let _ = std::fs::remove_file(&calls);
    (config, bin)
}

#[test]
fn scan_credentials_from_config_json_and_helper() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let (user, pass) = ("helperuser", "helper-pass");
    let reg = Registry::start_basic_auth(user, pass);
    let image = Image::build(&unique("scan-creds")).create();
    let pushed = image.push_to(&reg, &format!("{}:latest", repo("creds")));
    pushed.pull_back();
    let ctr = ContainerBuilder::new(pushed.reference()).run();
    let found = discover(&[&ctr]);
    let cfg = registry_config();

    // config.json `auths` with base64 user:pass (the kit writes it for docker push).
    let env = LookupEnv {
        docker_config_dir: reg.docker_config_dir().map(ToOwned::to_owned),
        ..LookupEnv::default()
    };
    let (results, _) = scanner(&client_with(&cfg, env, 2), TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpToDate, "config.json auths: {r:?}");

    // credHelpers → docker-credential-wdtest found on the injected PATH.
    let (config, bin) = helper_setup(&reg.host(), user, pass);
    let env = LookupEnv {
        docker_config_dir: Some(config.path().to_owned()),
        home: None,
        path: vec![bin.path().to_owned()],
    };
    let (results, _) = scanner(&client_with(&cfg, env, 2), TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::UpToDate, "credential helper: {r:?}");
    let calls = std::fs::read_to_string(bin.path().join("calls")).unwrap_or_default();
    assert!(
        calls.lines().count() >= 1 && calls.lines().all(|l| l == reg.host()),
        "the helper is asked about the registry: {calls:?}"
    );

    // A helper that hands out the wrong secret: a clear 401, not a crash.
    let (config, bin) = helper_setup(&reg.host(), user, "wrong");
    let env = LookupEnv {
        docker_config_dir: Some(config.path().to_owned()),
        home: None,
        path: vec![bin.path().to_owned()],
    };
    let (results, _) = scanner(&client_with(&cfg, env, 2), TTL).scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::Error, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or_default().contains("401"),
        "{r:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 6. Policy on real containers, and one request per distinct reference.

#[test]
fn scan_policy_on_real_containers() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let reg = Registry::start();
    let image = Image::build(&unique("scan-policy")).create();
    let latest = image.push_to(&reg, &format!("{}:latest", repo("pol")));
    latest.pull_back();
    let semver = image.push_to(&reg, &format!("{}:1.2.3", repo("semver")));
    semver.pull_back();
    let local = Image::build(&unique("scan-local")).create();
    let by_digest = format!("{}@{}", latest.repository(), latest.digest());

    let skipped = ContainerBuilder::new(latest.reference())
        .label("watchdocker.skip", "true")
        .run();
    let twin_a = ContainerBuilder::new(latest.reference()).run();
    let twin_b = ContainerBuilder::new(latest.reference()).run();
    let pinned_semver = ContainerBuilder::new(semver.reference()).run();
    let local_build = ContainerBuilder::new(local.name_tag()).run();
    let pinned_digest = ContainerBuilder::new(&by_digest).run();
    let found = discover(&[
        &skipped,
        &twin_a,
        &twin_b,
        &pinned_semver,
        &local_build,
        &pinned_digest,
    ]);

    let heads_before = reg.count_requests("HEAD", "/manifests/");
    let client = client(&registry_config());
    let (results, summary) = scanner(&client, TTL).scan(&found, NOW);
    let skip_reason = |g: &ContainerGuard| {
        let r = result_of(&results, g.id());
        assert_eq!(r.status, Status::Skipped, "{r:?}");
        r.skip_reason.clone().unwrap_or_default()
    };
    assert!(skip_reason(&skipped).contains("watchdocker.skip"));
    assert!(skip_reason(&pinned_semver).contains("pinned semver tag 1.2.3"));
    assert!(skip_reason(&local_build).contains("local build"));
    assert!(skip_reason(&pinned_digest).contains("pinned by digest"));
    for twin in [&twin_a, &twin_b] {
        let r = result_of(&results, twin.id());
        assert_eq!(r.status, Status::UpToDate, "{r:?}");
        assert_eq!(r.remote_digest.as_deref(), Some(latest.digest()));
    }
    assert_eq!((summary.skipped, summary.checked), (4, 2));
    assert_eq!(summary.references_fetched, 1);
    let heads = reg.count_requests("HEAD", "/manifests/") - heads_before;
    assert_eq!(heads, 1, "two containers of one image: one HEAD");
}

/// `scan.newerVersions`: a semver-pinned container is skipped and told the newer releases of its
/// variant, read from the real registry's tag list (behind a token).
#[test]
fn scan_newer_versions_from_the_tag_list() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let reg = Registry::start_token_auth(TokenOptions::new());
    let image = Image::build(&unique("scan-newer")).create();
    let name = repo("newer");
    let current = image.push_to(&reg, &format!("{name}:1.2.3"));
    current.pull_back();
    let _others: Vec<_> = [
        "1.2.2",
        "1.2.4",
        "1.10.0",
        "2.0.0",
        "1.2.4-alpine",
        "1.3.0-rc1",
        "1.3",
        "latest",
    ]
    .iter()
    .map(|t| image.push_to(&reg, &format!("{name}:{t}")))
    .collect();
    let ctr = ContainerBuilder::new(current.reference()).run();
    let found = discover(&[&ctr]);

    let client = client(&registry_config());
    let scanner = Scanner::new(
        Arc::clone(&client),
        Config::default().policy,
        ScanOptions {
            concurrency: 2,
            cache_ttl: TTL,
            newer_versions: true,
            containerd_store: false,
        },
    );
    let (results, _) = scanner.scan(&found, NOW);
    let r = result_of(&results, ctr.id());
    assert_eq!(r.status, Status::Skipped, "{r:?}");
    assert!(
        r.skip_reason
            .as_deref()
            .unwrap_or_default()
            .contains("pinned semver"),
        "{r:?}"
    );
    let newer: Vec<String> = ["1.2.4", "1.10.0", "2.0.0"].map(String::from).to_vec();
    assert_eq!(r.newer_versions.as_ref(), Some(&newer), "{r:?}");
    // The tag list is cached with the digests: a second scan asks nothing.
    let gets = reg.count_requests("GET", "/tags/list");
    let (results, _) = scanner.scan(&found, NOW);
    assert_eq!(
        result_of(&results, ctr.id()).newer_versions.as_ref(),
        Some(&newer)
    );
    assert_eq!(reg.count_requests("GET", "/tags/list"), gets);
}

// ------------------------------------------------------------------------------------------------
// 7. Registries that misbehave, next to a healthy one.

/// One canned answer of the fake registry.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Announced Content-Length when it differs from the body (a truncated answer).
    length: Option<usize>,
    delay: Duration,
}

impl Canned {
    fn new(status: u16) -> Canned {
        Canned {
            status,
            headers: vec![],
            body: vec![],
            length: None,
            delay: Duration::ZERO,
        }
    }
    fn header(mut self, k: &str, v: &str) -> Canned {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn body(mut self, b: &[u8]) -> Canned {
        self.body = b.to_vec();
        self
    }
}

type Handler = Arc<dyn Fn(&str, &str) -> Canned + Send + Sync>;

/// A plain-HTTP server on 127.0.0.1:0 answering every request through `handler(method, path)`, one
/// thread per connection, `Connection: close`. Records when each request arrived.
struct FakeRegistry {
    host: String,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    fn start(handler: Handler) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake registry");
        let host = listener
            .local_addr()
            .expect("fake registry address")
            .to_string();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (Arc::clone(&arrivals), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (handler, arrivals) = (Arc::clone(&handler), Arc::clone(&a));
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &*handler, &arrivals);
                });
            }
        });
        FakeRegistry {
            host,
            arrivals,
            stop,
            thread: Some(thread),
        }
    }
    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }
    fn hits(&self) -> usize {
        self.arrivals().len()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut conn: TcpStream,
    handler: &(dyn Fn(&str, &str) -> Canned + Send + Sync),
    arrivals: &Mutex<Vec<Instant>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Ok(());
        }
    }
    if let Ok(mut a) = arrivals.lock() {
        a.push(Instant::now());
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let a = handler(method, path);
    std::thread::sleep(a.delay);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        a.status,
        a.length.unwrap_or(a.body.len())
    );
    for (k, v) in &a.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes())?;
    if method != "HEAD" {
        conn.write_all(&a.body)?;
    }
    conn.flush()
}

/// A synthesised container of `reference` whose image has RepoDigest `digest`.
fn synthetic(name: &str, reference: &str, digest: &str) -> ContainerInfo {
    let repo = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    ContainerInfo {
        id: format!("{:0>64}", name),
        name: name.into(),
        image: reference.into(),
        image_id: format!("sha256:{:0>64}", name),
        repo_tags: vec![reference.into()],
        repo_digests: vec![format!("{repo}@{digest}")],
        labels: Default::default(),
        state: "running".into(),
        running: true,
        created: NOW.into(),
        compose_project: None,
        compose_service: None,
        platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        },
        is_self: false,
    }
}

const SOME_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn scan_bad_registries_fail_only_their_containers() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let reg = Registry::start();
    let image = Image::build(&unique("scan-healthy")).create();
    let pushed = image.push_to(&reg, &format!("{}:latest", repo("healthy")));
    pushed.pull_back();
    let ctr = ContainerBuilder::new(pushed.reference()).run();
    let healthy = discover(&[&ctr]).remove(0);

    let mut cfg = registry_config();
    cfg.timeout = Duration::from_secs(1);
    cfg.max_retries = 2;

    // The probe of `/v2/` and the two references, each with its retries: the most any case may send.
    let bound = 3 * (cfg.max_retries as usize + 1);
    // Each case: a handler, and what the error must say.
    let ok_v2 = |path: &str| path == "/v2/";
    let cases: Vec<(&str, Handler, &[&str])> = vec![
        (
            "429 + Retry-After",
            Arc::new(|_: &str, _: &str| {
                Canned::new(429)
                    .header("Retry-After", "120")
                    .header("RateLimit-Remaining", "0;w=21600")
                    .body(br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#)
            }),
            &["rate limited", "paused until"],
        ),
        (
            "500",
            Arc::new(|_: &str, _: &str| Canned::new(500).body(b"oops")),
            &["500"],
        ),
        (
            "no digest header, garbage body",
            Arc::new(move |_: &str, path: &str| {
                if ok_v2(path) {
                    Canned::new(200)
                } else {
                    Canned::new(200)
                        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                        .body(b"<html>this is not a manifest</html>")
                }
            }),
            &["unexpected answer"],
        ),
        (
            "invalid digest header, truncated body",
            Arc::new(move |_: &str, path: &str| {
                if ok_v2(path) {
                    Canned::new(200)
                } else {
                    let mut a = Canned::new(200)
                        .header("Docker-Content-Digest", "sha256:not-a-digest")
                        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                        .body(br#"{"schemaVersion":2,"#);
                    a.length = Some(4096);
                    a
                }
            }),
            &["no answer from registry"],
        ),
        (
            "slower than registry.timeout",
            Arc::new(|_: &str, _: &str| {
                let mut a = Canned::new(200);
                a.delay = Duration::from_secs(3);
                a
            }),
            &["no answer from registry"],
        ),
    ];

    for (what, handler, says) in cases {
        let fake = FakeRegistry::start(handler);
        let bad_a = synthetic("bad-a", &format!("{}/x/app:latest", fake.host), SOME_DIGEST);
        let bad_b = synthetic(
            "bad-b",
            &format!("{}/x/other:latest", fake.host),
            SOME_DIGEST,
        );
        let containers = vec![bad_a.clone(), healthy.clone(), bad_b.clone()];
        let client = client(&cfg);
        let started = Instant::now();
        let (results, summary) = scanner(&client, TTL).scan(&containers, NOW);
        let took = started.elapsed();
        let r = result_of(&results, &healthy.id);
        assert_eq!(
            r.status,
            Status::UpToDate,
            "{what}: healthy registry: {r:?}"
        );
        for bad in [&bad_a, &bad_b] {
            let r = result_of(&results, &bad.id);
            assert_eq!(r.status, Status::Error, "{what}: {r:?}");
            let msg = r.error.as_deref().unwrap_or_default();
            for s in says {
                assert!(msg.contains(s), "{what}: {msg:?} should say {s:?}");
            }
            assert_eq!(r.current_digest.as_deref(), Some(SOME_DIGEST));
        }
        assert_eq!((summary.errors, summary.checked), (2, 1), "{what}");
        let hits = fake.hits();
        println!("{what}: {hits} requests to the bad registry, scan took {took:?}");
        assert!(hits <= bound, "{what}: {hits} requests, at most {bound}");
        if what.starts_with("slower") {
            assert_eq!(
                hits, 3,
                "the probe's attempts; then the references fail at once"
            );
        }
        if what == "500" {
            assert_eq!(
                hits, bound,
                "a 5xx is retried maxRetries times, then reported"
            );
        }

        if what.starts_with("429") {
            assert_eq!(hits, 1, "the first 429 pauses the whole registry");
            let stats = client.stats();
            let s = stats
                .iter()
                .find(|s| s.host == fake.host)
                .expect("stats of the paused registry");
            assert!(s.paused_until.is_some(), "{s:?}");
            assert_eq!(s.requests_by_outcome.get("rate_limited"), Some(&1));
            assert_eq!(s.rate_limit_remaining, Some(0));
            // A second scan (cache or not) sends nothing to a paused registry.
            let (results, _) = scanner(&client, TTL).scan(&containers, NOW);
            assert_eq!(fake.hits(), 1, "paused: no request");
            let r = result_of(&results, &bad_a.id);
            assert_eq!(r.status, Status::Error);
            assert!(r.error.as_deref().unwrap_or_default().contains("paused"));
            assert_eq!(result_of(&results, &healthy.id).status, Status::UpToDate);
        }
    }

    // Nothing listening (a registry that is down): the probe's attempts, and no more.
    let down = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let containers = vec![
        synthetic("down-a", &format!("{down}/x/app:latest"), SOME_DIGEST),
        healthy.clone(),
        synthetic("down-b", &format!("{down}/x/other:latest"), SOME_DIGEST),
    ];
    let client = client(&cfg);
    let (results, summary) = scanner(&client, TTL).scan(&containers, NOW);
    assert_eq!((summary.errors, summary.checked), (2, 1), "{results:#?}");
    for r in results.iter().filter(|r| r.container_id != healthy.id) {
        let msg = r.error.as_deref().unwrap_or_default();
        assert!(msg.contains("no answer from registry"), "{msg}");
    }
    let attempts = client_requests(&client, &down);
    println!("registry down: {attempts} connection attempts");
    assert_eq!(attempts, u64::from(cfg.max_retries) + 1);
}

/// A registry that answered before and now stalls (a host gone behind a firewall): the first checks
/// time out after their retries; the scan's other checks of it fail at once instead of each waiting
/// (retries + 1) × timeout in turn, and the healthy registry's result comes with them.
#[test]
fn scan_registry_that_stops_answering_fails_fast() {
    if !fixtures::require_registry_tools() {
        return;
    }
    const K: usize = 6;
    let reg = Registry::start();
    let image = Image::build(&unique("scan-stall")).create();
    let pushed = image.push_to(&reg, &format!("{}:latest", repo("stall")));
    pushed.pull_back();
    let ctr = ContainerBuilder::new(pushed.reference()).run();
    let healthy = discover(&[&ctr]).remove(0);

    let stalled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stalled);
    let fake = FakeRegistry::start(Arc::new(move |_: &str, _: &str| {
        let mut a = Canned::new(200)
            .header("Docker-Content-Digest", SOME_DIGEST)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        if flag.load(Ordering::SeqCst) {
            a.delay = Duration::from_secs(3);
        }
        a
    }));
    let mut containers: Vec<ContainerInfo> = (0..K)
        .map(|i| {
            let reference = format!("{}/x/app{i}:latest", fake.host);
            synthetic(&format!("stall{i}"), &reference, SOME_DIGEST)
        })
        .collect();
    containers.push(healthy.clone());
    let mut cfg = registry_config();
    cfg.timeout = Duration::from_secs(1);
    cfg.max_retries = 2;
    let client = client_with(&cfg, LookupEnv::default(), 2);

    let (results, summary) = scanner_with(&client, TTL, 2).scan(&containers, NOW);
    assert_eq!(
        (summary.checked, summary.errors),
        (K + 1, 0),
        "{results:#?}"
    );

    stalled.store(true, Ordering::SeqCst);
    let hits0 = fake.hits();
    let started = Instant::now();
    let (results, summary) = scanner_with(&client, TTL, 2).scan(&containers, NOW);
    let took = started.elapsed();
    let hits = fake.hits() - hits0;
    println!("stalled registry, {K} references, concurrency 2: {hits} requests, {took:?}");
    assert_eq!((summary.errors, summary.checked), (K, 1), "{results:#?}");
    assert_eq!(result_of(&results, &healthy.id).status, Status::UpToDate);
    for c in &containers[..K] {
        let r = result_of(&results, &c.id);
        let msg = r.error.as_deref().unwrap_or_default();
        assert!(msg.contains("no answer from registry"), "{msg}");
    }
    // Two workers, each with one check and its retries; none for the other references.
    let per_check = cfg.max_retries as usize + 1;
    assert!(hits <= 2 * per_check, "{hits} requests");

    // The next scan asks again (it may have come back).
    stalled.store(false, Ordering::SeqCst);
    let (results, summary) = scanner_with(&client, TTL, 2).scan(&containers, NOW);
    assert_eq!(
        (summary.checked, summary.errors),
        (K + 1, 0),
        "{results:#?}"
    );
}

/// A confirmation GET that got no answer is tried again at the next scan, even while the tag's digest
/// is still cached (nothing else to fetch from that registry then).
#[test]
fn scan_confirmation_without_answer_is_retried_next_scan() {
    let other = format!("sha256:{}", "2".repeat(64));
    let remote = other.clone();
    let fake = FakeRegistry::start(Arc::new(move |method: &str, path: &str| {
        let mut a = Canned::new(200)
            .header("Docker-Content-Digest", &remote)
            .header("Content-Type", "application/vnd.oci.image.index.v1+json");
        if method == "GET" && path.contains("/manifests/") {
            a.delay = Duration::from_secs(3);
        }
        a
    }));
    let containers = vec![synthetic(
        "confirm",
        &format!("{}/x/app:latest", fake.host),
        SOME_DIGEST,
    )];
    let mut cfg = registry_config();
    cfg.timeout = Duration::from_secs(1);
    cfg.max_retries = 0;
    let client = client(&cfg);
    let scanner = scanner(&client, TTL);
    for round in ["first scan", "second scan, digest cached"] {
        let before = fake.hits();
        let (results, _) = scanner.scan(&containers, NOW);
        let r = &results[0];
        assert_eq!(r.status, Status::Error, "{round}: {r:?}");
        assert_eq!(r.remote_digest.as_deref(), Some(other.as_str()), "{round}");
        assert!(fake.hits() > before, "{round}: the registry is asked");
    }
}

/// Two registries that do not answer, in one scan: their probes run side by side, so the scan pays
/// one registry's timeouts, not the sum.
#[test]
fn scan_stalled_registries_are_probed_side_by_side() {
    let stall = || -> Handler {
        Arc::new(|_: &str, _: &str| {
            let mut a = Canned::new(200);
            a.delay = Duration::from_secs(3);
            a
        })
    };
    let (a, b) = (FakeRegistry::start(stall()), FakeRegistry::start(stall()));
    let containers = vec![
        synthetic("side-a", &format!("{}/x/app:latest", a.host), SOME_DIGEST),
        synthetic("side-b", &format!("{}/x/app:latest", b.host), SOME_DIGEST),
    ];
    let mut cfg = registry_config();
    cfg.timeout = Duration::from_secs(1);
    cfg.max_retries = 1;
    let started = Instant::now();
    let (results, summary) = scanner(&client(&cfg), TTL).scan(&containers, NOW);
    println!("two stalled registries: scan took {:?}", started.elapsed());
    assert_eq!(summary.errors, 2, "{results:#?}");
    let (a, b) = (a.arrivals(), b.arrivals());
    assert_eq!((a.len(), b.len()), (2, 2), "the probes' attempts only");
    // Side by side: each registry's first attempt came before the other's last one.
    assert!(a[0] < b[1] && b[0] < a[1], "{a:?} {b:?}");
}

// ------------------------------------------------------------------------------------------------
// 8. Measurement: 100 distinct images, concurrency 16, ~20 ms RTT injected by a proxy.

/// A TCP proxy to `upstream` that holds every chunk `delay` before passing it on, in both
/// directions: a request/answer exchange costs 2 × `delay` more.
struct LatencyProxy {
    host: String,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LatencyProxy {
    fn start(upstream: String, delay: Duration) -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let host = listener.local_addr().expect("proxy address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&connections));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = conn else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pump(down, up, delay));
                std::thread::spawn(move || pump(up2, down2, delay));
            }
        });
        LatencyProxy {
            host,
            connections,
            stop,
            thread: Some(thread),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A plain HTTP client for test setup (answers of any status are returned, not errors).
fn setup_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// Copies `from`'s manifest to `to:latest` on the same registry, mounting its blobs (no upload).
/// `authorization`: a header value good for pulling `from` and pushing `to`, when the registry wants one.
fn copy_repository(
    agent: &ureq::Agent,
    base: &str,
    from: &str,
    to: &str,
    authorization: Option<&str>,
) {
    let auth = authorization.unwrap_or_default();
    let accept = "application/vnd.docker.distribution.manifest.v2+json";
    let mut answer = agent
        .get(format!("{base}/v2/{from}/manifests/latest"))
        .header("Accept", accept)
        .header("Authorization", auth)
        .call()
        .expect("get manifest");
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(accept)
        .to_string();
    let body = answer.body_mut().read_to_vec().expect("manifest body");
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest JSON");
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap_or_default()];
    if let Some(layers) = manifest["layers"].as_array() {
        blobs.extend(layers.iter().filter_map(|l| l["digest"].as_str()));
    }
    for blob in blobs {
        let a = agent
            .post(format!(
                "{base}/v2/{to}/blobs/uploads/?mount={blob}&from={from}"
            ))
            .header("Authorization", auth)
            .send_empty()
            .expect("mount blob");
        assert_eq!(a.status().as_u16(), 201, "mount {blob} into {to}");
    }
    let a = agent
        .put(format!("{base}/v2/{to}/manifests/latest"))
        .header("Content-Type", &content_type)
        .header("Authorization", auth)
        .send(&body[..])
        .expect("put manifest");
    assert_eq!(a.status().as_u16(), 201, "put manifest {to}");
}

#[test]
fn scan_bench_100_images_with_latency() {
    if std::env::var("WATCH_IT_BENCH").as_deref() != Ok("1") {
        eprintln!("note: set WATCH_IT_BENCH=1 to measure the 100-image scan");
        return;
    }
    if !fixtures::require_registry_tools() {
        return;
    }
    const IMAGES: usize = 100;
    const CONCURRENCY: usize = 16;
    let one_way_ms: u64 = std::env::var("WATCH_IT_BENCH_ONE_WAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let one_way: Duration = Duration::from_millis(one_way_ms);
    let reg = Registry::start();
    let image = Image::build(&unique("scan-bench")).create();
    let base_repo = repo("bench");
    let pushed = image.push_to(&reg, &format!("{base_repo}:latest"));
    let agent = setup_agent();
    let prefix = unique("b");
    let repos: Vec<String> = (0..IMAGES)
        .map(|i| format!("wdtest/{prefix}-{i}"))
        .collect();
    let setup = Instant::now();
    for r in &repos {
        copy_repository(&agent, &reg.url(), &base_repo, r, None);
    }
    println!(
        "bench setup: {IMAGES} repositories in {:?}",
        setup.elapsed()
    );

    let proxy = LatencyProxy::start(reg.host(), one_way);
    let containers: Vec<ContainerInfo> = repos
        .iter()
        .enumerate()
        .map(|(i, r)| {
            synthetic(
                &format!("bench{i}"),
                &format!("{}/{r}:latest", proxy.host),
                pushed.digest(),
            )
        })
        .collect();
    let rtt = one_way * 2;
    let target = rtt * (IMAGES.div_ceil(CONCURRENCY) as u32 + 2);
    let client = client_with(&registry_config(), LookupEnv::default(), CONCURRENCY);
    // The first round also warms the registry's own caches; the third shows new connections alone.
    let rounds = [
        ("first scan", Arc::clone(&client)),
        ("pooled connections", Arc::clone(&client)),
        (
            "new client",
            client_with(&registry_config(), LookupEnv::default(), CONCURRENCY),
        ),
    ];
    for (round, client) in rounds {
        let (log0, conn0) = (access_lines(&reg), proxy.connections.load(Ordering::SeqCst));
        let started = Instant::now();
        let (results, summary) = scanner_with(&client, TTL, CONCURRENCY).scan(&containers, NOW);
        let took = started.elapsed();
        let requests = access_lines(&reg) - log0;
        let connections = proxy.connections.load(Ordering::SeqCst) - conn0;
        assert_eq!(summary.checked, IMAGES, "{results:#?}");
        assert_eq!(summary.errors, 0);
        println!(
            "bench {round}: {IMAGES} images, concurrency {CONCURRENCY}, RTT {rtt:?}: {took:?}, \
             {requests} registry requests over {connections} new connections \
             (target (⌈{IMAGES}/{CONCURRENCY}⌉+2)×RTT = {target:?}, ×1.5 = {:?})",
            target * 3 / 2
        );
    }
}

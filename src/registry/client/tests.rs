//! Tier-2 tests: a tiny HTTP/1.1 server on 127.0.0.1:0 (hand-written answers) stands in for a
//! registry and its token endpoint, so that failures can be injected on demand.

use super::*;
use crate::config::{Config, RegistryAuth};
use crate::registry::credentials::LookupEnv;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A request as the server saw it; header names lowercased.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
    fn query_all(&self, key: &str) -> Vec<String> {
        let q = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| decode(v))
            .collect()
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Written as is, then the connection is closed.
    Raw(Vec<u8>),
    /// Nothing for this long (then the connection is closed).
    Stall(Duration),
}

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
    Reply::Full {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (h, s) = (handler.clone(), seen2.clone());
                std::thread::spawn(move || serve(stream, h, s));
            }
        });
        Server { addr, seen, stop }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn reference(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_tag}", self.host())).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen().iter().filter(|s| f(s)).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Seen {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        seen.lock().unwrap().push(req.clone());
        match handler(&req) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let mut bytes = head.into_bytes();
                if req.method != "HEAD" {
                    bytes.extend_from_slice(&body);
                }
                if out.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Raw(bytes) => {
                let _ = out.write_all(&bytes);
                return;
            }
            Reply::Stall(d) => {
                std::thread::sleep(d);
                return;
            }
        }
    }
}

fn config(max_retries: u32, timeout: Duration) -> RegistryConfig {
    let mut c = Config::default().registry;
    c.auth = vec![];
    c.max_retries = max_retries;
    c.timeout = timeout;
    c
}

fn client_with(cfg: &RegistryConfig) -> RegistryClient {
    let store = CredentialStore::with_env(cfg, LookupEnv::default());
    RegistryClient::with_credentials(cfg, vec![], 4, store)
        .unwrap()
        .with_backoff(Duration::from_millis(1))
}

fn client() -> RegistryClient {
    client_with(&config(2, Duration::from_secs(10)))
}

fn client_with_login(host: &str, user: &str, pass: &str) -> RegistryClient {
    let mut cfg = config(2, Duration::from_secs(10));
    cfg.auth = vec![RegistryAuth {
        host: host.into(),
        username: user.into(),
        password: Secret::new(pass),
    }];
    client_with(&cfg)
}

fn digest_of(s: &str) -> String {
    platform::sha256_digest(s.as_bytes())
}

const IMAGE_MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:cfg"},"layers":[]}"#;

fn manifest_for(config: &str) -> String {
    IMAGE_MANIFEST.replace("sha256:cfg", config)
}

fn json(body: &str) -> Reply {
    reply(200, &[("content-type", "application/json")], body)
}

/// A registry whose manifests need `Bearer T:<scopes>` covering the repository. The token endpoint
/// puts the scopes it granted in the token; `refuse_batch` refuses requests with several scopes,
/// `withhold` is a repository never granted.
fn bearer_registry(
    refuse_batch: bool,
    withhold: Option<&'static str>,
    token_field: &'static str,
    needs_basic: Option<&'static str>,
) -> Server {
    bearer_registry_at(
        "127.0.0.1",
        refuse_batch,
        withhold,
        token_field,
        needs_basic,
    )
}

/// As `bearer_registry`, with the realm on `realm_host` (same server, another name).
fn bearer_registry_at(
    realm_host: &'static str,
    refuse_batch: bool,
    withhold: Option<&'static str>,
    token_field: &'static str,
    needs_basic: Option<&'static str>,
) -> Server {
    let port = Arc::new(Mutex::new(0u16));
    let port2 = port.clone();
    let s = Server::start(move |req| {
        let realm = format!("http://{realm_host}:{}/token", port2.lock().unwrap());
        let challenge = format!(r#"Bearer realm="{realm}",service="wd test""#);
        let unauthorized = || reply(401, &[("www-authenticate", challenge.as_str())], "");
        if req.path() == "/token" {
            if let Some(expected) = needs_basic {
                if req.header("authorization") != Some(expected) {
                    return reply(401, &[], r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
                }
            }
            let scopes = if req.method == "POST" {
                // OAuth2 refresh-token grant: form body, scopes space-separated.
                let form = Seen {
                    target: format!("/?{}", req.body),
                    ..req.clone()
                };
                if form.query_all("grant_type") != ["refresh_token"]
                    || form.query_all("refresh_token") != ["idt"]
                    || form.query_all("service") != ["wd test"]
                {
                    return reply(401, &[], "");
                }
                form.query_all("scope")
                    .join(" ")
                    .split(' ')
                    .map(str::to_string)
                    .collect()
            } else if req.query_all("service") != ["wd test"] {
                return reply(400, &[], "");
            } else {
                req.query_all("scope")
            };
            if scopes.is_empty() || (refuse_batch && scopes.len() > 1) {
                return reply(
                    400,
                    &[],
                    r#"{"errors":[{"code":"DENIED","message":"one at a time"}]}"#,
                );
            }
            let granted: Vec<String> = scopes
                .into_iter()
                .filter(|s| withhold.is_none_or(|w| !s.contains(w)))
                .collect();
            return json(&format!(
                r#"{{"{token_field}":"T:{}","expires_in":300}}"#,
                granted.join(" ")
            ));
        }
        if req.path() == "/v2/" {
            return unauthorized();
        }
        let Some(rest) = req.path().strip_prefix("/v2/") else {
            return reply(404, &[], "");
        };
        let Some((repo, _)) = rest.split_once("/manifests/") else {
            return reply(404, &[], "");
        };
        let needed = format!("repository:{repo}:pull");
        match req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer T:"))
        {
            Some(granted) if granted.split(' ').any(|g| g == needed) => {
                let d = digest_of(repo);
                reply(
                    200,
                    &[
                        ("docker-content-digest", d.as_str()),
                        ("content-type", platform::OCI_INDEX),
                        ("ratelimit-remaining", "97;w=21600"),
                    ],
                    "",
                )
            }
            _ => unauthorized(),
        }
    });
    *port.lock().unwrap() = s.addr.port();
    s
}

fn is_token(s: &Seen) -> bool {
    s.path() == "/token"
}

#[test]
fn client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RegistryClient>();
}

#[test]
fn one_batch_token_serves_every_repository_and_is_reused() {
    let s = bearer_registry(false, None, "token", None);
    let c = client();
    let refs = [
        s.reference("team/a:latest"),
        s.reference("team/b:1.0"),
        s.reference("c"),
    ];
    c.prepare(&refs);
    assert_eq!(s.count(|r| r.path() == "/v2/"), 1);
    let tokens: Vec<Seen> = s.seen().into_iter().filter(is_token).collect();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        tokens[0].query_all("scope"),
        [
            "repository:c:pull",
            "repository:team/a:pull",
            "repository:team/b:pull"
        ]
    );
    for r in &refs {
        let d = c.head_digest(r).unwrap();
        assert_eq!(d.digest, digest_of(&r.repository));
        assert!(d.is_index());
    }
    // Cold: probe + one token + N HEADs; again: N HEADs and no token.
    assert_eq!(s.seen().len(), 2 + refs.len());
    c.prepare(&refs);
    for r in &refs {
        c.head_digest(r).unwrap();
    }
    assert_eq!(s.seen().len(), 2 + 2 * refs.len());
    assert_eq!(s.count(is_token), 1);

    // Every manifest request asks for all four manifest types.
    let head = s.seen().into_iter().find(|r| r.method == "HEAD").unwrap();
    assert_eq!(
        head.headers.iter().filter(|(k, _)| k == "accept").count(),
        1
    );
    let accept = head.header("accept").unwrap();
    for t in [
        platform::OCI_INDEX,
        platform::DOCKER_MANIFEST_LIST,
        platform::OCI_MANIFEST,
        platform::DOCKER_MANIFEST,
    ] {
        assert!(accept.contains(t), "{accept}");
    }
    let stats = c.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].host, s.host());
    assert_eq!(stats[0].rate_limit_remaining, Some(97));
    assert_eq!(stats[0].requests, s.seen().len() as u64);
    assert_eq!(stats[0].errors, 0);
    assert_eq!(stats[0].requests_by_outcome.get("unauthorized"), Some(&1));
}

#[test]
fn without_prepare_the_challenge_is_learnt_once() {
    let s = bearer_registry(false, None, "token", None);
    let c = client();
    let a = s.reference("a");
    c.head_digest(&a).unwrap();
    // HEAD → 401, token, HEAD.
    assert_eq!(s.seen().len(), 3);
    c.head_digest(&a).unwrap();
    assert_eq!(s.seen().len(), 4);
}

#[test]
fn refused_batch_falls_back_to_one_token_per_repository() {
    let s = bearer_registry(true, None, "token", None);
    let c = client();
    let refs = [s.reference("a"), s.reference("b")];
    c.prepare(&refs);
    assert_eq!(s.count(is_token), 1);
    for r in &refs {
        c.head_digest(r).unwrap();
    }
    assert_eq!(s.count(is_token), 3);
    for r in &refs {
        c.head_digest(r).unwrap();
    }
    assert_eq!(s.count(is_token), 3);
}

#[test]
fn a_repository_left_out_of_the_batch_token_gets_its_own() {
    let s = bearer_registry(false, Some("private"), "token", None);
    let c = client();
    let (a, p) = (s.reference("a"), s.reference("private"));
    c.prepare(&[a.clone(), p.clone()]);
    c.head_digest(&a).unwrap();
    // The batch token lacks `private`: 401, then a token for it alone, still refused.
    let e = c.head_digest(&p).unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(!e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "check {}/private:latest: registry answered 401",
            s.host()
        )),
        "{msg}"
    );
    // The batch token still serves `a`.
    let before = s.count(is_token);
    c.head_digest(&a).unwrap();
    assert_eq!(s.count(is_token), before);
}

#[test]
fn access_token_with_basic_credentials_to_the_realm() {
    let expected = "Basic dXNlcjpwYXNz"; // user:pass
    let s = bearer_registry(false, None, "access_token", Some(expected));
    let c = client_with_login(&s.host(), "user", "pass");
    c.head_digest(&s.reference("a")).unwrap();
    let token_req = s.seen().into_iter().find(is_token).unwrap();
    assert_eq!(token_req.header("authorization"), Some(expected));

    // Without credentials the realm refuses: a clear token error.
    let anonymous = client();
    let e = anonymous.head_digest(&s.reference("a")).unwrap_err();
    assert!(
        e.to_string()
            .contains("token endpoint answered 401 (UNAUTHORIZED)")
            || e.to_string()
                .contains("token endpoint answered 401: UNAUTHORIZED"),
        "{e}"
    );
}

#[test]
fn credentials_are_not_sent_to_a_plain_http_realm_on_another_host() {
    let s = bearer_registry_at("localhost", false, None, "token", None);
    let c = client_with_login(&s.host(), "user", "pass");
    c.head_digest(&s.reference("a")).unwrap();
    let token_req = s.seen().into_iter().find(is_token).unwrap();
    assert_eq!(token_req.header("authorization"), None);
}

#[test]
fn identity_token_uses_the_refresh_token_grant() {
    let s = bearer_registry(false, None, "access_token", None);
    let dir = std::env::temp_dir().join(format!("wdtest-idt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"idt"}}}}}}"#,
            s.host()
        ),
    )
    .unwrap();
    let cfg = config(0, Duration::from_secs(10));
    let env = LookupEnv {
        docker_config_dir: Some(dir.clone()),
        ..LookupEnv::default()
    };
    let c = RegistryClient::with_credentials(&cfg, vec![], 2, CredentialStore::with_env(&cfg, env))
        .unwrap();
    let result = c.head_digest(&s.reference("a"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(result.unwrap().digest, digest_of("a"));
    let token_req = s.seen().into_iter().find(is_token).unwrap();
    assert_eq!(token_req.method, "POST");
    assert!(!token_req.target.contains("idt"));
}

#[test]
fn basic_challenge_sends_credentials_directly() {
    let s = Server::start(|req| {
        if req.header("authorization") == Some("Basic dTpw") {
            let d = digest_of("x");
            reply(200, &[("docker-content-digest", d.as_str())], "")
        } else {
            reply(
                401,
                &[("www-authenticate", r#"Basic realm="Registry Realm""#)],
                "",
            )
        }
    });
    let c = client_with_login(&s.host(), "u", "p");
    let r = s.reference("x");
    assert_eq!(c.head_digest(&r).unwrap().digest, digest_of("x"));
    assert_eq!(s.seen().len(), 2);
    c.head_digest(&r).unwrap();
    assert_eq!(s.seen().len(), 3);

    let before = s.seen().len();
    let wrong = client_with_login(&s.host(), "u", "wrong");
    let e = wrong.head_digest(&r).unwrap_err();
    assert_eq!(e.status(), Some(401));
    // HEAD → 401, HEAD with the refused credentials → 401; then one request per check.
    assert_eq!(s.seen().len(), before + 2);
    let anonymous = client();
    let e = anonymous.head_digest(&r).unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(s.seen().len(), before + 3);
    anonymous.head_digest(&r).unwrap_err();
    assert_eq!(s.seen().len(), before + 4);
}

#[test]
fn missing_digest_header_means_get_and_sha256() {
    let s = Server::start(|req| match req.path() {
        "/v2/plain/manifests/latest" => json(IMAGE_MANIFEST),
        "/v2/garbage/manifests/latest" => reply(200, &[], "<html>surprise</html>"),
        "/v2/nohead/manifests/latest" if req.method == "HEAD" => reply(405, &[], ""),
        "/v2/nohead/manifests/latest" => json(IMAGE_MANIFEST),
        _ => reply(
            404,
            &[],
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        ),
    });
    let c = client();
    let d = c.head_digest(&s.reference("plain")).unwrap();
    assert_eq!(d.digest, digest_of(IMAGE_MANIFEST));
    assert_eq!(d.media_type.as_deref(), Some("application/json"));
    assert_eq!(s.count(|r| r.method == "GET"), 1);
    assert_eq!(
        c.head_digest(&s.reference("nohead")).unwrap().digest,
        digest_of(IMAGE_MANIFEST)
    );

    let e = c.head_digest(&s.reference("garbage")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadAnswer(_)), "{e}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");

    // 404 is final: one request, no retry.
    let before = s.seen().len();
    let e = c.head_digest(&s.reference("missing:1")).unwrap_err();
    assert_eq!(s.seen().len(), before + 1);
    assert_eq!(e.status(), Some(404));
    // A HEAD answer has no body, so no registry detail: the status says it all.
    assert!(e.to_string().ends_with("registry answered 404"), "{e}");
    // A GET answer's error body is quoted.
    let e = c
        .list_tags(&s.reference("missing"), 1, Duration::from_secs(5))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("(MANIFEST_UNKNOWN: manifest unknown)"),
        "{e}"
    );
}

fn index_with_attestation(amd: &str, arm: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {{"digest":"{att}","platform":{{"os":"unknown","architecture":"unknown"}},
          "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}},
        {{"digest":"{amd}","platform":{{"os":"linux","architecture":"amd64"}}}},
        {{"digest":"{arm}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
        att = digest_of("attestation"),
    )
}

#[test]
fn platform_confirmation_selects_the_platform_and_remembers_the_verdict() {
    let amd = manifest_for("sha256:cfg-amd");
    let arm = manifest_for("sha256:cfg-arm");
    let index = index_with_attestation(&digest_of(&amd), &digest_of(&arm));
    let (amd2, arm2, index2) = (amd.clone(), arm.clone(), index.clone());
    let s = Server::start(move |req| {
        let path = req.path().to_string();
        for body in [&amd2, &arm2, &index2] {
            if path == format!("/v2/app/manifests/{}", digest_of(body)) {
                return json(body);
            }
        }
        if path == format!("/v2/tampered/manifests/{}", digest_of(&index2)) {
            return json(&index2.replace("linux", "Linux"));
        }
        reply(404, &[], "")
    });
    let c = client();
    let r = s.reference("app");
    let remote = digest_of(&index);
    let amd64 = Platform {
        os: "linux".into(),
        architecture: "x86_64".into(),
        variant: None,
    };
    let arm64 = Platform {
        os: "linux".into(),
        architecture: "aarch64".into(),
        variant: None,
    };
    let s390 = Platform {
        os: "linux".into(),
        architecture: "s390x".into(),
        variant: None,
    };

    // The amd64 image is unchanged (same config): not an update, whatever the index digest says.
    assert!(!c
        .platform_changed(&r, &remote, &amd64, "sha256:cfg-amd")
        .unwrap());
    assert_eq!(s.seen().len(), 2);
    assert!(s
        .seen()
        .iter()
        .all(|q| q.path() != format!("/v2/app/manifests/{}", digest_of("attestation"))));
    // Verdict remembered: no request at all.
    assert!(!c
        .platform_changed(&r, &remote, &amd64, "sha256:cfg-amd")
        .unwrap());
    assert_eq!(s.seen().len(), 2);
    // Another local image: changed.
    assert!(c
        .platform_changed(&r, &remote, &arm64, "sha256:old-arm")
        .unwrap());
    assert!(!c
        .platform_changed(&r, &remote, &arm64, "sha256:cfg-arm")
        .unwrap());
    // containerd store: the local id is the platform manifest digest.
    assert!(!c
        .platform_changed(&r, &remote, &arm64, &digest_of(&arm))
        .unwrap());
    // A single manifest: its config is compared directly.
    assert!(c
        .platform_changed(&r, &digest_of(&amd), &amd64, "sha256:other")
        .unwrap());
    assert!(!c
        .platform_changed(&r, &digest_of(&arm), &arm64, "sha256:cfg-arm")
        .unwrap());

    let e = c
        .platform_changed(&r, &remote, &s390, "sha256:x")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no manifest for platform linux/s390x"),
        "{e}"
    );
    let e = c
        .platform_changed(&s.reference("tampered"), &remote, &amd64, "sha256:x")
        .unwrap_err();
    assert!(e.to_string().contains("truncated or altered"), "{e}");
}

#[test]
fn server_errors_are_retried_then_reported() {
    let s = Server::start(|_| reply(500, &[], "oops"));
    let c = client_with(&config(2, Duration::from_secs(10)));
    let r = s.reference("library/nginx:latest");
    let e = c.head_digest(&r).unwrap_err();
    assert_eq!(s.seen().len(), 3);
    assert!(e.is_transient());
    assert_eq!(
        e.to_string(),
        format!(
            "check {}/library/nginx:latest: registry answered 500",
            s.host()
        )
    );
    let stats = c.stats();
    assert_eq!(stats[0].errors, 1);
    assert_eq!(stats[0].requests_by_outcome.get("server_error"), Some(&3));
    assert_eq!(stats[0].last_error.as_deref(), Some(e.to_string().as_str()));
}

#[test]
fn too_many_requests_pauses_the_registry() {
    let s = Server::start(|_| {
        reply(
            429,
            &[("retry-after", "120")],
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        )
    });
    let c = client();
    let r = s.reference("a");
    let e = c.head_digest(&r).unwrap_err();
    assert_eq!(s.seen().len(), 1, "a 429 with Retry-After is not retried");
    let msg = e.to_string();
    assert!(
        msg.contains("registry answered 429")
            && msg.contains("retry after 120s")
            && msg.contains("paused until"),
        "{msg}"
    );
    assert!(e.is_transient());

    // Later calls fail fast, without a request.
    let e = c.head_digest(&s.reference("b")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Paused { .. }), "{e}");
    assert!(e.to_string().contains("paused until"), "{e}");
    c.prepare(&[s.reference("c")]);
    assert!(c.list_tags(&r, 5, Duration::from_secs(5)).is_err());
    assert_eq!(s.seen().len(), 1);

    let stats = c.stats();
    let until: jiff::Timestamp = stats[0].paused_until.as_deref().unwrap().parse().unwrap();
    assert!(until > jiff::Timestamp::now());
    assert_eq!(stats[0].errors, 3);
}

#[test]
fn garbage_and_truncated_answers_are_errors() {
    let s = Server::start(|req| match req.path() {
        "/v2/trunc/manifests/latest" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{\"schemaVersion\":".to_vec(),
        ),
        "/v2/notjson/manifests/latest" => reply(200, &[], vec![0xff, 0xfe, 0x00, 0x13]),
        "/v2/nonsense/manifests/latest" => Reply::Raw(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()),
        "/v2/badtoken/manifests/latest" => reply(
            401,
            &[("www-authenticate", "Bearer realm=\"http://127.0.0.1:1/x\"")],
            "",
        ),
        "/v2/nochallenge/manifests/latest" => reply(401, &[], ""),
        p if p.starts_with("/v2/app/manifests/sha256:") => json("{\"schemaVersion\":2,\"manif"),
        _ => reply(404, &[], ""),
    });
    let c = client_with(&config(1, Duration::from_secs(10)));
    let e = c.head_digest(&s.reference("trunc")).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        s.count(|r| r.path() == "/v2/trunc/manifests/latest" && r.method == "GET"),
        2
    );
    let e = c.head_digest(&s.reference("notjson")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadAnswer(_)), "{e}");
    let e = c.head_digest(&s.reference("nonsense")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Transport(_)), "{e}");
    let e = c.head_digest(&s.reference("nochallenge")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NoChallenge), "{e}");
    let p = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    let e = c
        .platform_changed(&s.reference("app"), &digest_of("x"), &p, "sha256:y")
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("confirm platform of {}/app:latest", s.host())),
        "{e}"
    );
    assert!(matches!(e.kind, ErrorKind::BadAnswer(_)), "{e:?}");
    // A token endpoint that does not answer: this check fails, and the registry's others at once.
    let e = c.head_digest(&s.reference("badtoken")).unwrap_err();
    assert!(e.to_string().contains("no answer from registry"), "{e}");
    let seen = s.seen().len();
    let e = c.head_digest(&s.reference("notjson")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("token endpoint 127.0.0.1:1"), "{e}");
    assert_eq!(s.seen().len(), seen);
}

#[test]
fn slow_answers_time_out() {
    let s = Server::start(|_| Reply::Stall(Duration::from_secs(5)));
    let c = client_with(&config(0, Duration::from_millis(300)));
    let e = c.head_digest(&s.reference("slow")).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        matches!(e.kind, ErrorKind::Transport(ureq::Error::Timeout(_))),
        "{e:?}"
    );
    assert_eq!(s.seen().len(), 1);
}

#[test]
fn a_registry_without_answer_is_not_asked_again_until_the_next_scan() {
    let s = Server::start(|_| Reply::Stall(Duration::from_secs(5)));
    let c = client_with(&config(0, Duration::from_millis(300)));
    let (a, b) = (s.reference("a"), s.reference("b"));
    c.head_digest(&a).unwrap_err();
    assert_eq!(s.seen().len(), 1);
    let e = c.head_digest(&b).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("no answer from registry"), "{e}");
    assert_eq!(s.seen().len(), 1, "failed at once, nothing sent");
    // A new scan (prepare) asks again: its probe of /v2/, which stalls too.
    c.prepare(std::slice::from_ref(&b));
    assert_eq!(s.seen().len(), 2);
    assert!(matches!(
        c.head_digest(&b).unwrap_err().kind,
        ErrorKind::Unreachable { .. }
    ));
}

#[test]
fn connection_refused_is_transient() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client_with(&config(1, Duration::from_secs(5)));
    let e = c
        .head_digest(&Reference::parse(&format!("127.0.0.1:{port}/x")).unwrap())
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(c.stats()[0].requests_by_outcome.get("error"), Some(&2));
}

#[test]
fn tags_are_listed_page_by_page() {
    let s = Server::start(|req| {
        let page = |tags: &str, link: Option<&str>| {
            let body = format!(r#"{{"name":"app","tags":[{tags}]}}"#);
            match link {
                Some(l) => reply(200, &[("link", l)], body),
                None => reply(200, &[], body),
            }
        };
        match req.target.as_str() {
            "/v2/app/tags/list?n=1000" => page(
                r#""1.0","1.1""#,
                Some(r#"</v2/app/tags/list?n=1000&last=1.1>; rel="next""#),
            ),
            "/v2/app/tags/list?n=1000&last=1.1" => page(
                r#""2.0""#,
                Some(r#"</v2/app/tags/list?n=1000&last=2.0>; rel="next""#),
            ),
            "/v2/app/tags/list?n=1000&last=2.0" => page("", None),
            "/v2/empty/tags/list?n=1000" => reply(200, &[], r#"{"name":"empty","tags":null}"#),
            _ => reply(404, &[], ""),
        }
    });
    let c = client();
    let r = s.reference("app");
    assert_eq!(
        c.list_tags(&r, 10, Duration::from_secs(30)).unwrap(),
        ["1.0", "1.1", "2.0"]
    );
    assert_eq!(
        c.list_tags(&r, 2, Duration::from_secs(30)).unwrap(),
        ["1.0", "1.1", "2.0"]
    );
    assert_eq!(
        c.list_tags(&r, 1, Duration::from_secs(30)).unwrap(),
        ["1.0", "1.1"]
    );
    assert!(c
        .list_tags(&s.reference("empty"), 10, Duration::from_secs(30))
        .unwrap()
        .is_empty());
    let e = c
        .list_tags(&s.reference("gone"), 10, Duration::from_secs(30))
        .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "list tags of {}/gone:latest: registry answered 404",
            s.host()
        )),
        "{e}"
    );
}

#[test]
fn pure_helpers() {
    assert_eq!(parse_rate_limit("100;w=21600"), Some(100));
    assert_eq!(parse_rate_limit(" 7 "), Some(7));
    assert_eq!(parse_rate_limit("x"), None);
    let base = "http://h:5000";
    for (link, want) in [
        (
            r#"</v2/a/tags/list?last=b>; rel="next""#,
            Some("/v2/a/tags/list?last=b"),
        ),
        (
            r#"<http://h:5000/v2/a/tags/list?last=b>; rel=next"#,
            Some("/v2/a/tags/list?last=b"),
        ),
        (r#"<http://elsewhere/v2/x>; rel="next""#, None),
        (r#"</v2/p>; rel="prev", </v2/n>; rel="next""#, Some("/v2/n")),
        ("garbage", None),
    ] {
        assert_eq!(next_link(link, base).as_deref(), want, "{link}");
    }
    assert_eq!(
        url_scheme_host("https://auth.docker.io/token?x"),
        Some(("https", "auth.docker.io"))
    );
    assert_eq!(url_scheme_host("ftp://x/y"), None);
    assert_eq!(url_scheme_host("nonsense"), None);
    for attempt in 0..40 {
        let d = backoff(Duration::from_millis(100), attempt);
        assert!(d <= MAX_BACKOFF + MAX_BACKOFF / 2, "{attempt}: {d:?}");
    }
    assert!(backoff(Duration::from_millis(100), 0) >= Duration::from_millis(100));
}

#[test]
fn retry_after_in_seconds_or_as_a_date() {
    let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
    let answer = |v: &str| {
        let mut headers = ureq::http::HeaderMap::new();
        headers.insert("retry-after", v.parse().unwrap());
        Answer {
            status: 429,
            headers,
            body: vec![],
        }
    };
    for (value, want) in [
        ("120", Some(120)),
        ("Sun, 01 Jun 2025 12:01:30 GMT", Some(90)),
        ("Sun, 01 Jun 2025 11:00:00 GMT", Some(0)),
        ("soon", None),
    ] {
        assert_eq!(
            retry_after(&answer(value), now),
            want.map(Duration::from_secs),
            "{value}"
        );
    }
}

#[test]
fn insecure_hosts_use_plain_http() {
    let cfg = RegistryConfig {
        insecure: vec!["myreg:5000".into(), "10.1.0.0/16".into()],
        ..config(0, Duration::from_secs(1))
    };
    let c = RegistryClient::with_credentials(
        &cfg,
        vec!["engine.local".into(), "fd00::/8".into()],
        1,
        CredentialStore::with_env(&cfg, LookupEnv::default()),
    )
    .unwrap();
    for (host, scheme) in [
        ("127.0.0.1:5000", "http"),
        ("127.9.9.9", "http"),
        ("localhost:5000", "http"),
        ("[::1]:5000", "http"),
        ("myreg:5000", "http"),
        ("myreg:6000", "https"),
        ("10.1.2.3:443", "http"),
        ("10.2.0.1", "https"),
        ("engine.local", "http"),
        ("[fd00::5]:5000", "http"),
        ("registry-1.docker.io", "https"),
        ("ghcr.io", "https"),
    ] {
        assert_eq!(c.base_url(host), format!("{scheme}://{host}"), "{host}");
    }
}

#[test]
fn ca_file_is_read_or_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("wdtest-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate").unwrap();
    let mut cfg = config(0, Duration::from_secs(1));
    cfg.ca_file = Some(empty);
    let e = RegistryClient::new(&cfg, vec![], 1).unwrap_err();
    assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    cfg.ca_file = Some(dir.join("missing.pem"));
    let e = RegistryClient::new(&cfg, vec![], 1).unwrap_err();
    assert!(
        e.to_string().starts_with("configure registry.caFile: read"),
        "{e}"
    );

    // A PEM certificate (one of the public roots, as a certificate) is accepted.
    let der = anchor_certificate(&webpki_roots::TLS_SERVER_ROOTS[0]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    let good = dir.join("ca.pem");
    std::fs::write(&good, pem).unwrap();
    cfg.ca_file = Some(good);
    let result = RegistryClient::new(&cfg, vec![], 1);
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

#[test]
fn every_public_root_reads_back_as_the_same_trust_anchor() {
    let mut constrained = 0;
    for anchor in webpki_roots::TLS_SERVER_ROOTS {
        let cert = rustls::pki_types::CertificateDer::from(anchor_certificate(anchor));
        let back = webpki::anchor_from_trusted_cert(&cert).expect("a parsable root");
        assert_eq!(&back, anchor);
        constrained += usize::from(anchor.name_constraints.is_some());
    }
    // The set has name-constrained roots, so that branch of the encoding is covered too.
    assert!(constrained > 0);
    // Long-form lengths: one, two and three length bytes.
    assert_eq!(der(0x04, &[&[7; 0x7f]])[..2], [0x04, 0x7f]);
    assert_eq!(der(0x04, &[&[7; 0x80]])[..3], [0x04, 0x81, 0x80]);
    assert_eq!(der(0x04, &[&[7; 0x1234]])[..4], [0x04, 0x82, 0x12, 0x34]);
    assert_eq!(
        der(0x04, &[&[7; 0x12345]])[..5],
        [0x04, 0x83, 0x01, 0x23, 0x45]
    );
}

#[test]
fn tls_config_holds_the_public_roots_and_the_extra_ones() {
    let extra =
        ureq::tls::Certificate::from_der(&anchor_certificate(&webpki_roots::TLS_SERVER_ROOTS[0]))
            .to_owned();
    for (extra, want) in [(vec![], 0), (vec![extra], 1)] {
        let cfg = tls_config(extra);
        match cfg.root_certs() {
            ureq::tls::RootCerts::Specific(certs) => {
                assert_eq!(certs.len(), webpki_roots::TLS_SERVER_ROOTS.len() + want)
            }
            _ => panic!("expected a specific root list"),
        }
    }
}

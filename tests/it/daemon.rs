//! The daemon end to end through the built binary (SPEC §7, §9): a cron-scheduled scan and an
//! interval scan happen by themselves; with `update.enabled` and no `autoUpdateCron` a new image
//! is applied after a scheduled scan; `/metrics` carries the per-container update-available gauge
//! until the container runs the new image; webhooks reach a local receiver; crash recovery runs at
//! start; SIGTERM ends the process with exit code 0.
//!
//! Also the harness the other end-to-end modules share: [`Serve`] (a `watch-docker serve` process
//! behind a Drop guard), [`api`] (a small HTTP/1.1 client with bodies and tokens), [`Receiver`] (a
//! webhook receiver) and [`exclusive`].

use crate::fixtures::{
    self, docker, docker_ok, unique, wait_for, ContainerBuilder, Image, ImageGuard, PushedImage,
    Registry, TempDir,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_watch-docker");

pub(crate) use crate::fixtures::exclusive;

/// One registry per test binary for the end-to-end modules (each test uses its own repositories).
/// Its watchdog stops it when the test process exits; its temp dir is swept by the next run.
pub(crate) fn shared_registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::start)
}

/// `--set` pairs every test daemon gets; tests add theirs after (a later flag wins only for a
/// different key, so tests must not repeat these keys).
fn base_sets(addr: &str) -> Vec<(String, String)> {
    [
        ("server.addr", addr),
        ("logging.level", "info"),
        ("update.settleTime", "1s"),
        ("update.stopTimeout", "5s"),
        ("update.healthTimeout", "20s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A `watch-docker serve` process on a free loopback port, its output in a log file. Drop kills
/// it (SIGKILL) if it still runs.
pub(crate) struct Serve {
    child: Child,
    addr: String,
    dir: TempDir,
    status: Option<ExitStatus>,
}

impl Serve {
    /// Starts `serve` with an empty config file (so no `./config.yaml` applies) plus `sets`, and
    /// waits until `/healthz` answers.
    pub fn start(sets: &[(&str, &str)]) -> Serve {
        fixtures::init();
        let mut dir = TempDir::new("serve");
        let config = dir.write("config.yaml", "");
        let mut last = String::new();
        for _attempt in 0..5 {
            let addr = format!("127.0.0.1:{}", fixtures::free_port());
            let log = std::fs::File::create(dir.path().join("serve.log")).expect("create log");
            let mut cmd = Command::new(BIN);
            cmd.arg("serve").arg("--config").arg(&config);
            for (k, v) in base_sets(&addr)
                .into_iter()
                .chain(sets.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            {
                cmd.arg("--set").arg(format!("{k}={v}"));
            }
            // Only the flags above configure it: no WATCH_* variable of the caller leaks in.
            for (k, _) in std::env::vars() {
                if k.to_ascii_uppercase().starts_with("WATCH_") {
                    cmd.env_remove(&k);
                }
            }
            cmd.current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log);
            let child = cmd.spawn().expect("spawn watch-docker serve");
            let mut serve = Serve {
                child,
                addr,
                dir,
                status: None,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(st)) = serve.child.try_wait() {
                    serve.status = Some(st);
                    last = serve.log();
                    break;
                }
                if let Ok((200, _)) = fixtures::http_get(&serve.addr, "/healthz") {
                    return serve;
                }
                if Instant::now() > deadline {
                    panic!("serve did not answer /healthz in 15s:\n{}", serve.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // It exited (the port was taken meanwhile?): try another port.
            dir = std::mem::replace(&mut serve.dir, TempDir::new("serve-spare"));
        }
        panic!("serve did not start:\n{last}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// A request without a token; (HTTP status, parsed JSON body or Null).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None)
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let r = api(&self.addr, method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserve log:\n{}", self.log()));
        (r.0, serde_json::from_str(&r.1).unwrap_or(Value::Null))
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> String {
        api(&self.addr, "GET", "/metrics", None, None)
            .map(|r| r.1)
            .unwrap_or_default()
    }

    /// The container view `GET /api/containers/:key`, or None when it is not (yet) listed.
    pub fn container(&self, key: &str) -> Option<Value> {
        match self.get(&format!("/api/containers/{key}")) {
            (200, v) => Some(v["data"].clone()),
            _ => None,
        }
    }

    /// The job record `GET /api/jobs/:id`. The API answers before the daemon has published its
    /// first snapshot (it binds first), so a scheduled job may take a moment to be listed.
    pub fn job(&self, id: &str) -> Value {
        fixtures::wait_for(
            &format!("GET /api/jobs/{id} to answer 200"),
            Duration::from_secs(10),
            || match self.get(&format!("/api/jobs/{id}")) {
                (200, v) => Some(v["data"].clone()),
                _ => None,
            },
        )
    }

    /// Polls until the container view under `key` satisfies `pred`; returns that view.
    pub fn wait_container(
        &self,
        key: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.container(key);
            if let Some(v) = v.as_ref().filter(|v| pred(v)) {
                return v.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {key} to be {what}; last view: {v:?}\nserve log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the process dies where it stands, with no cleanup of any kind.
    pub fn kill_hard(&mut self) -> ExitStatus {
        send_signal("-KILL", self.pid());
        let st = self.child.wait().expect("wait for serve");
        self.status = Some(st);
        st
    }

    /// Sends SIGTERM (through `kill`, no libc) and waits for the exit, at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        send_signal("-TERM", self.pid());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "serve did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn send_signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdin(Stdio::null())
        .status();
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- serve log ({}) ----\n{}", self.addr, self.log());
        }
    }
}

/// One HTTP/1.1 request with an optional bearer token and JSON body: (status, body text).
/// Reads a `Content-Length` or chunked body, or to the end of the stream.
pub(crate) fn api(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    read_response(&mut BufReader::new(s))
}

fn read_response(r: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A webhook receiver on 127.0.0.1:0: records the JSON body of every POST and answers 200.
pub(crate) struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let port = listener.local_addr().expect("receiver address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking receiver");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st) = (Arc::clone(&got), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("webhook-receiver".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            if let Some(v) = receive_one(conn) {
                                g.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .expect("spawn the webhook receiver");
        Receiver {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every body received so far.
    pub fn received(&self) -> Vec<Value> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bodies of `event` about `container`.
    pub fn events(&self, event: &str, container: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|v| v["event"] == event && v["container"] == container)
            .collect()
    }
}

fn receive_one(conn: TcpStream) -> Option<Value> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    let mut w = conn;
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    serde_json::from_slice(&body).ok()
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A repository of the shared registry and the images pushed to it. Declare it before the
/// containers that use it, so they are removed first (an image in use cannot be removed).
pub(crate) struct App {
    /// `<run>/app` (no registry host, no tag).
    repo: String,
    pushed: Vec<PushedImage>,
    images: Vec<ImageGuard>,
}

impl App {
    pub fn new(run: &str) -> App {
        App {
            repo: format!("{run}/app"),
            pushed: Vec::new(),
            images: Vec::new(),
        }
    }

    /// `127.0.0.1:<port>/<run>/app:<tag>`.
    pub fn reference(&self, tag: &str) -> String {
        shared_registry().reference(&format!("{}:{tag}", self.repo))
    }

    /// A plain image whose content says `version`.
    pub fn plain(version: &str) -> ImageGuard {
        Image::build(&format!("{}:{version}", unique("src")))
            .file("/version", version)
            .create()
    }

    /// Pushes `image` as `<repo>:<tag>`; returns (image id, pushed manifest digest). The local
    /// tag is removed again, so that an update has to pull it as it would on a real host.
    pub fn push(&mut self, image: ImageGuard, tag: &str) -> (String, String) {
        let pushed = image.push_to(shared_registry(), &format!("{}:{tag}", self.repo));
        let _ = docker(&["rmi", pushed.reference()]);
        let out = (image.id().to_string(), pushed.digest().to_string());
        self.pushed.push(pushed);
        self.images.push(image);
        out
    }

    /// Pushes `image` as `<repo>:<tag>` and pulls it back, so the local image has RepoDigests
    /// and the reference names the registry.
    pub fn push_and_pull(&mut self, image: ImageGuard, tag: &str) -> (String, String) {
        let out = self.push(image, tag);
        if let Some(p) = self.pushed.last() {
            p.pull_back();
        }
        out
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.pushed.clear();
        self.images.clear();
    }
}

/// The image id the container under `name` runs, from the engine.
pub(crate) fn image_of(name: &str) -> Option<String> {
    fixtures::inspect("container", name).and_then(|v| v["Image"].as_str().map(str::to_string))
}

/// The id of the container under `name`, from the engine.
pub(crate) fn id_of(name: &str) -> Option<String> {
    fixtures::inspect("container", name).and_then(|v| v["Id"].as_str().map(str::to_string))
}

/// Whether the container under `name` runs.
pub(crate) fn running(name: &str) -> bool {
    fixtures::inspect("container", name)
        .and_then(|v| v["State"]["Running"].as_bool())
        .unwrap_or(false)
}

/// Removes every container whose name contains the needle (replacements and parked ones too).
pub(crate) struct SweepContainers(pub String);

impl Drop for SweepContainers {
    fn drop(&mut self) {
        for name in fixtures::containers_named(&self.0) {
            let _ = docker(&["rm", "-f", "-v", &name]);
        }
    }
}

/// A v2 that becomes healthy only after about four seconds: an update of it stays in flight long
/// enough to be interrupted.
fn slow_to_prove() -> ImageGuard {
    Image::build(&format!("{}:slow", unique("src")))
        .file("/version", "slow")
        .healthcheck(
            "test -f /ready",
            Duration::from_millis(300),
            40,
            Duration::ZERO,
        )
        .cmd(&[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM INT; (sleep 4; touch /ready) & while :; do sleep 3600 & wait $!; done",
        ])
        .create()
}

fn last_start(serve: &Serve) -> Option<String> {
    serve.job("scan")["lastStart"].as_str().map(str::to_string)
}

/// Waits until the `scan` job has started by its schedule at least `n` times after the first
/// observation (each new `lastStart` with trigger `schedule` counts once).
fn wait_scheduled_scans(serve: &Serve, n: usize, timeout: Duration) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let first = last_start(serve);
    wait_for("scheduled scans", timeout, || {
        let job = serve.job("scan");
        if job["trigger"] == "schedule" {
            if let Some(s) = job["lastStart"].as_str() {
                if Some(s) != first.as_deref() && !seen.iter().any(|x| x == s) {
                    seen.push(s.to_string());
                }
            }
        }
        (seen.len() >= n).then(|| seen.clone())
    })
}

fn assert_advances(starts: &[String]) {
    let times: Vec<jiff::Timestamp> = starts
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("lastStart {s:?}: {e}")))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "lastStart advances: {starts:?}"
    );
}

#[test]
fn daemon_scans_on_a_six_field_cron_then_exits_0_on_sigterm() {
    if !fixtures::require_engine() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let only = format!("wdtest.run={run}");
    let mut serve = Serve::start(&[
        ("scan.cron", "* * * * * *"),
        ("scan.interval", "1h"),
        ("scan.initialScanOnStart", "false"),
        ("update.enabled", "false"),
        ("policy.onlyLabels", &only),
    ]);
    let job = serve.job("scan");
    assert!(
        job["schedule"]
            .as_str()
            .is_some_and(|s| s.contains("* * * * * *")),
        "{job}"
    );
    let starts = wait_scheduled_scans(&serve, 2, Duration::from_secs(20));
    assert_advances(&starts);
    let job = serve.job("scan");
    assert_eq!(job["trigger"], "schedule", "{job}");
    assert_eq!(job["kind"], "scan", "{job}");
    assert!(job["nextRun"].is_string(), "{job}");
    let status = serve.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

#[test]
fn daemon_scans_on_an_interval_without_cron() {
    if !fixtures::require_engine() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let only = format!("wdtest.run={run}");
    let mut serve = Serve::start(&[
        ("scan.interval", "2s"),
        ("scan.initialScanOnStart", "false"),
        ("update.enabled", "false"),
        ("policy.onlyLabels", &only),
    ]);
    assert_eq!(serve.job("scan")["schedule"], "every 2s");
    let starts = wait_scheduled_scans(&serve, 2, Duration::from_secs(20));
    assert_advances(&starts);
    assert_eq!(serve.job("scan")["outcome"], "succeeded");
    let (status, _) = serve.get("/api/jobs/update");
    assert_eq!(status, 404, "no update job with update.enabled: false");
    let status = serve.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

/// Scans every second until the container is `UpdateAvailable`, then updates it through the API:
/// the gauge follows, and the webhook receives `available` once for the new digest and `updated`.
#[test]
fn daemon_metrics_gauge_and_webhooks_follow_an_update() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    let (v1_id, _) = app.push_and_pull(App::plain("1"), "latest");
    let v2 = App::plain("2");
    let ctr = ContainerBuilder::new(&app.reference("latest"))
        .label("wdtest.run", &run)
        .run();
    let _sweep = SweepContainers(ctr.name().to_string());
    let hook = Receiver::start();
    let only = format!("wdtest.run={run}");
    let url = hook.url();
    let mut serve = Serve::start(&[
        ("server.token", "T"),
        ("scan.interval", "1s"),
        ("scan.cacheTTL", "1s"),
        ("update.enabled", "false"),
        ("policy.onlyLabels", &only),
        ("notify.webhooks[0].url", &url),
    ]);
    serve.wait_container(ctr.name(), "UpToDate", Duration::from_secs(30), |v| {
        v["status"] == "UpToDate"
    });
    let metrics = serve.metrics();
    assert!(metrics.contains("watchdocker_containers{"), "{metrics}");
    let gauge = format!(
        "watchdocker_container_update_available{{container=\"{}\"",
        ctr.name()
    );
    assert!(
        !metrics.contains(&gauge),
        "no gauge before an update exists:\n{metrics}"
    );
    assert!(hook.received().is_empty(), "{:?}", hook.received());

    let (v2_id, v2_digest) = app.push(v2, "latest");
    let view = serve.wait_container(
        ctr.name(),
        "UpdateAvailable",
        Duration::from_secs(30),
        |v| v["status"] == "UpdateAvailable",
    );
    assert_eq!(view["remoteDigest"], v2_digest.as_str(), "{view}");
    let metrics = serve.metrics();
    let line = format!(
        "watchdocker_container_update_available{{container=\"{}\",image=\"{}\"}} 1",
        ctr.name(),
        app.reference("latest")
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    assert!(
        metrics.contains("watchdocker_containers{status=\"UpdateAvailable\"}"),
        "{metrics}"
    );
    wait_for("the available webhook", Duration::from_secs(15), || {
        (!hook.events("available", ctr.name()).is_empty()).then_some(())
    });
    // More scans of the same remote digest send nothing more.
    wait_scheduled_scans(&serve, 3, Duration::from_secs(30));
    let available = hook.events("available", ctr.name());
    assert_eq!(available.len(), 1, "once per digest: {available:?}");
    assert_eq!(available[0]["remoteDigest"], v2_digest.as_str());
    assert_eq!(available[0]["image"], app.reference("latest"));

    let (status, v) = serve.call(
        "POST",
        &format!("/api/containers/{}/update?wait=true", ctr.name()),
        Some("T"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["results"][0]["outcome"], "updated", "{v}");
    let view = serve.wait_container(ctr.name(), "UpToDate", Duration::from_secs(30), |v| {
        v["status"] == "UpToDate"
    });
    assert_ne!(view["id"], ctr.id());
    assert_eq!(view["imageId"], v2_id.as_str());
    let metrics = serve.metrics();
    assert!(
        !metrics.contains(&gauge),
        "the gauge clears once the container runs the new image:\n{metrics}"
    );
    assert!(
        metrics.contains("watchdocker_updates_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    let updated = wait_for("the updated webhook", Duration::from_secs(15), || {
        let u = hook.events("updated", ctr.name());
        (!u.is_empty()).then_some(u)
    });
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0]["fromImageId"], v1_id.as_str(), "{updated:?}");
    assert_eq!(updated[0]["toImageId"], v2_id.as_str(), "{updated:?}");
    assert_eq!(hook.events("available", ctr.name()).len(), 1);
    let status = serve.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

/// `update.enabled` with an empty `autoUpdateCron`: the update job follows every scheduled scan,
/// so a new image is applied without any request.
#[test]
fn daemon_applies_an_update_by_itself_after_a_scheduled_scan() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    app.push_and_pull(App::plain("1"), "latest");
    let v2 = App::plain("2");
    let ctr = ContainerBuilder::new(&app.reference("latest"))
        .label("wdtest.run", &run)
        .run();
    let _sweep = SweepContainers(ctr.name().to_string());
    let only = format!("wdtest.run={run}");
    let mut serve = Serve::start(&[
        ("scan.interval", "2s"),
        ("scan.cacheTTL", "1s"),
        ("update.enabled", "true"),
        ("update.autoUpdateCron", ""),
        ("policy.onlyLabels", &only),
    ]);
    assert_eq!(
        serve.job("update")["schedule"],
        "after every scheduled scan"
    );
    serve.wait_container(ctr.name(), "UpToDate", Duration::from_secs(30), |v| {
        v["status"] == "UpToDate"
    });
    let (v2_id, _) = app.push(v2, "latest");
    let view = serve.wait_container(ctr.name(), "updated to v2", Duration::from_secs(60), |v| {
        v["imageId"] == v2_id.as_str() && v["status"] == "UpToDate"
    });
    assert_ne!(view["id"], ctr.id());
    assert_eq!(view["running"], true);
    assert_eq!(image_of(ctr.name()).as_deref(), Some(v2_id.as_str()));
    assert!(running(ctr.name()));
    let job = wait_for("the update job's record", Duration::from_secs(30), || {
        let j = serve.job("update");
        (j["running"] == false && j["counts"]["updated"].as_u64() >= Some(1)).then_some(j)
    });
    assert_eq!(job["trigger"], "schedule", "{job}");
    assert_eq!(job["outcome"], "succeeded", "{job}");
    assert!(
        job["results"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["container"] == ctr.name() && r["outcome"] == "updated")),
        "{job}"
    );
    let status = serve.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

/// An update interrupted after the rename (old container parked, no replacement): the next
/// start puts the old container back under its name, running, with its restart policy, before
/// the startup job (recovery, then the first scan) ends.
#[test]
fn daemon_start_recovers_an_interrupted_update() {
    if !fixtures::require_engine() {
        return;
    }
    let _one = exclusive();
    let image = Image::build(&unique("recover")).create();
    let ctr = ContainerBuilder::new(image.name_tag())
        .restart("unless-stopped")
        .run();
    let _sweep = SweepContainers(ctr.name().to_string());
    let short: String = ctr.id().chars().take(12).collect();
    // What the updater leaves after its stop step: policy `no`, stopped, parked under a name
    // that records the policy and that it ran.
    let parked = format!("{}-wd-old-{short}-unless-stopped-run", ctr.name());
    docker_ok(&["update", "--restart", "no", ctr.id()]);
    docker_ok(&["stop", "-t", "5", ctr.id()]);
    docker_ok(&["rename", ctr.id(), &parked]);
    assert!(id_of(ctr.name()).is_none());

    let mut serve = Serve::start(&[
        ("scan.interval", "1h"),
        ("update.enabled", "false"),
        ("policy.onlyLabels", "wdtest.none=1"),
    ]);
    let job = wait_for("the startup job to end", Duration::from_secs(60), || {
        let j = serve.job("scan");
        (j["trigger"] == "startup" && j["lastEnd"].is_string()).then_some(j)
    });
    assert_eq!(job["outcome"], "succeeded", "{job}");
    assert_eq!(
        id_of(ctr.name()).as_deref(),
        Some(ctr.id()),
        "{}",
        serve.log()
    );
    assert!(running(ctr.name()));
    let v = ctr.inspect();
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert!(fixtures::containers_named(&parked).is_empty());
    let view = serve.wait_container(ctr.name(), "listed", Duration::from_secs(15), |v| {
        v["id"] == ctr.id()
    });
    assert_eq!(view["running"], true);
    let status = serve.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

/// SIGTERM while an update is past its stop step: `/readyz` answers 503 while the update is
/// finished (the new container becomes healthy after a few seconds), then the process exits 0
/// and exactly one container holds the name, running the new image.
#[test]
fn daemon_sigterm_during_an_update_finishes_it_then_exits_0() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    app.push_and_pull(App::plain("1"), "latest");
    let slow = slow_to_prove();
    let ctr = ContainerBuilder::new(&app.reference("latest"))
        .label("wdtest.run", &run)
        .run();
    let _sweep = SweepContainers(ctr.name().to_string());
    let only = format!("wdtest.run={run}");
    let mut serve = Serve::start(&[
        ("server.token", "T"),
        ("scan.interval", "1h"),
        ("update.enabled", "false"),
        ("policy.onlyLabels", &only),
    ]);
    serve.wait_container(ctr.name(), "UpToDate", Duration::from_secs(30), |v| {
        v["status"] == "UpToDate"
    });
    let (slow_id, _) = app.push(slow, "latest");
    let (status, v) = serve.call(
        "POST",
        &format!("/api/containers/{}/update", ctr.name()),
        Some("T"),
        None,
    );
    assert_eq!(status, 202, "{v}");
    // Past the stop step: the old container is parked.
    let parked_prefix = format!("{}-wd-old-", ctr.name());
    wait_for(
        "the old container to be parked",
        Duration::from_secs(30),
        || (!fixtures::containers_named(&parked_prefix).is_empty()).then_some(()),
    );
    send_signal("-TERM", serve.pid());
    let (code, body) = wait_for("/readyz to answer 503", Duration::from_secs(10), || {
        fixtures::http_get(&serve.addr, "/readyz")
            .ok()
            .filter(|(code, _)| *code == 503)
    });
    assert_eq!(code, 503, "{body}");
    let status = serve.terminate(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", serve.log());
    assert_eq!(
        fixtures::containers_named(ctr.name()),
        vec![ctr.name().to_string()],
        "{}",
        serve.log()
    );
    assert_eq!(image_of(ctr.name()).as_deref(), Some(slow_id.as_str()));
    assert!(running(ctr.name()));
}

/// SIGKILL in the middle of an update (the old container parked, the new one created and waiting
/// to be proven), then a new `serve`: its crash recovery leaves exactly one container under the
/// name, running, with its restart policy, and nothing parked.
#[test]
fn daemon_killed_during_an_update_is_mended_by_the_next_start() {
    if !fixtures::require_registry_tools() {
        return;
    }
    let _one = exclusive();
    let run = unique("run");
    let mut app = App::new(&run);
    let (v1_id, _) = app.push_and_pull(App::plain("1"), "latest");
    // v2 proves itself only after a few seconds: time to kill the daemon mid-update.
    let slow = slow_to_prove();
    let ctr = ContainerBuilder::new(&app.reference("latest"))
        .label("wdtest.run", &run)
        .env("KEEP", "me")
        .restart("unless-stopped")
        .run();
    let _sweep = SweepContainers(ctr.name().to_string());
    let only = format!("wdtest.run={run}");
    let sets = [
        ("server.token", "T"),
        ("scan.interval", "1h"),
        ("update.enabled", "false"),
        ("policy.onlyLabels", only.as_str()),
    ];
    let mut serve = Serve::start(&sets);
    serve.wait_container(ctr.name(), "UpToDate", Duration::from_secs(30), |v| {
        v["status"] == "UpToDate"
    });
    let (slow_id, _) = app.push(slow, "latest");
    let (status, v) = serve.call(
        "POST",
        &format!("/api/containers/{}/update", ctr.name()),
        Some("T"),
        None,
    );
    assert_eq!(status, 202, "{v}");
    let parked_prefix = format!("{}-wd-old-", ctr.name());
    wait_for(
        "the old container parked and its replacement created",
        Duration::from_secs(30),
        || {
            let parked = !fixtures::containers_named(&parked_prefix).is_empty();
            let replaced = id_of(ctr.name()).is_some_and(|id| id != ctr.id());
            (parked && replaced).then_some(())
        },
    );
    serve.kill_hard();
    assert!(
        !fixtures::containers_named(&parked_prefix).is_empty(),
        "the kill left an update half done"
    );

    let mut again = Serve::start(&sets);
    let job = wait_for("the startup job to end", Duration::from_secs(90), || {
        let j = again.job("scan");
        (j["trigger"] == "startup" && j["lastEnd"].is_string()).then_some(j)
    });
    assert_eq!(job["outcome"], "succeeded", "{job}\n{}", again.log());
    // Finished (the replacement proved itself) or reverted: either way one container, running.
    assert_eq!(
        fixtures::containers_named(ctr.name()),
        vec![ctr.name().to_string()],
        "{}",
        again.log()
    );
    assert!(running(ctr.name()), "{}", again.log());
    let image = image_of(ctr.name()).unwrap_or_default();
    assert!(
        image == slow_id || image == v1_id,
        "runs {image}, neither v1 nor v2"
    );
    let v = fixtures::inspect("container", ctr.name()).expect("inspect");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert!(
        v["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == "KEEP=me")),
        "{v}"
    );
    let status = again.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", again.log());
}

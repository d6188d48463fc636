//! In-process tests: the real server on 127.0.0.1, a fake backend, raw HTTP over std `TcpStream`
//! (so malformed and hostile requests can be sent byte for byte). Every abuse test ends with a
//! normal request that must succeed.

use super::handlers::fixtures;
use super::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

struct Fake {
    snap: Arc<crate::state::Snapshot>,
    ready: Result<(), String>,
    seen: Mutex<Vec<ApiRequest>>,
    /// While true, `POST /api/updates/run` waits (at most 30 s): a request held in a handler.
    hold: (Mutex<bool>, Condvar),
}

impl Fake {
    fn new(snap: crate::state::Snapshot, ready: Result<(), String>) -> Arc<Fake> {
        Arc::new(Fake {
            snap: Arc::new(snap),
            ready,
            seen: Mutex::new(Vec::new()),
            hold: (Mutex::new(false), Condvar::new()),
        })
    }

    fn set_hold(&self, on: bool) {
        *self.hold.0.lock().unwrap() = on;
        self.hold.1.notify_all();
    }

    fn seen(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Backend for Fake {
    fn snapshot(&self) -> Arc<crate::state::Snapshot> {
        Arc::clone(&self.snap)
    }
    fn engine_ready(&self) -> Result<(), String> {
        self.ready.clone()
    }
    fn version(&self) -> Value {
        json!({ "version": "0.0.0-test" })
    }
    fn handle(&self, req: ApiRequest) -> Option<ApiReply> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(req.clone());
        }
        match &req.route {
            Route::Scan => Some(ApiReply::accepted(
                json!({ "jobId": 1, "admin": req.admin }),
            )),
            Route::StopContainer(id) if id == "boom" => panic!("handler exploded"),
            Route::UpdateContainer(_) => Some(match req.json::<Value>() {
                Ok(body) => ApiReply::ok(json!({ "body": body, "wait": req.query.wait })),
                Err(reply) => reply,
            }),
            Route::Metrics => Some(ApiReply::raw(200, "text/plain; version=0.0.4", "up 1\n")),
            Route::RunUpdates => {
                let (lock, cv) = &self.hold;
                let held = lock.lock().unwrap();
                let _ = cv
                    .wait_timeout_while(held, Duration::from_secs(30), |on| *on)
                    .unwrap();
                Some(ApiReply::accepted(json!({ "jobId": 2 })))
            }
            _ => None,
        }
    }
}

struct Server {
    addr: SocketAddr,
    fake: Arc<Fake>,
    running: Option<Running>,
}

/// Stops the server, so each test's threads and sockets end with it.
impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let stopped = running.shutdown();
            if !std::thread::panicking() {
                stopped.expect("shutdown");
            }
        }
    }
}

fn start_with(opts: ApiOptions, ready: Result<(), String>) -> Server {
    let fake = Fake::new(fixtures::snapshot(), ready);
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let running = serve(&[any], opts, fake.clone()).expect("serve");
    let addr = running.addrs()[0];
    assert_ne!(addr.port(), 0, "the bound port is reported");
    Server {
        addr,
        fake,
        running: Some(running),
    }
}

fn start(opts: ApiOptions) -> Server {
    start_with(opts, Ok(()))
}

fn open() -> ApiOptions {
    ApiOptions {
        allow_unauthenticated: true,
        ..ApiOptions::default()
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> u64 {
        self.json()["code"].as_u64().expect("code")
    }
    fn msg(&self) -> String {
        self.json()["msg"].as_str().expect("msg").to_string()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    // A bound on a hung test, not a timing assertion.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads one response (the server always sends Content-Length).
fn read_response(r: &mut impl BufRead) -> Option<Resp> {
    let mut resp = read_response_head(r)?;
    let len: usize = resp
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap_or(0));
    resp.body = vec![0; len];
    r.read_exact(&mut resp.body).ok()?;
    Some(resp)
}

/// The status line and headers only (the answer to a HEAD, or a `100 Continue`).
fn read_response_head(r: &mut impl BufRead) -> Option<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Resp {
        status,
        headers,
        body: Vec::new(),
    })
}

/// Everything the server sends until it closes the connection (a reset counts as closed). Fails
/// when the connection is still open after `connect`'s 30 s read timeout.
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Set in a child process of this test binary that runs one test alone.
const ALONE: &str = "WATCH_DOCKER_TEST_ALONE";

/// For tests that measure this process's memory, which tests running beside them (a panic's
/// backtrace alone maps tens of MB) would blur. In the test binary as run: runs `test` alone in
/// a child process, asserts that it passed there, and returns false. In that child: true, run it.
fn in_own_process(test: &str) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} alone: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Polls `cond` until it holds; fails after 30 s.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One request on a fresh connection; `extra` is header lines, each ending in `\r\n`.
fn request(addr: SocketAddr, method: &str, target: &str, extra: &str, body: &str) -> Resp {
    let mut s = connect(addr);
    let len = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let raw = format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{extra}{len}\r\n{body}");
    s.write_all(raw.as_bytes()).expect("write");
    read_response(&mut BufReader::new(s)).expect("a response")
}

fn get(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "GET", target, "", "")
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[test]
fn health_and_readiness() {
    let srv = start(ApiOptions::default());
    let r = get(srv.addr, "/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"code": 0, "msg": "ok", "data": {"status": "ok"}})
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(get(srv.addr, "/readyz").status, 200);

    let down = start_with(
        ApiOptions::default(),
        Err("engine unreachable: ECONNREFUSED".into()),
    );
    let r = get(down.addr, "/readyz");
    assert_eq!((r.status, r.code()), (503, 50003));
    assert!(r.msg().contains("ECONNREFUSED"));
    assert_eq!(get(down.addr, "/healthz").status, 200);
}

#[test]
fn unknown_path_and_wrong_method_are_base_res() {
    let srv = start(ApiOptions::default());
    let r = get(srv.addr, "/api/nope");
    assert_eq!((r.status, r.code()), (404, 40400));
    assert!(r.msg().contains("/api/nope"));
    let r = request(srv.addr, "PUT", "/api/containers/web", "", "");
    assert_eq!((r.status, r.code()), (405, 40500));
    assert_eq!(r.header("allow"), Some("GET, DELETE"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[test]
fn keep_alive_survives_errors_and_unread_bodies() {
    let srv = start(ApiOptions {
        token: Some(Secret::new("adm")),
        ..ApiOptions::default()
    });
    let mut s = connect(srv.addr);
    // 404, then a 401 whose small body the handler never read, then a normal GET: same connection.
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 404);
    s.write_all(b"POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 401);
    s.write_all(b"GET /api/version HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let v = read_response(&mut r).unwrap();
    assert_eq!(v.json()["data"], json!({"version": "0.0.0-test"}));
}

#[test]
fn containers_list_get_and_resolve() {
    let srv = start(ApiOptions::default());
    let names = |r: &Resp| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = get(srv.addr, "/api/containers");
    assert_eq!(names(&r), ["web", "db", "abc"]);
    let first = &r.json()["data"][0];
    for field in [
        "id",
        "name",
        "image",
        "running",
        "currentDigest",
        "remoteDigest",
        "status",
        "skipped",
        "skipReason",
        "labels",
        "lastCheckedAt",
    ] {
        assert!(first.get(field).is_some(), "missing {field}");
    }
    assert_eq!(
        names(&get(srv.addr, "/api/containers/?status=UpdateAvailable")),
        ["db"]
    );
    assert_eq!(get(srv.addr, "/api/containers?status=Bogus").status, 400);

    let full = format!("abc2{}", "0".repeat(60));
    for (key, want) in [
        (full.as_str(), "db"),
        ("abc2", "db"),
        ("web", "web"),
        ("abc", "abc"),
    ] {
        let r = get(srv.addr, &format!("/api/containers/{key}"));
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(r.json()["data"]["name"], want, "{key}");
    }
    let r = get(srv.addr, "/api/containers/ab");
    assert_eq!((r.status, r.code()), (400, 40000));
    assert!(r.msg().contains("db, web"), "{}", r.msg());
    let r = get(srv.addr, "/api/containers/nothing%20here");
    assert_eq!((r.status, r.code()), (404, 40400));
    assert!(r.msg().contains("nothing here"), "{}", r.msg());
}

#[test]
fn images_version_and_unbacked_routes() {
    let srv = start(ApiOptions::default());
    let r = get(srv.addr, "/api/images");
    assert_eq!(
        r.json()["data"][0]["repoTags"],
        json!(["registry.test/app:1"])
    );
    assert_eq!(
        get(srv.addr, "/api/version").json()["data"]["version"],
        "0.0.0-test"
    );
    let r = get(srv.addr, "/api/jobs");
    assert_eq!((r.status, r.code()), (501, 40400));
    assert_eq!(r.msg(), "GET /api/jobs is not implemented yet");
    // The page is on by default (server.ui); page.rs tests it in depth.
    let r = get(srv.addr, "/");
    assert_eq!(r.status, 200);
    let r = get(srv.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    assert_eq!(r.body, b"up 1\n");
}

#[test]
fn auth_matrix_over_http() {
    // No token configured: mutations are refused with instructions.
    let none = start(ApiOptions::default());
    let r = request(none.addr, "POST", "/api/scan", "", "");
    assert_eq!((r.status, r.code()), (403, 40300));
    assert!(r.msg().contains("WATCH_SERVER_TOKEN"));
    assert!(none.fake.seen.lock().unwrap().is_empty());

    // allowUnauthenticated: passes as admin.
    let open_srv = start(open());
    let r = request(open_srv.addr, "POST", "/api/scan", "", "");
    assert_eq!((r.status, r.code()), (202, 0));
    assert_eq!(r.json()["data"]["admin"], true);

    let srv = start(ApiOptions {
        token: Some(Secret::new("adm")),
        read_token: Some(Secret::new("rd")),
        ..ApiOptions::default()
    });
    let r = request(srv.addr, "POST", "/api/scan", "", "");
    assert_eq!((r.status, r.code()), (401, 40100));
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = request(srv.addr, "POST", "/api/scan", &bearer("wrong"), "");
    assert_eq!((r.status, r.code()), (401, 40100));
    let r = request(srv.addr, "POST", "/api/scan", &bearer("rd"), "");
    assert_eq!(r.status, 401, "the read token does not allow mutations");
    assert!(srv.fake.seen.lock().unwrap().is_empty());
    let r = request(srv.addr, "POST", "/api/scan", &bearer("adm"), "");
    assert_eq!((r.status, r.code()), (202, 0));
    assert_eq!(srv.fake.seen.lock().unwrap().len(), 1);

    // Reads: the read token or the admin token; health and the page stay open.
    assert_eq!(get(srv.addr, "/api/containers").status, 401);
    assert_eq!(get(srv.addr, "/metrics").status, 401);
    assert_eq!(
        request(srv.addr, "GET", "/api/containers", &bearer("rd"), "").status,
        200
    );
    assert_eq!(
        request(srv.addr, "GET", "/api/containers", &bearer("adm"), "").status,
        200
    );
    assert_eq!(
        request(srv.addr, "GET", "/api/containers", &bearer("x"), "").status,
        401
    );
    assert_eq!(get(srv.addr, "/healthz").status, 200);
    assert_eq!(get(srv.addr, "/readyz").status, 200);
    assert_eq!(get(srv.addr, "/").status, 200);
}

#[test]
fn bodies_reach_the_backend_and_bad_json_is_400() {
    let srv = start(open());
    let r = request(
        srv.addr,
        "POST",
        "/api/containers/web/update?wait=true",
        "Content-Type: application/json\r\n",
        r#"{"image": "registry.test/app:2"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["data"],
        json!({"body": {"image": "registry.test/app:2"}, "wait": true})
    );
    let r = request(
        srv.addr,
        "POST",
        "/api/containers/web/update",
        "",
        "{\"image\": ",
    );
    assert_eq!((r.status, r.code()), (400, 40000));
    assert!(r.msg().contains("EOF while parsing"), "{}", r.msg());
    let r = request(
        srv.addr,
        "POST",
        "/api/containers/web/update?wait=maybe",
        "",
        "",
    );
    assert_eq!((r.status, r.code()), (400, 40000));
}

#[test]
fn declared_huge_body_is_413_without_reading_it() {
    if !in_own_process("api::tests::declared_huge_body_is_413_without_reading_it") {
        return;
    }
    let srv = start(open());
    let before = rss_kib();
    let mut s = connect(srv.addr);
    s.write_all(
        b"POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n0123456789",
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s)).expect("413 before the body arrives");
    assert_eq!((r.status, r.code()), (413, 41300));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(srv.fake.seen.lock().unwrap().is_empty());
    assert_eq!(get(srv.addr, "/healthz").status, 200);
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 50 * 1024, "resident memory grew by {grown} KiB");
}

#[test]
fn oversized_chunked_body_is_413() {
    let srv = start(open());
    let s = connect(srv.addr);
    let mut w = s.try_clone().unwrap();
    // Write from another thread: the server answers and closes long before 10 MB are sent, and
    // our writes then fail, which is expected.
    let writer = std::thread::spawn(move || {
        let _ = w
            .write_all(b"POST /api/scan HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            if w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .is_err()
                || w.write_all(&chunk).is_err()
                || w.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let r = read_response(&mut BufReader::new(s)).expect("a 413");
    assert_eq!((r.status, r.code()), (413, 41300));
    writer.join().unwrap();
    assert!(srv.fake.seen.lock().unwrap().is_empty());
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn small_chunked_body_is_accepted() {
    let srv = start(open());
    let mut s = connect(srv.addr);
    s.write_all(
        b"POST /api/containers/web/update HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\n{\"ima\r\n12\r\nge\": \"app:3\"}     \r\n0\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(r.json()["data"]["body"], json!({"image": "app:3"}));
}

#[test]
fn garbage_is_rejected_and_the_server_goes_on() {
    let srv = start(ApiOptions::default());
    for junk in [
        &b"\x00\x01\x02 garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        // A TLS ClientHello, with no line end in sight.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST /api/scan HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /api/scan HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
    ] {
        let mut s = connect(srv.addr);
        s.write_all(junk).unwrap();
        // Either a 4xx or a closed connection is fine; a hang or a crash is not.
        if let Some(r) = read_response(&mut BufReader::new(s)) {
            assert!((400..500).contains(&r.status), "{junk:?} → {}", r.status);
        }
        assert_eq!(get(srv.addr, "/healthz").status, 200, "after {junk:?}");
    }
    // Heads beyond the 8 KiB cap, or with more than 100 fields: 431 (the 20 KB one may be cut
    // off by the close instead, while it is still being sent).
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    for head in [
        format!("X-Big: {}\r\n", "a".repeat(20_000)),
        format!("X-Big: {}\r\n", "a".repeat(8_200)),
        many,
    ] {
        let mut s = connect(srv.addr);
        let _ = s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{head}\r\n").as_bytes());
        if let Some(r) = read_response(&mut BufReader::new(s)) {
            assert_eq!((r.status, r.code()), (431, 40000));
        }
        assert_eq!(get(srv.addr, "/healthz").status, 200);
    }
}

#[test]
fn a_panicking_handler_is_a_500_and_the_server_goes_on() {
    let srv = start(open());
    let r = request(srv.addr, "POST", "/api/containers/boom/stop", "", "");
    assert_eq!((r.status, r.code()), (500, 50000));
    assert!(r.msg().contains("/api/containers/boom/stop"));
    let r = request(srv.addr, "POST", "/api/containers/boom/stop", "", "");
    assert_eq!(r.status, 500);
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn a_taken_port_is_an_error_naming_it() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let fake = Fake::new(crate::state::Snapshot::default(), Ok(()));
    let err = serve(&[addr], ApiOptions::default(), fake.clone()).unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    // The first address is free, the second taken: nothing stays bound.
    let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let free_addr = free.local_addr().unwrap();
    drop(free);
    let err = serve(&[free_addr, addr], ApiOptions::default(), fake.clone()).unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    drop(TcpListener::bind(free_addr).expect("the first address was released"));
    let zero = ApiOptions {
        max_connections: 0,
        ..ApiOptions::default()
    };
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    assert!(matches!(
        serve(&[any], zero, fake),
        Err(ApiError::Options(_))
    ));
}

#[test]
fn declared_huge_body_while_the_client_keeps_sending_is_413() {
    let srv = start(open());
    let s = connect(srv.addr);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(
            b"POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n",
        );
        let block = vec![b'x'; 1 << 20];
        // Until the server closes (bounded, in case it never does).
        for _ in 0..1024 {
            if w.write_all(&block).is_err() {
                return;
            }
        }
    });
    let r = read_response(&mut BufReader::new(s)).expect("a 413");
    assert_eq!((r.status, r.code()), (413, 41300));
    writer.join().unwrap();
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn all_interfaces_accepts_ipv4() {
    let addrs = bind_addrs(":0").unwrap();
    let fake = Fake::new(crate::state::Snapshot::default(), Ok(()));
    let running = serve(&addrs, ApiOptions::default(), fake).unwrap();
    // Where `[::]` is IPv6-only, `0.0.0.0` is bound too (on a port of its own, for `:0`).
    let bound = running.addrs();
    let port = bound
        .iter()
        .find(|a| a.is_ipv4())
        .unwrap_or(&bound[0])
        .port();
    assert_ne!(port, 0);
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert_eq!(get(v4, "/healthz").status, 200, "addrs {addrs:?}");
    running.shutdown().unwrap();
}

#[test]
fn a_thousand_idle_connections_do_not_stop_the_api() {
    if !in_own_process("api::tests::a_thousand_idle_connections_do_not_stop_the_api") {
        return;
    }
    // The default cap (256): most of the thousand are closed to admit the ones after them.
    let srv = start(ApiOptions::default());
    let before = rss_kib();
    // serve() raised this process's open-file limit, which the client ends need too.
    let idle: Vec<TcpStream> = (0..1000).map(|_| connect(srv.addr)).collect();
    let r = get(srv.addr, "/healthz");
    assert_eq!(r.status, 200);
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 50 * 1024, "resident memory grew by {grown} KiB");
    // The first ones were the idle ones waiting longest: closed without a word.
    let mut first = idle.into_iter().next().unwrap();
    assert!(until_closed(&mut first).is_empty());
    assert_eq!(get(srv.addr, "/api/version").status, 200);
}

#[test]
fn idle_and_trickling_clients_are_dropped() {
    let srv = start(ApiOptions {
        read_timeout: Duration::from_secs(1),
        ..open()
    });
    let mut silent = connect(srv.addr);
    let mut slow = connect(srv.addr);
    let mut w = slow.try_clone().unwrap();
    // One byte of a never-ending header every third of the read timeout: every single read is
    // in time, the head as a whole never is.
    const BYTES: usize = 90;
    let writer = std::thread::spawn(move || {
        let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        let bytes = head.iter().chain(std::iter::repeat(&b'a')).take(BYTES);
        let mut sent = 0;
        for b in bytes {
            if w.write_all(&[*b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(333));
        }
        sent
    });
    assert_eq!(get(srv.addr, "/healthz").status, 200, "served meanwhile");
    assert!(
        until_closed(&mut silent).is_empty(),
        "an idle client is closed without a word"
    );
    let answer = until_closed(&mut slow);
    if !answer.is_empty() {
        let r = read_response(&mut &answer[..]).expect("a response");
        assert_eq!((r.status, r.code()), (408, 40000));
    }
    let sent = writer.join().unwrap();
    assert!(
        sent < BYTES,
        "the trickling client was cut off ({sent} bytes sent)"
    );
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn ten_megabyte_body_is_413() {
    let srv = start(open());
    let s = connect(srv.addr);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(
            b"POST /api/containers/web/update HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n",
        );
        let block = vec![b'x'; 100_000];
        for _ in 0..100 {
            if w.write_all(&block).is_err() {
                return;
            }
        }
    });
    let r = read_response(&mut BufReader::new(s)).expect("a 413");
    assert_eq!((r.status, r.code()), (413, 41300));
    writer.join().unwrap();
    assert_eq!(srv.fake.seen(), 0);
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = start(open());
    let mut s = connect(srv.addr);
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /api/containers/web/update HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\n{\"image\":\"x\"}\
          GET /api/version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let a = read_response(&mut r).expect("first answer");
    assert_eq!(a.json()["data"], json!({"status": "ok"}));
    assert_eq!(a.header("connection"), None);
    let b = read_response(&mut r).expect("second answer");
    assert_eq!(b.json()["data"]["body"], json!({"image": "x"}));
    let c = read_response(&mut r).expect("third answer");
    assert_eq!(c.json()["data"]["version"], "0.0.0-test");
    assert_eq!(c.header("connection"), Some("close"));
    assert!(read_response(&mut r).is_none(), "closed as asked");
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn http_1_0_is_answered_and_closed() {
    let srv = start(open());
    let mut s = connect(srv.addr);
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).expect("an answer");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(read_response(&mut r).is_none());
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn head_requests_get_headers_only() {
    let srv = start(open());
    let mut s = connect(srv.addr);
    s.write_all(
        b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let head = read_response_head(&mut r).expect("an answer to HEAD");
    assert_eq!(head.status, 405);
    assert_ne!(head.header("content-length"), Some("0"));
    // Had a body followed, this would read it as a status line.
    assert_eq!(read_response(&mut r).expect("next answer").status, 200);
}

#[test]
fn expect_100_continue_only_for_an_acceptable_body() {
    let srv = start(ApiOptions {
        token: Some(Secret::new("adm")),
        ..ApiOptions::default()
    });
    let post = |auth: &str, len: usize| {
        format!(
            "POST /api/containers/web/update HTTP/1.1\r\nHost: t\r\n{auth}\
             Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let mut s = connect(srv.addr);
    s.write_all(post(&bearer("adm"), 13).as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(
        read_response_head(&mut r).expect("100 Continue").status,
        100
    );
    s.write_all(b"{\"image\":\"x\"}").unwrap();
    let done = read_response(&mut r).expect("the answer");
    assert_eq!(done.json()["data"]["body"], json!({"image": "x"}));

    // Refused before the body: the final answer instead of 100, and the connection closes
    // (the client may or may not send the body now).
    for (auth, len, want) in [(bearer("nope"), 13, 401), (bearer("adm"), 1_000_000, 413)] {
        let mut s = connect(srv.addr);
        s.write_all(post(&auth, len).as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        assert_eq!(read_response(&mut r).expect("an answer").status, want);
        assert!(read_response(&mut r).is_none());
    }
    assert_eq!(srv.fake.seen(), 1);
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn when_every_connection_is_busy_newcomers_get_503_at_once() {
    let srv = start(ApiOptions {
        max_connections: 1,
        ..open()
    });
    srv.fake.set_hold(true);
    let mut busy = connect(srv.addr);
    busy.write_all(b"POST /api/updates/run HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    wait_for("the request to reach the handler", || srv.fake.seen() == 1);
    let r = get(srv.addr, "/healthz");
    assert_eq!((r.status, r.code()), (503, 50000));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    srv.fake.set_hold(false);
    let done = read_response(&mut BufReader::new(busy)).expect("the held answer");
    assert_eq!(done.status, 202);
    // Once its thread is back to waiting (just after the answer is sent), the one slot is an
    // idle kept-alive connection, closed to admit the next client.
    wait_for("a new client to be served", || {
        get(srv.addr, "/healthz").status == 200
    });
}

#[test]
fn shutdown_frees_the_port_and_finishes_requests_in_flight() {
    let fake = Fake::new(fixtures::snapshot(), Ok(()));
    let opts = open();
    let running = serve(
        &[SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        opts,
        fake.clone(),
    )
    .unwrap();
    let addr = running.addrs()[0];
    let mut idle = connect(addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut idle_r = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut idle_r).unwrap().status, 200);

    fake.set_hold(true);
    let mut busy = connect(addr);
    busy.write_all(b"POST /api/updates/run HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_for("the request to reach the handler", || fake.seen() == 1);
    let stopper = std::thread::spawn(move || running.shutdown());
    wait_for("the port to close", || TcpStream::connect(addr).is_err());
    assert!(
        read_response(&mut idle_r).is_none(),
        "the idle connection is closed"
    );
    fake.set_hold(false);
    let done = read_response(&mut BufReader::new(busy)).expect("the request in flight is answered");
    assert_eq!(done.status, 202);
    assert_eq!(done.header("connection"), Some("close"));
    stopper.join().unwrap().expect("a clean shutdown");
}

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_accept_loop() {
    if !in_own_process("api::tests::running_out_of_file_descriptors_does_not_stop_the_accept_loop")
    {
        return;
    }
    let srv = start(open());
    let handle = &srv.running.as_ref().unwrap().server;
    // Take every free descriptor, then give one back for a client's socket. The accept blocked
    // right now has a descriptor reserved and takes that client; the next accept fails (EMFILE)
    // until the rest are given back.
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    assert!(hog.pop().is_some());
    let mut first = TcpStream::connect(srv.addr).expect("connect with the last descriptor");
    wait_for("the accept loop to run out of descriptors", || {
        handle.accept_errors() > 0
    });
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = BufReader::new(first);
    assert_eq!(read_response(&mut first).expect("served").status, 200);
    drop(hog);
    assert_eq!(get(srv.addr, "/healthz").status, 200, "accepting again");
}

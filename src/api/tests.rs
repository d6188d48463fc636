//! In-process tests: the real server on 127.0.0.1, a fake backend, raw HTTP over std `TcpStream`
//! (so malformed and hostile requests can be sent byte for byte).

use super::handlers::fixtures;
use super::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

struct Fake {
    snap: Arc<crate::state::Snapshot>,
    ready: Result<(), String>,
    seen: Mutex<Vec<ApiRequest>>,
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
            _ => None,
        }
    }
}

/// A port nothing listens on right now (oxhttp cannot report the port it bound for `:0`).
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct Server {
    addr: SocketAddr,
    fake: Arc<Fake>,
    _running: Running,
}

fn start_with(opts: ApiOptions, ready: Result<(), String>) -> Server {
    let fake = Arc::new(Fake {
        snap: Arc::new(fixtures::snapshot()),
        ready,
        seen: Mutex::new(Vec::new()),
    });
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let running = serve(&[addr], opts, fake.clone()).expect("serve");
    Server {
        addr,
        fake,
        _running: running,
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

/// Reads one response (oxhttp always sends Content-Length for our bodies).
fn read_response(r: &mut impl BufRead) -> Option<Resp> {
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
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Resp {
        status,
        headers,
        body,
    })
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
    // One request at a time: oxhttp loses pipelined requests (a new read buffer per request).
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
    let srv = start(open());
    let mut s = connect(srv.addr);
    s.write_all(
        b"POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n0123456789",
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s)).expect("413 before the body arrives");
    assert_eq!((r.status, r.code()), (413, 41300));
    assert!(srv.fake.seen.lock().unwrap().is_empty());
    assert_eq!(get(srv.addr, "/healthz").status, 200);
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
    ] {
        let mut s = connect(srv.addr);
        s.write_all(junk).unwrap();
        // Either a 4xx or a closed connection is fine; a hang or a crash is not.
        if let Some(r) = read_response(&mut BufReader::new(s)) {
            assert!((400..500).contains(&r.status), "{junk:?} → {}", r.status);
        }
        assert_eq!(get(srv.addr, "/healthz").status, 200, "after {junk:?}");
    }
    // Headers beyond oxhttp's 8 KB cap.
    let mut s = connect(srv.addr);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = s.write_all(big.as_bytes());
    if let Some(r) = read_response(&mut BufReader::new(s)) {
        assert_eq!(r.status, 400);
    }
    assert_eq!(get(srv.addr, "/healthz").status, 200);
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
    let fake = Arc::new(Fake {
        snap: Arc::new(crate::state::Snapshot::default()),
        ready: Ok(()),
        seen: Mutex::new(Vec::new()),
    });
    let err = serve(&[addr], ApiOptions::default(), fake.clone()).unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let zero = ApiOptions {
        max_connections: 0,
        ..ApiOptions::default()
    };
    let free = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    assert!(matches!(
        serve(&[free], zero, fake),
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
    let port = free_port();
    let addrs = bind_addrs(&format!(":{port}")).unwrap();
    let fake = Arc::new(Fake {
        snap: Arc::new(crate::state::Snapshot::default()),
        ready: Ok(()),
        seen: Mutex::new(Vec::new()),
    });
    let _running = serve(&addrs, ApiOptions::default(), fake).unwrap();
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert_eq!(get(v4, "/healthz").status, 200, "addrs {addrs:?}");
}

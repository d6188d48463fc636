//! The client against a fake engine on a unix socket: canned HTTP answers where the real
//! engine cannot misbehave on demand (closing keep-alive connections, odd bodies, slow streams).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Engine, EngineError};

/// Generous: only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(10);

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Request, &mut UnixStream) + Send + Sync;

/// A fake engine: answers `/_ping` and `/version` as engine 20.10 does (API 1.12–1.41) and
/// passes every other request to the test's handler, which writes the whole response.
struct FakeEngine {
    dir: PathBuf,
    socket: PathBuf,
    connections: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    /// One message each time the server closed a connection.
    closed: Receiver<()>,
    stop: Arc<AtomicBool>,
    /// Every connection accepted, so that dropping the fake ends them even while a client
    /// keeps one open.
    streams: Arc<Mutex<Vec<UnixStream>>>,
    thread: Option<JoinHandle<()>>,
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wdtest-fake-engine-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl FakeEngine {
    /// `keep_alive: false` closes every connection after one response, although the
    /// response claims `Connection: keep-alive`, as an engine or proxy dropping idle
    /// connections does.
    fn start(
        keep_alive: bool,
        handler: impl Fn(&Request, &mut UnixStream) + Send + Sync + 'static,
    ) -> FakeEngine {
        let dir = temp_dir();
        let socket = dir.join("docker.sock");
        FakeEngine::start_at(dir, socket, keep_alive, Arc::new(handler))
    }

    fn start_at(
        dir: PathBuf,
        socket: PathBuf,
        keep_alive: bool,
        handler: Arc<Handler>,
    ) -> FakeEngine {
        let listener = UnixListener::bind(&socket).expect("bind fake engine socket");
        let connections = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = mpsc::channel();
        let thread = {
            let (connections, paths, stop) = (connections.clone(), paths.clone(), stop.clone());
            let streams = streams.clone();
            std::thread::Builder::new()
                .name("fake-engine".into())
                .spawn(move || {
                    let mut served = Vec::new();
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        if let Ok(clone) = stream.try_clone() {
                            streams.lock().expect("streams").push(clone);
                        }
                        connections.fetch_add(1, Ordering::SeqCst);
                        let (handler, paths, closed) =
                            (handler.clone(), paths.clone(), closed_tx.clone());
                        served.push(std::thread::spawn(move || {
                            serve(stream, keep_alive, &*handler, &paths, &closed)
                        }));
                    }
                    for thread in served {
                        let _ = thread.join();
                    }
                })
                .expect("spawn fake engine")
        };
        FakeEngine {
            dir,
            socket,
            connections,
            paths,
            closed,
            stop,
            streams,
            thread: Some(thread),
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn engine(&self) -> Engine {
        Engine::new(&self.host(), None, DEADLINE).expect("engine")
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths").clone()
    }

    fn wait_closed(&self) {
        self.closed
            .recv_timeout(DEADLINE)
            .expect("the fake engine should have closed the connection");
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().expect("streams").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(
    stream: UnixStream,
    keep_alive: bool,
    handler: &Handler,
    paths: &Mutex<Vec<String>>,
    closed: &Sender<()>,
) {
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        paths.lock().expect("paths").push(request.path.clone());
        match request.path.as_str() {
            "/_ping" => respond(&mut writer, "200 OK", &[("Api-Version", "1.41")], "OK"),
            "/version" => respond(
                &mut writer,
                "200 OK",
                &[("Content-Type", "application/json")],
                r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#,
            ),
            _ => handler(&request, &mut writer),
        }
        if !keep_alive {
            break;
        }
    }
    // Shut down rather than only drop: the fake keeps a clone of the stream.
    let _ = writer.shutdown(std::net::Shutdown::Both);
    drop(reader);
    let _ = closed.send(());
}

fn read_request(reader: &mut BufReader<impl Read>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A complete response that claims keep-alive, whatever the server then does.
fn respond(stream: &mut impl Write, status: &str, headers: &[(&str, &str)], body: &str) {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: keep-alive\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !status.starts_with("204") && !status.starts_with("304") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    let _ = stream.write_all(out.as_bytes());
}

fn json_ok(stream: &mut UnixStream, body: &str) {
    respond(
        stream,
        "200 OK",
        &[("Content-Type", "application/json")],
        body,
    );
}

fn chunk(stream: &mut UnixStream, data: &str) {
    let _ = write!(stream, "{:x}\r\n{data}\r\n", data.len());
    let _ = stream.flush();
}

#[test]
fn a_closed_keep_alive_connection_is_not_reused() {
    let fake = FakeEngine::start(false, |req, s| match req.path.as_str() {
        "/v1.41/containers/json?all=1" => json_ok(s, r#"[{"Id":"abc","Names":["/web"]}]"#),
        "/v1.41/info" => json_ok(s, r#"{"ID":"x","Driver":"overlay2"}"#),
        _ => respond(s, "204 No Content", &[], ""),
    });
    let engine = fake.engine();

    // Negotiation: two requests, two connections, each closed by the server.
    assert_eq!(engine.negotiate().expect("negotiate"), (1, 41));
    fake.wait_closed();
    fake.wait_closed();

    // The pooled connection is dead by now: the probe must notice, not fail the request.
    // POST is not retried by the client, so only the probe can save it.
    engine
        .request("POST", "/containers/abc/start", None, &[], None)
        .expect("first request after the server closed the pooled connection");
    fake.wait_closed();
    let list = engine.list_containers(true).expect("second request");
    assert_eq!(list[0].name(), "web");
    fake.wait_closed();

    // Without waiting for the close: the probe or the one retry of a GET covers the race.
    for _ in 0..5 {
        engine.info().expect("back-to-back requests");
    }
    assert_eq!(fake.paths().len(), 9);
}

#[test]
fn keep_alive_connections_are_reused() {
    let fake = FakeEngine::start(true, |_, s| json_ok(s, "{}"));
    let engine = fake.engine();
    for _ in 0..4 {
        engine.info().expect("info");
    }
    assert_eq!(
        fake.connections(),
        1,
        "one connection for ping, version and 4 requests"
    );
}

#[test]
fn negotiation_caps_and_prefixes_every_path() {
    let fake = FakeEngine::start(true, |_, s| json_ok(s, "[]"));
    let engine = Engine::new(&fake.host(), Some((1, 40)), DEADLINE).expect("engine");
    assert_eq!(engine.api_version(), None, "no I/O before the first call");
    engine.list_images().expect("list images");
    assert_eq!(engine.api_version(), Some((1, 40)));
    engine.list_images().expect("list images again");
    assert_eq!(
        fake.paths(),
        [
            "/_ping",
            "/version",
            "/v1.40/images/json",
            "/v1.40/images/json"
        ],
        "negotiated once, then cached"
    );
}

#[test]
fn negotiation_refuses_a_cap_below_the_engine_minimum() {
    let fake = FakeEngine::start(true, |_, s| json_ok(s, "[]"));
    let engine = Engine::new(&fake.host(), Some((1, 11)), DEADLINE).expect("engine");
    let e = engine.list_images().unwrap_err();
    assert!(matches!(e, EngineError::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("1.11"), "{e}");
}

#[test]
fn negotiation_is_retried_after_the_engine_comes_up() {
    let dir = temp_dir();
    let socket = dir.join("docker.sock");
    let engine =
        Engine::new(&format!("unix://{}", socket.display()), None, DEADLINE).expect("engine");
    let e = engine.info().unwrap_err();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(engine.api_version(), None);

    let _fake = FakeEngine::start_at(
        dir,
        socket,
        true,
        Arc::new(|_: &Request, s: &mut UnixStream| json_ok(s, "{}")),
    );
    engine.info().expect("info once the engine is up");
    assert_eq!(engine.api_version(), Some((1, 41)));
}

#[test]
fn b_error_bodies_are_surfaced() {
    let fake = FakeEngine::start(true, |req, s| match req.path.as_str() {
        "/v1.41/containers/web/json" => respond(
            s,
            "404 Not Found",
            &[("Content-Type", "application/json")],
            r#"{"message":"No such container: web"}"#,
        ),
        "/v1.41/containers/web/rename?name=db" => respond(
            s,
            "409 Conflict",
            &[("Content-Type", "application/json")],
            r#"{"message":"Conflict. The container name \"/db\" is already in use"}"#,
        ),
        _ => respond(
            s,
            "500 Internal Server Error",
            &[("Content-Type", "text/plain")],
            "boom\n",
        ),
    });
    let engine = fake.engine();

    let e = engine.inspect_container("/web").unwrap_err();
    assert_eq!(
        e.to_string(),
        "inspect container web: engine answered 404: No such container: web"
    );
    assert!(e.is_not_found());

    let e = engine
        .post_json::<Value>("/containers/web/rename?name=db", None)
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert!(e.to_string().contains("is already in use"), "{e}");

    let e = engine.list_images().unwrap_err();
    assert_eq!(e.to_string(), "list images: engine answered 500: boom");
    assert!(!e.is_transient());

    // The connection stays usable after error answers.
    assert_eq!(fake.connections(), 1);
}

#[test]
fn post_bodies_and_empty_answers() {
    let seen = Arc::new(Mutex::new(None));
    let fake = {
        let seen = seen.clone();
        FakeEngine::start(true, move |req, s| match req.path.as_str() {
            "/v1.41/containers/create?name=web" => {
                *seen.lock().expect("seen") = Some((
                    req.method.clone(),
                    req.header("content-type").map(str::to_string),
                    serde_json::from_slice::<Value>(&req.body).ok(),
                ));
                respond(
                    s,
                    "201 Created",
                    &[("Content-Type", "application/json")],
                    r#"{"Id":"new1","Warnings":[]}"#,
                );
            }
            "/v1.41/containers/web/start" => respond(s, "304 Not Modified", &[], ""),
            _ => respond(s, "204 No Content", &[], ""),
        })
    };
    let engine = fake.engine();

    let body = json!({"Image": "web:2", "Labels": {"a": "b"}});
    let created: Option<Value> = engine
        .post_json("/containers/create?name=web", Some(&body))
        .expect("create");
    assert_eq!(created.expect("a body")["Id"], "new1");
    let (method, content_type, sent) = seen.lock().expect("seen").clone().expect("request seen");
    assert_eq!(method, "POST");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(sent, Some(body));

    let started: Option<Value> = engine
        .post_json("/containers/web/start", None)
        .expect("start");
    assert!(started.is_none(), "304 has no body");
    let stopped = engine
        .request(
            "POST",
            "/containers/web/stop?t=1",
            None,
            &[],
            Some(Duration::from_secs(5)),
        )
        .expect("stop");
    assert_eq!(stopped.status, 204);
}

#[test]
fn c_chunked_json_stream_is_read_incrementally() {
    let (got_first_tx, got_first) = mpsc::channel::<()>();
    let got_first = Mutex::new(got_first);
    let waited = Arc::new(AtomicBool::new(false));
    let fake = {
        let waited = waited.clone();
        FakeEngine::start(true, move |req, s| {
            assert_eq!(req.path, "/v1.41/images/create?fromImage=web&tag=2");
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            chunk(s, "{\"status\":\"Pulling from web\",\"id\":\"2\"}\r\n");
            // The rest only comes once the client has the first object in hand.
            let ok = got_first
                .lock()
                .expect("channel")
                .recv_timeout(DEADLINE)
                .is_ok();
            waited.store(ok, Ordering::SeqCst);
            chunk(s, "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":1}}\r\n{\"status\":\"Dow");
            chunk(s, "nload complete\"}\r\n");
            chunk(s, "{\"errorDetail\":{\"message\":\"toomanyrequests\"},\"error\":\"toomanyrequests\"}\r\n");
            let _ = s.write_all(b"0\r\n\r\n");
        })
    };
    let engine = fake.engine();
    let mut stream = engine
        .stream(
            "POST",
            "/images/create?fromImage=web&tag=2",
            &[("X-Registry-Auth", "e30=")],
            DEADLINE,
        )
        .expect("stream");

    let first = stream.next().expect("a first object").expect("valid");
    assert_eq!(first["status"], "Pulling from web");
    got_first_tx.send(()).expect("signal");
    let rest: Vec<Value> = stream.map(|v| v.expect("valid")).collect();
    assert!(
        waited.load(Ordering::SeqCst),
        "the first object arrived before the rest was sent"
    );
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[1]["status"], "Download complete");
    assert_eq!(rest[2]["errorDetail"]["message"], "toomanyrequests");
}

#[test]
fn an_idle_stream_times_out_per_read() {
    let (done_tx, done) = mpsc::channel::<()>();
    let done = Mutex::new(done);
    let fake = FakeEngine::start(true, move |_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        chunk(s, "{\"Type\":\"container\",\"Action\":\"start\"}");
        // Then nothing, until the test is over.
        let _ = done.lock().expect("channel").recv_timeout(DEADLINE);
    });
    let engine = fake.engine();
    let mut events = engine
        .stream("GET", "/events", &[], Duration::from_millis(300))
        .expect("stream");
    assert_eq!(
        events.next().expect("event").expect("valid")["Action"],
        "start"
    );
    let e = events.next().expect("an error").unwrap_err();
    assert!(matches!(e, EngineError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().starts_with("GET /events: "), "{e}");
    assert!(events.next().is_none(), "a failed stream ends");
    done_tx.send(()).expect("release the server");
}

#[test]
fn bad_json_is_a_protocol_error() {
    let fake = FakeEngine::start(true, |req, s| match req.path.as_str() {
        "/v1.41/events" => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            chunk(s, "{\"a\":1}{nope");
            let _ = s.write_all(b"0\r\n\r\n");
        }
        _ => json_ok(s, "[{\"Id\": 5"),
    });
    let engine = fake.engine();
    let e = engine.list_containers(false).unwrap_err();
    assert!(matches!(e, EngineError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().starts_with("list containers: "), "{e}");

    let mut events = engine
        .stream("GET", "/events", &[], DEADLINE)
        .expect("stream");
    assert!(events.next().expect("first").is_ok());
    let e = events.next().expect("second").unwrap_err();
    assert!(matches!(e, EngineError::Protocol { .. }), "{e:?}");
}

#[test]
fn d_a_missing_socket_is_unreachable_naming_the_path() {
    let dir = temp_dir();
    let socket = dir.join("missing.sock");
    let host = format!("unix://{}", socket.display());
    let engine = Engine::new(&host, None, DEADLINE).expect("engine");
    for e in [
        engine.ping().unwrap_err(),
        engine.list_containers(true).unwrap_err(),
    ] {
        assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains(&host), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refusing_socket_is_unreachable() {
    // A socket file with nobody listening (its listener is gone).
    let dir = temp_dir();
    let socket = dir.join("stale.sock");
    drop(UnixListener::bind(&socket).expect("bind"));
    let engine =
        Engine::new(&format!("unix://{}", socket.display()), None, DEADLINE).expect("engine");
    let e = engine.ping().unwrap_err();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

#[test]
fn tcp_hosts_use_plain_http() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let _ = stream.set_read_timeout(Some(DEADLINE));
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut paths = Vec::new();
        while let Some(request) = read_request(&mut reader) {
            match request.path.as_str() {
                "/_ping" => respond(&mut writer, "200 OK", &[("Api-Version", "1.44")], "OK"),
                "/version" => respond(&mut writer, "200 OK", &[], r#"{"MinAPIVersion":"1.24"}"#),
                _ => respond(&mut writer, "200 OK", &[], "[]"),
            }
            paths.push(request.path);
        }
        paths
    });
    let engine = Engine::new(&format!("tcp://127.0.0.1:{port}"), None, DEADLINE).expect("engine");
    assert!(engine.list_images().expect("list images").is_empty());
    drop(engine);
    let paths = server.join().expect("server");
    assert_eq!(paths, ["/_ping", "/version", "/v1.44/images/json"]);
}

#[test]
fn a_refused_tcp_port_is_unreachable() {
    // Bind then release a port, so that nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let host = format!("tcp://127.0.0.1:{port}");
    let e = Engine::new(&host, None, DEADLINE)
        .expect("engine")
        .ping()
        .unwrap_err();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&host), "{e}");
}

#[test]
fn concurrent_first_calls_negotiate_once() {
    let fake = FakeEngine::start(true, |_, s| json_ok(s, "[]"));
    let engine = fake.engine();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || engine.list_images().map(|l| l.len()))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("thread").expect("list images"), 0);
    }
    let paths = fake.paths();
    assert_eq!(
        paths.iter().filter(|p| *p == "/_ping").count(),
        1,
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| *p == "/v1.41/images/json").count(),
        4
    );
}

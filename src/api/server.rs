//! The listening side: binds every address itself, accepts on one thread per listener, runs each
//! connection on its own thread ([`conn::serve`]), keeps at most `server.maxConnections` of them,
//! and stops on request. Knows nothing of HTTP beyond the one canned `503` it sends when full.
//!
//! The connection cap never makes the accept loop wait. When every slot is taken, the connection
//! that is least in use is closed to admit the newcomer — one lingering after an error answer
//! first, then the one idle longest (no byte of a request yet), then the one whose request head has
//! been trickling in longest — so a flood of idle or slow clients can never keep `/healthz` from
//! being answered. Only when every slot is in the middle of a request is the newcomer answered 503
//! at once. The accept loop survives accept errors (out of file descriptors...): it logs them, at
//! most every few seconds, pauses briefly and goes on.

use super::app::App;
use super::auth::AuthConfig;
use super::conn::{self, Phase, Tracker};
use super::reply::{ApiReply, ErrorCode};
use super::{ApiError, ApiOptions, Backend};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The pause after an accept error other than an aborted handshake: EMFILE and friends stay until
/// a connection closes, and retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The least time between two log lines about the same trouble in the accept loop.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long [`Handle::shutdown`] waits for an accept thread to notice.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub(super) fn serve(
    addrs: &[SocketAddr],
    opts: ApiOptions,
    backend: Arc<dyn Backend>,
) -> Result<Handle, ApiError> {
    if addrs.is_empty() {
        return Err(ApiError::Options("no address to bind".into()));
    }
    if opts.read_timeout.is_zero() {
        // std rejects a zero socket timeout, which would fail every connection.
        return Err(ApiError::Options(
            "server.readTimeout must be more than 0s".into(),
        ));
    }
    if opts.max_connections == 0 {
        return Err(ApiError::Options(
            "server.maxConnections must be at least 1".into(),
        ));
    }
    raise_fd_limit(opts.max_connections);
    // All at once, so `[::]` and `0.0.0.0` on one dual-stack port conflict as they would for real;
    // on an error the ones already bound are dropped, and nothing stays bound.
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let bind_err = |source| ApiError::Bind {
            addr: *addr,
            source,
        };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        bound.push(listener.local_addr().map_err(bind_err)?);
        listeners.push(listener);
    }
    let shared = Arc::new(Shared {
        app: App {
            auth: AuthConfig {
                token: opts.token,
                read_token: opts.read_token,
                allow_unauthenticated: opts.allow_unauthenticated,
            },
            max_body: opts.max_body,
            ui: opts.ui,
            backend,
        },
        read_timeout: opts.read_timeout,
        max_connections: opts.max_connections,
        stopping: AtomicBool::new(false),
        accept_errors: AtomicU64::new(0),
        conns: Mutex::new(Registry::default()),
        left: Condvar::new(),
    });
    let mut acceptors = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let mine = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("api-accept".into())
            .spawn(move || accept_loop(listener, &mine));
        match spawned {
            Ok(handle) => acceptors.push(handle),
            Err(source) => {
                // Stop the ones already started; their listeners close with them.
                let partial = Handle {
                    addrs: bound[..acceptors.len()].to_vec(),
                    shared,
                    acceptors,
                };
                let _ = partial.shutdown();
                return Err(ApiError::Start { source });
            }
        }
    }
    log::info!(component = "api", addrs:? = bound; "API listening");
    Ok(Handle {
        shared,
        acceptors,
        addrs: bound,
    })
}

/// The soft limit on open files up to the hard one: every connection costs a descriptor, and the
/// default soft limit (often 1024) leaves little room for a few hundred connections next to the
/// daemon's own files.
fn raise_fd_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let need = max_connections as u64 + 64;
            if limit < need {
                log::warn!(component = "api", limit = limit, maxConnections = max_connections;
                    "the open-file limit is below what server.maxConnections needs ({need}): \
                     new connections may fail when the API is full");
            } else {
                log::debug!(component = "api", limit = limit; "open-file limit");
            }
        }
        Err(e) => {
            log::warn!(component = "api"; "could not raise the open-file limit: {e}");
        }
    }
}

/// What the accept threads and connection threads share.
struct Shared {
    app: App,
    read_timeout: Duration,
    max_connections: usize,
    stopping: AtomicBool,
    /// Accept errors other than aborted handshakes, since the start (EMFILE...).
    accept_errors: AtomicU64,
    conns: Mutex<Registry>,
    /// Signalled whenever a connection leaves the registry.
    left: Condvar,
}

/// The open connections, each with a handle on its socket so the server can close it.
#[derive(Default)]
struct Registry {
    next_id: u64,
    slots: HashMap<u64, Slot>,
}

struct Slot {
    stream: Arc<TcpStream>,
    phase: Phase,
    since: Instant,
}

/// Which connection to close to admit a new one: the lowest phase (see [`Phase`]), the oldest
/// within it; never one in the middle of a request. Pure.
fn pick_victim(slots: impl Iterator<Item = (u64, Phase, Instant)>) -> Option<u64> {
    slots
        .filter(|(_, phase, _)| *phase != Phase::Busy)
        .min_by_key(|(id, phase, since)| (*phase, *since, *id))
        .map(|(id, ..)| id)
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the map consistent: every change is one call.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A slot for a new connection, closing another one if needed; None when every slot is busy,
    /// or the server stops.
    fn admit(&self, stream: &Arc<TcpStream>) -> Option<u64> {
        let mut reg = self.registry();
        if self.stopping() {
            return None;
        }
        if reg.slots.len() >= self.max_connections {
            let victim = pick_victim(reg.slots.iter().map(|(id, s)| (*id, s.phase, s.since)))?;
            if let Some(slot) = reg.slots.remove(&victim) {
                // Its thread wakes from its read with end-of-file and ends.
                let _ = slot.stream.shutdown(Shutdown::Both);
                log::debug!(component = "api", phase:? = slot.phase;
                    "connection limit reached: closed a connection to admit a new one");
            }
        }
        let id = reg.next_id;
        reg.next_id += 1;
        reg.slots.insert(
            id,
            Slot {
                stream: Arc::clone(stream),
                phase: Phase::Idle,
                since: Instant::now(),
            },
        );
        Some(id)
    }

    fn enter(&self, id: u64, phase: Phase) -> bool {
        let mut reg = self.registry();
        // Checked under the lock that `Handle::shutdown` sweeps under: no connection can go back
        // to waiting for a request after the sweep.
        if self.stopping() && matches!(phase, Phase::Idle | Phase::Head) {
            return false;
        }
        match reg.slots.get_mut(&id) {
            Some(slot) => {
                if slot.phase != phase {
                    slot.phase = phase;
                    slot.since = Instant::now();
                }
                true
            }
            None => false,
        }
    }

    fn leave(&self, id: u64) {
        self.registry().slots.remove(&id);
        self.left.notify_all();
    }
}

/// A connection's place in the registry; leaving it (even by a panic) frees the slot.
struct Seat<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Tracker for Seat<'_> {
    fn enter(&self, phase: Phase) -> bool {
        self.shared.enter(self.id, phase)
    }

    fn stopping(&self) -> bool {
        self.shared.stopping()
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.shared.leave(self.id);
    }
}

/// Counts repeats of one kind of trouble so it is logged at most every [`LOG_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Some(how many were not logged since the last time) when this one should be logged.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[derive(Default)]
struct AcceptLog {
    errors: Throttle,
    full: Throttle,
    spawn: Throttle,
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    let mut log = AcceptLog::default();
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        match accepted {
            Ok((stream, _peer)) => {
                // Nothing in here should panic; if it does, the listener must outlive it.
                let admitted = catch_unwind(AssertUnwindSafe(|| admit(shared, stream, &mut log)));
                if admitted.is_err() {
                    log::error!(component = "api"; "admitting a connection panicked");
                }
            }
            // The client gave up during the handshake, or a signal: nothing to wait for.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                if let Some(more) = log.errors.ready() {
                    log::error!(component = "api", suppressed = more;
                        "accepting a connection: {e} (retrying)");
                }
                shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                thread::sleep(ACCEPT_PAUSE);
            }
        }
    }
}

fn admit(shared: &Arc<Shared>, stream: TcpStream, log: &mut AcceptLog) {
    // Accepted sockets are blocking on Linux already; say so in case a platform differs.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    // Shared with the registry (not duplicated: one descriptor per connection), which shuts it
    // down to close the connection from outside.
    let stream = Arc::new(stream);
    let Some(id) = shared.admit(&stream) else {
        if !shared.stopping() {
            if let Some(more) = log.full.ready() {
                log::warn!(component = "api", maxConnections = shared.max_connections,
                    suppressed = more; "every connection is busy with a request: answering 503");
            }
            refuse(&stream, shared.max_connections);
        }
        return;
    };
    let worker = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("api-conn".into())
        .spawn(move || {
            let seat = Seat {
                shared: &worker,
                id,
            };
            conn::serve(stream, worker.read_timeout, &worker.app, &seat);
        });
    if let Err(e) = spawned {
        // The closure (and the stream in it) is dropped: the client sees the connection close.
        shared.leave(id);
        if let Some(more) = log.spawn.ready() {
            log::error!(component = "api", suppressed = more;
                "starting a connection thread: {e}");
        }
    }
}

/// Answers 503 on the accept thread without waiting on the client: the write is small, into an
/// empty send buffer, and has a short timeout; what the client already sent is read, not waited
/// for, so the close is not a reset that would discard the answer.
fn refuse(mut stream: &TcpStream, max: usize) {
    let reply = ApiReply::error(
        ErrorCode::Internal,
        format!("the API is serving its maximum of {max} connections (server.maxConnections); retry shortly"),
    )
    .with_status(503)
    .with_header("Retry-After", "1");
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(&conn::encode(reply, true, false));
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut scratch = [0u8; 4096];
        let _ = stream.read(&mut scratch);
    }
}

/// The running server, kept by [`super::Running`].
pub(super) struct Handle {
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
}

impl Handle {
    pub(super) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Accept errors so far (out of file descriptors...); the accept loops go on after each.
    #[cfg(test)]
    pub(super) fn accept_errors(&self) -> u64 {
        self.shared.accept_errors.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection not in the middle of a request, and waits (at most
    /// `server.readTimeout` and a second) for those that are to answer and close.
    pub(super) fn shutdown(self) -> Result<(), ApiError> {
        let shared = &self.shared;
        {
            let reg = shared.registry();
            shared.stopping.store(true, Ordering::SeqCst);
            for slot in reg.slots.values() {
                if slot.phase != Phase::Busy {
                    let _ = slot.stream.shutdown(Shutdown::Both);
                }
            }
        }
        // A blocked accept() returns only with a connection: make one.
        for addr in &self.addrs {
            let _ = TcpStream::connect_timeout(&wake_addr(*addr), Duration::from_secs(1));
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut stuck = Vec::new();
        for (handle, addr) in self.acceptors.into_iter().zip(&self.addrs) {
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                stuck.push(*addr);
            }
        }
        let deadline = Instant::now() + shared.read_timeout + Duration::from_secs(1);
        let mut reg = shared.registry();
        while !reg.slots.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(component = "api", open = reg.slots.len();
                    "API stopped with requests still being handled");
                break;
            }
            reg = shared
                .left
                .wait_timeout(reg, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(reg);
        if !stuck.is_empty() {
            return Err(ApiError::Join {
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the accept thread of {stuck:?} did not stop"),
                ),
            });
        }
        log::info!(component = "api",
            acceptErrors = shared.accept_errors.load(Ordering::Relaxed); "API stopped");
        Ok(())
    }

    /// Blocks until the accept threads end (they only end through [`Handle::shutdown`]).
    pub(super) fn join(self) -> Result<(), ApiError> {
        for handle in self.acceptors {
            handle.join().map_err(|_| ApiError::Join {
                source: io::Error::other("an API accept thread panicked"),
            })?;
        }
        Ok(())
    }
}

/// Where to connect to reach a listener: its own address, or loopback for a wildcard one.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_are_lingering_then_idle_then_slow_never_busy() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let pick = |v: &[(u64, Phase, Instant)]| pick_victim(v.iter().copied());
        assert_eq!(pick(&[]), None);
        assert_eq!(
            pick(&[(1, Phase::Busy, at(0)), (2, Phase::Busy, at(1))]),
            None
        );
        let mixed = [
            (1, Phase::Busy, at(0)),
            (2, Phase::Head, at(1)),
            (3, Phase::Idle, at(5)),
            (4, Phase::Idle, at(3)),
            (5, Phase::Closing, at(9)),
        ];
        assert_eq!(pick(&mixed), Some(5));
        assert_eq!(pick(&mixed[..4]), Some(4), "the idle one waiting longest");
        assert_eq!(
            pick(&mixed[..2]),
            Some(2),
            "a trickling head before nothing"
        );
        let heads = [(7, Phase::Head, at(4)), (8, Phase::Head, at(2))];
        assert_eq!(pick(&heads), Some(8));
    }

    #[test]
    fn wildcards_are_woken_on_loopback() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(wake_addr(sa("0.0.0.0:80")), sa("127.0.0.1:80"));
        assert_eq!(wake_addr(sa("[::]:80")), sa("[::1]:80"));
        assert_eq!(wake_addr(sa("10.0.0.1:80")), sa("10.0.0.1:80"));
    }
}

//! How bytes reach the engine: a ureq agent over a unix socket (`unix:///path`) or plain TCP
//! (`tcp://host:port`). ureq keeps doing HTTP/1.1 (keep-alive pooling, chunked bodies); this file
//! only opens sockets and moves bytes.
//!
//! It knows nothing of the Engine API (paths, versions, JSON). The connector traits are outside
//! ureq's semver promise (`ureq::unversioned`), which is why ureq is pinned to `~3.5` and all of
//! that surface lives in this one file.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};
use ureq::Agent;

/// Idle connections kept per engine. Scans inspect containers from several threads at once;
/// a handful of warm connections avoids reconnecting for each, and the engine's own limits
/// are far above this.
const IDLE_CONNECTIONS: usize = 8;

/// How long an idle connection may wait in the pool. The engine keeps idle connections
/// open indefinitely, but a proxy in front of a `tcp://` engine may not.
const IDLE_AGE: Duration = Duration::from_secs(30);

/// Where the engine listens, parsed from `docker.host` / `DOCKER_HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path` or `tcp://host[:port]` (port 2375, Docker's plain-HTTP default).
    pub(crate) fn parse(host: &str) -> Result<Endpoint, &'static str> {
        if let Some(path) = host.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err("a unix socket path must be absolute (unix:///var/run/docker.sock)");
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = host.strip_prefix("tcp://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
                return Err("expected tcp://host:port");
            }
            let has_port = match authority.rfind(':') {
                // `[::1]` alone has a colon but no port.
                Some(i) => !authority[i..].contains(']'),
                None => false,
            };
            let authority = if has_port {
                authority.to_string()
            } else {
                format!("{authority}:2375")
            };
            return Ok(Endpoint::Tcp(authority));
        }
        if host.starts_with("https://") || host.starts_with("ssh://") {
            return Err("only unix:// and plain tcp:// engines are supported (no TLS, no ssh)");
        }
        Err("expected unix:///path or tcp://host:port")
    }

    /// The `scheme://authority` requests are made to. For a unix socket the authority is only
    /// a name for the `Host` header and the pool key; the connector ignores it.
    pub(crate) fn base_url(&self) -> String {
        match self {
            Endpoint::Unix(_) => "http://docker".to_string(),
            Endpoint::Tcp(authority) => format!("http://{authority}"),
        }
    }
}

/// Builds the agent for one engine: statuses are data (the engine's error body matters), no
/// proxy (a `HTTP_PROXY` meant for registries must not capture engine traffic), no redirects.
pub(crate) fn agent(endpoint: &Endpoint) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .max_idle_connections(IDLE_CONNECTIONS)
        .max_idle_connections_per_host(IDLE_CONNECTIONS)
        .max_idle_age(IDLE_AGE)
        .user_agent(concat!("watch-docker/", env!("CARGO_PKG_VERSION")))
        .build();
    match endpoint {
        Endpoint::Unix(path) => {
            Agent::with_parts(config, UnixConnector { path: path.clone() }, NoResolver)
        }
        Endpoint::Tcp(_) => Agent::new_with_config(config),
    }
}

/// Opens a `UnixStream` to a fixed path, whatever the request URI says.
struct UnixConnector {
    path: PathBuf,
}

impl fmt::Debug for UnixConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixConnector")
            .field("path", &self.path)
            .finish()
    }
}

impl Connector<()> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<UnixTransport>, ureq::Error> {
        // Connecting to a local socket either succeeds or fails at once (missing file,
        // refused, permission denied), so there is no connect timeout to honour. The io error
        // kind is kept so the client can tell those cases apart.
        let stream = UnixStream::connect(&self.path)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        let transport = UnixTransport {
            stream: Arc::new(Socket(stream)),
            buffers,
            read_timeout: None,
            write_timeout: None,
        };
        (details.register_shutdown)(Arc::downgrade(&transport.stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(transport))
    }
}

/// The stream, shared (weakly) with ureq so `Agent::shutdown` can interrupt blocked I/O.
struct Socket(UnixStream);

impl ShutdownHandle for Socket {
    fn shutdown(&self) {
        // An error means it is already closed.
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

pub(crate) struct UnixTransport {
    stream: Arc<Socket>,
    buffers: LazyBuffers,
    // Last values set on the socket, to skip a syscall per read/write when unchanged.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for UnixTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixTransport")
            .field("peer", &self.stream.0.peer_addr().ok())
            .finish()
    }
}

/// The timeout to put on the socket for this step, or the ureq timeout error if its budget
/// is already spent.
fn socket_timeout(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

fn is_timeout(e: &io::Error) -> bool {
    // SO_RCVTIMEO/SO_SNDTIMEO expiry surfaces as EAGAIN (WouldBlock) on Linux.
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let limit = socket_timeout(timeout)?;
        if limit != self.write_timeout {
            self.stream.0.set_write_timeout(limit)?;
            self.write_timeout = limit;
        }
        let output = &self.buffers.output()[..amount];
        match (&self.stream.0).write_all(output) {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(e) => Err(e.into()),
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let limit = socket_timeout(timeout)?;
        let started = Instant::now();
        let mut current = limit;
        loop {
            if current != self.read_timeout {
                self.stream.0.set_read_timeout(current)?;
                self.read_timeout = current;
            }
            let input = self.buffers.input_append_buf();
            match (&self.stream.0).read(input) {
                Ok(amount) => {
                    self.buffers.input_appended(amount);
                    return Ok(amount > 0);
                }
                // A signal interrupted the read: retry with what is left of the budget, since
                // Linux does not restart socket reads that have a timeout.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(limit) = limit {
                        let left = limit.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            return Err(ureq::Error::Timeout(timeout.reason));
                        }
                        current = Some(left);
                    }
                }
                Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Called before a pooled connection is reused. The engine (or anything between) may have
    /// closed it while idle; reusing it would fail the next request, so probe for real: a
    /// non-blocking read must find nothing to read. End of stream means closed; unsolicited
    /// bytes mean the connection is out of step with HTTP. Either way, open a fresh one.
    fn is_open(&mut self) -> bool {
        probe(&self.stream.0).unwrap_or(false)
    }
}

fn probe(mut stream: &UnixStream) -> io::Result<bool> {
    stream.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let open = match stream.read(&mut byte) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Ok(_) | Err(_) => false,
    };
    stream.set_nonblocking(false)?;
    Ok(open)
}

/// Name resolution is meaningless for a socket path: hand the connector a placeholder
/// address instead of looking up the URI's authority.
#[derive(Debug)]
struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(SocketAddr::from(([127, 0, 0, 1], 0)));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        let check = |host: &str, want: Result<Endpoint, ()>| {
            assert_eq!(Endpoint::parse(host).map_err(|_| ()), want, "{host}");
        };
        check(
            "unix:///var/run/docker.sock",
            Ok(Endpoint::Unix("/var/run/docker.sock".into())),
        );
        check(
            "tcp://10.0.0.5:2375",
            Ok(Endpoint::Tcp("10.0.0.5:2375".into())),
        );
        check("tcp://docker", Ok(Endpoint::Tcp("docker:2375".into())));
        check(
            "tcp://docker:2376/",
            Ok(Endpoint::Tcp("docker:2376".into())),
        );
        check("tcp://[::1]", Ok(Endpoint::Tcp("[::1]:2375".into())));
        check("tcp://[::1]:2375", Ok(Endpoint::Tcp("[::1]:2375".into())));
        check("unix://relative.sock", Err(()));
        check("tcp://", Err(()));
        check("tcp://a/b", Err(()));
        check("https://docker:2376", Err(()));
        check("/var/run/docker.sock", Err(()));
        check("", Err(()));
    }

    #[test]
    fn base_urls() {
        assert_eq!(Endpoint::Unix("/x.sock".into()).base_url(), "http://docker");
        assert_eq!(Endpoint::Tcp("h:1".into()).base_url(), "http://h:1");
    }

    #[test]
    fn probe_sees_a_closed_peer() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        assert!(probe(&a).expect("probe"));
        drop(b);
        assert!(!probe(&a).expect("probe"));
    }

    #[test]
    fn probe_rejects_unsolicited_bytes() {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        b.write_all(b"x").expect("write");
        assert!(!probe(&a).expect("probe"));
    }
}

//! `server.addr` → socket addresses (SPEC.md §3: `":8080"` is every interface, IPv4 and IPv6 where
//! available). The decision is pure ([`plan`]); the one probe of this host's IPv6 behaviour is
//! [`probe_stack`].

use super::ApiError;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How this host's IPv6 sockets behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ipv6Mode {
    /// `[::]` also accepts IPv4 (v4-mapped; `net.ipv6.bindv6only=0`, the Linux default).
    DualStack,
    /// `[::]` is IPv6 only: IPv4 needs its own `0.0.0.0` socket, which then does not conflict.
    Ipv6Only,
    /// No IPv6 at all.
    Ipv4Only,
}

/// What the text of `server.addr` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    AllInterfaces(u16),
    Exact(SocketAddr),
    /// A host name to resolve, and a port.
    Host(String, u16),
}

pub(crate) fn plan(addr: &str) -> Result<Plan, ApiError> {
    let bad = |reason: &str| ApiError::Addr {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    if let Some(port) = addr.strip_prefix(':') {
        return port
            .parse()
            .map(Plan::AllInterfaces)
            .map_err(|_| bad("the port after ':' must be a number from 0 to 65535"));
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(Plan::Exact(sa));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("expected :PORT (all interfaces) or HOST:PORT"));
    };
    let port = port
        .parse()
        .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
    if host.is_empty() || host.contains(':') {
        // A bare IPv6 address without brackets, e.g. `::1:8080`.
        return Err(bad("write an IPv6 address in brackets, e.g. [::1]:8080"));
    }
    Ok(Plan::Host(host.to_string(), port))
}

pub(crate) fn all_interfaces(port: u16, stack: Ipv6Mode) -> Vec<SocketAddr> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    match stack {
        Ipv6Mode::DualStack => vec![v6],
        Ipv6Mode::Ipv6Only => vec![v6, v4],
        Ipv6Mode::Ipv4Only => vec![v4],
    }
}

/// Binds `[::]:0` and connects to it over IPv4 loopback: success means `[::]` is dual-stack.
pub(crate) fn probe_stack() -> Ipv6Mode {
    let Ok(listener) = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)) else {
        return Ipv6Mode::Ipv4Only;
    };
    let Ok(port) = listener.local_addr().map(|a| a.port()) else {
        return Ipv6Mode::Ipv4Only;
    };
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // The kernel completes the handshake from the backlog; nothing needs to accept.
    match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
        Ok(_) => Ipv6Mode::DualStack,
        Err(_) => Ipv6Mode::Ipv6Only,
    }
}

pub(crate) fn bind_addrs(addr: &str) -> Result<Vec<SocketAddr>, ApiError> {
    match plan(addr)? {
        Plan::AllInterfaces(port) => Ok(all_interfaces(port, probe_stack())),
        Plan::Exact(sa) => Ok(vec![sa]),
        Plan::Host(host, port) => {
            let resolved =
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|source| ApiError::Resolve {
                        addr: addr.to_string(),
                        source,
                    })?;
            let mut out: Vec<SocketAddr> = Vec::new();
            for sa in resolved {
                if !out.contains(&sa) {
                    out.push(sa);
                }
            }
            if out.is_empty() {
                return Err(ApiError::Addr {
                    addr: addr.to_string(),
                    reason: format!("{host} resolves to no address"),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(plan(":8080").unwrap(), Plan::AllInterfaces(8080));
        assert_eq!(
            plan("127.0.0.1:9000").unwrap(),
            Plan::Exact(sa("127.0.0.1:9000"))
        );
        assert_eq!(plan("[::1]:9000").unwrap(), Plan::Exact(sa("[::1]:9000")));
        assert_eq!(plan("0.0.0.0:80").unwrap(), Plan::Exact(sa("0.0.0.0:80")));
        assert_eq!(
            plan("localhost:81").unwrap(),
            Plan::Host("localhost".into(), 81)
        );
        for bad in [
            "", "8080", ":", ":http", ":70000", "host:", "host:x", "::1:8080", ":8080x",
        ] {
            let err = plan(bad).unwrap_err();
            assert!(matches!(err, ApiError::Addr { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("server.addr"), "{err}");
        }
    }

    #[test]
    fn all_interfaces_never_binds_both_on_a_dual_stack() {
        assert_eq!(
            all_interfaces(80, Ipv6Mode::DualStack),
            vec!["[::]:80".parse().unwrap()]
        );
        assert_eq!(
            all_interfaces(80, Ipv6Mode::Ipv4Only),
            vec!["0.0.0.0:80".parse().unwrap()]
        );
        assert_eq!(all_interfaces(80, Ipv6Mode::Ipv6Only).len(), 2);
    }

    #[test]
    fn host_names_resolve_and_exact_addresses_stay() {
        let addrs = bind_addrs("localhost:8080").unwrap();
        assert!(
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
        assert_eq!(
            bind_addrs("127.0.0.1:1").unwrap(),
            vec!["127.0.0.1:1".parse().unwrap()]
        );
        let all = bind_addrs(":8080").unwrap();
        assert!(all
            .iter()
            .all(|a| a.ip().is_unspecified() && a.port() == 8080));
    }
}

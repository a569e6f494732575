//! Resolving a target's host to addresses: which name is looked up, where, and for how long.
//!
//! The policy ([`crate::policy`]) checks the name the client asked for, so the name that is
//! looked up must be exactly that name. The system resolver does not promise that: glibc
//! (resolv.conf(5), `search` and `ndots`) tries names with fewer dots than `ndots` under each
//! search domain *first*, and any name under them after its absolute lookup failed — so with
//! `search corp.internal` (every Kubernetes pod has such a list) `db` becomes
//! `db.corp.internal`, past a `--deny '*.corp.internal:*'`. A name ending in a dot is absolute
//! and never expanded (RFC 1034 §3.1). But glibc's `files` source does not match a name with a
//! trailing dot against `/etc/hosts`. So a name is resolved in this order, each step the
//! name itself and nothing else:
//!
//! 1. an IP literal needs no lookup;
//! 2. `localhost` and `*.localhost` are the loopback addresses, `127.0.0.1` then `::1`,
//!    without a lookup (RFC 6761 §6.3 lets resolvers answer them so);
//! 3. `/etc/hosts` (hosts(5)), read by us: every line that lists the name, in file order;
//! 4. otherwise the system resolver (`getaddrinfo`) with the absolute name `NAME.`, so no
//!    search domain is ever appended.
//!
//! `getaddrinfo` cannot be interrupted or given a timeout, and a resolver that does not answer
//! can hold it for tens of seconds. So lookups run on a few resolver threads, fed through a
//! bounded `crossbeam` channel; the connection thread waits for the answer only until the
//! handshake deadline. A stuck lookup then holds a resolver thread, not the client: the
//! client gets its answer at the deadline (see [`crate::connection`] for which answer).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::target::{Host, Target};

/// The hosts file (hosts(5)).
const HOSTS_FILE: &str = "/etc/hosts";
/// How many lookups may run at once: each one that hangs holds one of these threads.
const RESOLVER_THREADS: usize = 8;
/// How many lookups may wait for a resolver thread.
const QUEUE: usize = 256;

/// Where a target's addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The target is an IP literal.
    Literal,
    /// `localhost` or a name under it (RFC 6761).
    Localhost,
    /// A line of `/etc/hosts`.
    HostsFile,
    /// The system resolver, asked for the absolute name.
    Resolver,
}

impl Source {
    /// Whether the answer came from a lookup (it depends on DNS or the hosts file, not only
    /// on what the client sent).
    pub fn is_lookup(self) -> bool {
        matches!(self, Source::HostsFile | Source::Resolver)
    }
}

/// A target's addresses (not yet checked against the policy), and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addrs: Vec<SocketAddr>,
    pub source: Source,
}

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The resolver answered with an error (no such name, no address, a failure).
    Failed { name: String, why: String },
    /// No answer before the deadline.
    TimedOut { name: String },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Failed { name, why } => write!(f, "resolve {name}: {why}"),
            LookupError::TimedOut { name } => {
                write!(f, "resolve {name}: no answer within the handshake deadline")
            }
        }
    }
}

/// Resolves `target`, waiting for a lookup at most until `deadline`.
pub fn resolve(target: &Target, deadline: Instant) -> Result<Resolved, LookupError> {
    let port = target.port;
    let name = match &target.host {
        Host::Ip(ip) => return Ok(resolved(vec![SocketAddr::new(*ip, port)], Source::Literal)),
        Host::Name(name) => name,
    };
    if name == "localhost" || name.ends_with(".localhost") {
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        let addrs = loopback.map(|ip| SocketAddr::new(ip, port)).to_vec();
        return Ok(resolved(addrs, Source::Localhost));
    }
    let listed = hosts_file_addresses(Path::new(HOSTS_FILE), name);
    if !listed.is_empty() {
        let addrs = listed
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        return Ok(resolved(addrs, Source::HostsFile));
    }
    let addrs = ask_resolver(name, port, deadline)?;
    Ok(resolved(addrs, Source::Resolver))
}

fn resolved(addrs: Vec<SocketAddr>, source: Source) -> Resolved {
    Resolved { addrs, source }
}

/// The addresses `/etc/hosts` lists for `name` (case-insensitive), in file order. Lines are
/// `ADDRESS NAME [ALIAS…]`, `#` starts a comment; lines whose address does not parse are
/// skipped, as glibc does. A missing or unreadable file lists nothing.
fn hosts_file_addresses(path: &Path, name: &str) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if fields.any(|n| n.eq_ignore_ascii_case(name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

/// One lookup for a resolver thread.
struct Lookup {
    /// The absolute name, with its trailing dot.
    name: String,
    port: u16,
    /// Nobody waits for the answer after this.
    deadline: Instant,
    answer: Sender<io::Result<Vec<SocketAddr>>>,
}

/// The queue of the resolver threads, started at the first lookup.
static LOOKUPS: LazyLock<Sender<Lookup>> = LazyLock::new(|| {
    let (queue, lookups) = crossbeam_channel::bounded(QUEUE);
    for n in 0..RESOLVER_THREADS {
        let lookups = lookups.clone();
        let started = std::thread::Builder::new()
            .name(format!("resolver-{n}"))
            .spawn(move || run_resolver(&lookups));
        if let Err(e) = started {
            log::warn!("cannot start resolver thread {n}: {e}");
        }
    }
    queue
});

fn run_resolver(lookups: &Receiver<Lookup>) {
    for lookup in lookups {
        if Instant::now() >= lookup.deadline {
            continue; // its client has had its answer already
        }
        let addrs = (lookup.name.as_str(), lookup.port)
            .to_socket_addrs()
            .map(Iterator::collect);
        let _ = lookup.answer.send(addrs);
    }
}

/// Asks the system resolver for the absolute name `name.`, waiting until `deadline`.
fn ask_resolver(name: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, LookupError> {
    let timed_out = || LookupError::TimedOut { name: name.into() };
    let failed = |why: String| LookupError::Failed {
        name: name.into(),
        why,
    };
    let (answer, answered) = crossbeam_channel::bounded(1);
    let lookup = Lookup {
        name: format!("{name}."),
        port,
        deadline,
        answer,
    };
    match LOOKUPS.send_deadline(lookup, deadline) {
        Ok(()) => {}
        Err(SendTimeoutError::Timeout(_)) => return Err(timed_out()),
        Err(SendTimeoutError::Disconnected(_)) => return Err(failed("no resolver thread".into())),
    }
    match answered.recv_deadline(deadline) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(failed("no addresses".into())),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(RecvTimeoutError::Timeout) => Err(timed_out()),
        Err(RecvTimeoutError::Disconnected) => Err(failed("the resolver thread failed".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target(host: &str, port: u16) -> Target {
        crate::target::target_from_parts(host, &port.to_string()).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn literals_and_localhost_need_no_lookup() {
        let r = resolve(&target("10.1.2.3", 22), soon()).unwrap();
        assert_eq!(
            (r.addrs, r.source),
            (vec!["10.1.2.3:22".parse().unwrap()], Source::Literal)
        );
        let r = resolve(&target("::", 22), soon()).unwrap();
        assert_eq!(r.addrs, vec!["[::]:22".parse().unwrap()]);
        for name in ["localhost", "LocalHost.", "a.b.localhost"] {
            let r = resolve(&target(name, 80), soon()).unwrap();
            assert_eq!(r.source, Source::Localhost, "{name}");
            assert_eq!(
                r.addrs,
                vec!["127.0.0.1:80".parse().unwrap(), "[::1]:80".parse().unwrap()]
            );
        }
        // `localhost` must be the whole last label.
        assert!(!matches!(
            resolve(&target("notlocalhost", 80), Instant::now()),
            Ok(Resolved {
                source: Source::Localhost,
                ..
            })
        ));
    }

    #[test]
    fn hosts_file_lines_list_names_and_aliases() {
        let path = std::env::temp_dir().join(format!("wsproxy-hosts-{}", std::process::id()));
        std::fs::write(
            &path,
            "# comment\n127.0.0.1 localhost\n10.0.0.5  db.corp.internal db  # the database\n\
             ::5 db\nnot-an-ip db\n10.0.0.5 db\n0.0.0.0 zero ZERO.example\n",
        )
        .unwrap();
        let ips = |name| hosts_file_addresses(&path, name);
        assert_eq!(
            ips("db"),
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "::5".parse().unwrap()
            ]
        );
        assert_eq!(
            ips("DB.corp.internal"),
            ["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(ips("zero.example"), ["0.0.0.0".parse::<IpAddr>().unwrap()]);
        assert!(ips("corp.internal").is_empty());
        assert!(ips("comment").is_empty());
        std::fs::remove_file(&path).unwrap();
        assert!(hosts_file_addresses(&path, "db").is_empty());
    }

    #[test]
    fn a_passed_deadline_is_a_timeout_not_a_hang() {
        let err = ask_resolver("example.invalid", 80, Instant::now()).unwrap_err();
        assert!(
            matches!(
                err,
                LookupError::TimedOut { .. } | LookupError::Failed { .. }
            ),
            "{err}"
        );
    }
}

//! The proxy's settings, as the command line ([`crate::cli`]) produced them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::framing::Limits;
use crate::origin::OriginPolicy;
use crate::policy::Policy;
use crate::static_files::WebRoot;
use crate::target::Target;
use crate::tls::{TlsClient, TlsServer};
use crate::tokens::TokenTargets;

/// How much to log (`-v`, `-d`); `RUST_LOG` can refine it further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Warnings and errors only.
    Quiet,
    /// `-v`: a line when each tunnel opens and closes, and every refusal.
    Verbose,
    /// `-d`: also the handshake transcript and a line per frame.
    Debug,
}

/// Where tunnels go.
#[derive(Debug, Clone)]
pub enum TargetMode {
    /// The client names the target in the path: `/<host>:<port>` (the prototype's way).
    FromPath,
    /// `--target HOST:PORT`: every tunnel goes there, whatever the path (websockify's way).
    Fixed(Target),
    /// `--token-file`: the `?token=` (or, with `--host-token`, the Host name) picks a target.
    Tokens {
        targets: Arc<TokenTargets>,
        from_host: bool,
    },
}

/// Everything the listener and the connections need to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub verbosity: Verbosity,
    /// How long a client has to complete its request.
    pub handshake_timeout: Duration,
    /// How long to try each target address.
    pub connect_timeout: Duration,
    /// How long the side that starts closing waits for the other.
    pub close_timeout: Duration,
    /// Close tunnels with no data either way for this long.
    pub idle_timeout: Option<Duration>,
    /// How long a write to a client or target may make no progress (the stall limit, unless
    /// an idle timeout is set: see [`Config::stall_limit`]).
    pub stall_timeout: Duration,
    /// Ping RFC 6455 clients that have been quiet this long; close if two intervals pass
    /// without an answer.
    pub heartbeat: Option<Duration>,
    /// How long in-flight data may drain after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Beyond this many connections at once, new clients get 503.
    pub max_connections: usize,
    /// Finished threads kept waiting for the next job (see [`crate::listener::threads`]).
    pub spare_threads: usize,
    pub limits: Limits,
    pub targets: TargetMode,
    pub policy: Policy,
    pub origins: OriginPolicy,
    pub web: WebRoot,
    /// `--cert`/`--key`: serve wss:// (and https://) on the same port.
    pub tls: Option<Arc<TlsServer>>,
    /// `--tls-only`: refuse plain connections.
    pub tls_only: bool,
    /// `--tls-target`: connect to targets over TLS.
    pub tls_target: Option<Arc<TlsClient>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            verbosity: Verbosity::Quiet,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            idle_timeout: None,
            stall_timeout: Duration::from_secs(60),
            heartbeat: None,
            shutdown_grace: Duration::from_secs(5),
            max_connections: 4096,
            spare_threads: crate::listener::threads::DEFAULT_SPARES,
            limits: Limits::default(),
            targets: TargetMode::FromPath,
            policy: Policy::default(),
            origins: OriginPolicy {
                loopback_only: true,
                ..OriginPolicy::default()
            },
            web: WebRoot::Builtin,
            tls: None,
            tls_only: false,
            tls_target: None,
        }
    }
}

impl Config {
    /// How long a write to either peer may make no progress before the tunnel (or a static
    /// response) ends: `--idle-timeout` when set (a stalled peer is idle), else
    /// `--stall-timeout`.
    pub fn stall_limit(&self) -> Duration {
        self.idle_timeout.unwrap_or(self.stall_timeout)
    }
}

//! The proxy's settings, as the command line ([`crate::cli`]) produced them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::framing::Limits;

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
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            verbosity: Verbosity::Quiet,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }
}

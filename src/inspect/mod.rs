//! Inspection: see the traffic of the tunnels — recordings that Wireshark opens, a live
//! inspector page, Prometheus metrics. Every feature here is opt-in and costs nothing when off.
//!
//! A tunnel is four byte streams, named by who sends to whom ([`Flow`]): the client's bytes to
//! the proxy and ours back (one TCP connection, carrying the WebSocket handshake and frames),
//! and our bytes to the target and its bytes back (a second TCP connection, carrying the raw
//! tunnelled bytes). The features watch those streams through [`tap`]s: thin wrappers around
//! a pump's reader or writer that hand each chunk, as it passes, to an [`tap::Observer`].
//!
//! | module | what | spec |
//! |---|---|---|
//! | [`tap`] | readers and writers that show what passes through them to an observer | — |
//! | [`pcapng`] | a tunnel's streams as two synthesized TCP connections in a pcapng file | draft-ietf-opsawg-pcapng, RFC 9293 |
//! | [`recorder`] | `--record DIR`: one pcapng file per tunnel, written by a background thread | — |
//! | [`frames`] | WebSocket frames found in the byte streams, annotated, in a bounded ring | RFC 6455 §5, §7.4; draft-hixie-76 §4 |
//! | [`har`] | one tunnel as a HAR 1.2 file with Chrome's `_webSocketMessages` | HAR 1.2 |
//! | [`metrics`] | counters, gauges and histograms for `/metrics` | Prometheus text format 0.0.4 |
//! | [`live`] | the table of open tunnels that the inspector shows | — |
//! | [`admin`] | `--admin ADDR:PORT`: `/metrics`, `/healthz`, the inspector page and its live updates | WHATWG HTML §9.2 (server-sent events) |
//!
//! ## How the proxy uses this
//!
//! Nothing here is started by itself. The proxy builds, from its options, at most one
//! [`recorder::RecordDir`] (`--record`), one [`metrics::Metrics`] and one [`live::LiveTable`]
//! (`--admin`), and starts the [`admin`] listener. Per connection it wraps the client's reader
//! and writer (and, once connected, the target's) in taps whose observers are the connection's
//! [`recorder::Recording`] and [`live::LiveTunnel`]; with both features off there is no tap at
//! all, so the relay path is exactly what it is without this module. The hook points are listed
//! in each module's own "How the proxy uses this" paragraph.

pub mod pcapng;
pub mod recorder;
pub mod tap;
#[cfg(test)]
mod test_support;

use std::fmt;

/// One of the four byte streams of a tunnel, named by who sends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// The client's bytes to the proxy: the request head, then WebSocket frames.
    ClientToProxy,
    /// The proxy's bytes to the client: the handshake response, then WebSocket frames.
    ProxyToClient,
    /// The proxy's bytes to the target: the decoded payloads.
    ProxyToTarget,
    /// The target's bytes to the proxy: what becomes the payload of our frames.
    TargetToProxy,
}

impl Flow {
    /// All four, in the order the tables list them.
    pub const ALL: [Flow; 4] = [
        Flow::ClientToProxy,
        Flow::ProxyToClient,
        Flow::ProxyToTarget,
        Flow::TargetToProxy,
    ];

    /// A position in arrays indexed by flow (the order of [`Flow::ALL`]).
    pub fn index(self) -> usize {
        match self {
            Flow::ClientToProxy => 0,
            Flow::ProxyToClient => 1,
            Flow::ProxyToTarget => 2,
            Flow::TargetToProxy => 3,
        }
    }

    /// A name for labels and JSON: `client_to_proxy`, …
    pub fn label(self) -> &'static str {
        match self {
            Flow::ClientToProxy => "client_to_proxy",
            Flow::ProxyToClient => "proxy_to_client",
            Flow::ProxyToTarget => "proxy_to_target",
            Flow::TargetToProxy => "target_to_proxy",
        }
    }

    /// Whether the flow belongs to the client's connection (WebSocket frames) rather than the
    /// target's (raw bytes).
    pub fn is_client_side(self) -> bool {
        matches!(self, Flow::ClientToProxy | Flow::ProxyToClient)
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flow::ClientToProxy => "client→proxy",
            Flow::ProxyToClient => "proxy→client",
            Flow::ProxyToTarget => "proxy→target",
            Flow::TargetToProxy => "target→proxy",
        })
    }
}

/// Formats a wall-clock time as RFC 3339 in UTC with milliseconds, e.g.
/// `2024-06-19T15:22:45.123Z` (HAR's `startedDateTime`, the inspector's times).
pub fn rfc3339_millis(at: std::time::SystemTime) -> String {
    match jiff::Timestamp::try_from(at) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// Seconds since the Unix epoch, with fractions (the inspector's and HAR's frame times).
pub fn unix_seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

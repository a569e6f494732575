//! The UDP part of the benchmark: datagram round trips and datagrams per second one way,
//! through plain UDP, wsproxy and websocat.
//!
//! # The contract measured
//! Through wsproxy, the path `/udp/HOST:PORT` opens a UDP tunnel in which one WebSocket
//! message is exactly one datagram, both ways (issue 14). websocat's
//! `ws-l:ADDR udp:TARGET` mode does the same (one message per datagram, checked when this
//! was written). The client here speaks RFC 6455 binary frames, one `write` per datagram,
//! and reads one whole message per datagram ([`Reader::read_message`](crate::client::Reader::read_message)).
//!
//! # Targets (threads inside wsbench)
//! | target | what it does with a datagram |
//! |---|---|
//! | echo | sends it back to where it came from |
//! | sink | checks it (size and contents) and counts it, with the time of the last one |
//!
//! Every datagram carries its sequence number in its first 8 bytes and the test
//! [`pattern`](crate::targets::expected) after that, so a datagram that arrives cut,
//! joined with another, or corrupted is caught, not just counted.
//!
//! # Loss
//! UDP may drop datagrams, and on loopback it does when a receiver's buffer is full: the
//! one-way test sends as fast as the path takes them. So both tests count: the round-trip
//! test, probes without an answer within [`PROBE_TIMEOUT`]; the one-way test, datagrams
//! sent and datagrams that reached the sink. The rate is what *arrived* per second.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{BIG_BUF, Proto, Tunnel};
use crate::targets::{expected, verify};

/// Size of every datagram of both tests.
pub const DATAGRAM: usize = 64;
/// The largest UDP payload over IPv4 (what the targets' buffers hold).
const MAX_DATAGRAM: usize = 65_507;
/// How long a round-trip probe waits for its answer before it counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes lost in a row that end a round-trip run (the path is not working at all).
const LOST_IN_A_ROW: usize = 3;
/// The one-way test's end: the sink saw nothing new for this long.
const QUIET: Duration = Duration::from_millis(300);
/// How long closing a tunnel waits for the peer's Close (websocat never answers one on a
/// `udp:` peer, so this is bounded and not an error).
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Datagram `seq`: its sequence number (u64 LE), then pattern bytes that depend on it.
pub fn datagram(seq: u64) -> [u8; DATAGRAM] {
    let mut d = [0u8; DATAGRAM];
    d[..8].copy_from_slice(&seq.to_le_bytes());
    d[8..].copy_from_slice(expected(seq * DATAGRAM as u64, DATAGRAM - 8));
    d
}

/// Checks that `got` is exactly datagram `seq` for some `seq`, and returns that number.
fn check_datagram(got: &[u8]) -> io::Result<u64> {
    if got.len() != DATAGRAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a datagram of {} bytes, expected {DATAGRAM}", got.len()),
        ));
    }
    let seq = u64::from_le_bytes(got[..8].try_into().unwrap());
    verify(seq * DATAGRAM as u64, &got[8..])?;
    Ok(seq)
}

/// The sink's counters, shared with the measuring thread.
struct SinkCounts {
    /// Good datagrams so far.
    datagrams: AtomicU64,
    /// Datagrams of the wrong size or contents so far.
    bad: AtomicU64,
    /// When the last datagram arrived, in ns since `epoch`.
    last_ns: AtomicU64,
    epoch: Instant,
}

/// The UDP echo and sink, running as threads.
#[derive(Clone)]
pub struct UdpTargets {
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    counts: Arc<SinkCounts>,
}

impl UdpTargets {
    /// Binds both targets on ephemeral loopback ports and starts their threads.
    pub fn start() -> io::Result<UdpTargets> {
        let echo = UdpSocket::bind("127.0.0.1:0")?;
        let sink = UdpSocket::bind("127.0.0.1:0")?;
        let targets = UdpTargets {
            echo: echo.local_addr()?,
            sink: sink.local_addr()?,
            counts: Arc::new(SinkCounts {
                datagrams: AtomicU64::new(0),
                bad: AtomicU64::new(0),
                last_ns: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        };
        thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    // (An error here is an ICMP report about an earlier reply: carry on.)
                    if let Ok((n, from)) = echo.recv_from(&mut buf) {
                        let _ = echo.send_to(&buf[..n], from);
                    }
                }
            })?;
        let counts = Arc::clone(&targets.counts);
        thread::Builder::new()
            .name("udp-sink".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let Ok(n) = sink.recv(&mut buf) else { continue };
                    let counter = match check_datagram(&buf[..n]) {
                        Ok(_) => &counts.datagrams,
                        Err(_) => &counts.bad,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let now = counts.epoch.elapsed().as_nanos() as u64;
                    counts.last_ns.store(now, Ordering::Relaxed);
                }
            })?;
        Ok(targets)
    }

    /// (good datagrams, bad datagrams) received by the sink so far.
    fn sink_counts(&self) -> (u64, u64) {
        (
            self.counts.datagrams.load(Ordering::Relaxed),
            self.counts.bad.load(Ordering::Relaxed),
        )
    }

    /// Nanoseconds since the sink's epoch (the clock of `last_ns`).
    fn now_ns(&self) -> u64 {
        self.counts.epoch.elapsed().as_nanos() as u64
    }
}

/// Which UDP target a tunnel leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpWhich {
    Echo,
    Sink,
}

/// A column of the UDP tests: how datagrams get to the targets.
pub struct UdpEndpoint {
    /// Column name, shared with the TCP tests: `direct`, `binary` (wsproxy), `websocat`.
    pub name: String,
    pub via: Via,
}

pub enum Via {
    /// Plain UDP to the target: the baseline.
    Direct,
    /// wsproxy at this address: RFC 6455 binary, path `/udp/HOST:PORT`.
    Wsproxy(SocketAddr),
    /// A fixed-target proxy per target (websocat `ws-l:` → `udp:`), path `/`.
    Fixed { echo: SocketAddr, sink: SocketAddr },
}

/// A datagram path: a UDP socket connected to the target, or a WebSocket tunnel.
enum Datagrams {
    Udp(UdpSocket),
    Ws(Box<Tunnel>),
}

impl Datagrams {
    /// Opens a path from `ep` to `which`; `timeout` bounds the handshake and every write.
    fn open(
        ep: &UdpEndpoint,
        targets: &UdpTargets,
        which: UdpWhich,
        timeout: Duration,
    ) -> io::Result<Datagrams> {
        let target = match which {
            UdpWhich::Echo => targets.echo,
            UdpWhich::Sink => targets.sink,
        };
        let (addr, path) = match &ep.via {
            Via::Direct => {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                socket.connect(target)?;
                return Ok(Datagrams::Udp(socket));
            }
            Via::Wsproxy(addr) => (*addr, format!("/udp/{target}")),
            Via::Fixed { echo, sink } => match which {
                UdpWhich::Echo => (*echo, "/".to_string()),
                UdpWhich::Sink => (*sink, "/".to_string()),
            },
        };
        let tunnel = Tunnel::open(addr, &path, Proto::Binary, BIG_BUF, timeout).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening a UDP tunnel to {which:?} ({path}): {e}"),
            )
        })?;
        Ok(Datagrams::Ws(Box::new(tunnel)))
    }

    /// Sends one datagram (one WebSocket message).
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        match self {
            Datagrams::Udp(s) => s.send(datagram).map(drop),
            Datagrams::Ws(t) => t.writer.send(datagram),
        }
    }

    /// How long [`Datagrams::recv`] waits (then a `WouldBlock` or `TimedOut` error). Set
    /// once per path, outside the timed part: it is a system call.
    fn set_read_timeout(&self, wait: Duration) -> io::Result<()> {
        match self {
            Datagrams::Udp(s) => s.set_read_timeout(Some(wait)),
            Datagrams::Ws(t) => t.set_read_timeout(Some(wait)),
        }
    }

    /// Receives one datagram into `buf`.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Datagrams::Udp(s) => s.recv(buf),
            Datagrams::Ws(t) => t.reader.read_message(buf)?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, t.reader.eof_message())
            }),
        }
    }

    /// Ends the tunnel: our Close, then up to [`CLOSE_WAIT`] for the peer's.
    fn close(self) {
        if let Datagrams::Ws(mut t) = self {
            if t.writer.send_close().is_err() || t.set_read_timeout(Some(CLOSE_WAIT)).is_err() {
                return;
            }
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok(Some(_)) = t.reader.read_message(&mut buf) {}
        }
    }
}

/// Is this error a read timeout?
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What one round-trip run found.
pub struct RoundTrips {
    pub p50_us: f64,
    pub p99_us: f64,
    /// Probes that got no answer within [`PROBE_TIMEOUT`].
    pub lost: u64,
}

/// `count` round trips of a 64-byte datagram through the echo (after 500 warm-up ones),
/// one at a time. A probe without an answer within about [`PROBE_TIMEOUT`] counts as lost
/// (a late answer to it is skipped when it comes); [`LOST_IN_A_ROW`] lost in a row end the run
/// with an error, so a path that carries nothing fails quickly instead of hanging.
pub fn round_trips(
    ep: &UdpEndpoint,
    targets: &UdpTargets,
    count: usize,
    timeout: Duration,
) -> io::Result<RoundTrips> {
    let mut path = Datagrams::open(ep, targets, UdpWhich::Echo, timeout)?;
    path.set_read_timeout(PROBE_TIMEOUT)?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut samples = Vec::with_capacity(count);
    let (warmup, mut lost, mut in_a_row) = (500, 0u64, 0);
    for seq in 0..(warmup + count) as u64 {
        let start = Instant::now();
        path.send(&datagram(seq))?;
        let answered = loop {
            match path.recv(&mut buf) {
                Ok(n) if check_datagram(&buf[..n])? == seq => break true,
                // The late answer to an earlier, lost probe.
                Ok(_) if start.elapsed() < PROBE_TIMEOUT => continue,
                Ok(_) => break false,
                Err(e) if timed_out(&e) => break false,
                Err(e) => return Err(e),
            }
        };
        if !answered {
            lost += 1;
            in_a_row += 1;
            if in_a_row == LOST_IN_A_ROW {
                return Err(io::Error::other(format!(
                    "no answer to {LOST_IN_A_ROW} datagrams in a row ({lost} lost of {} sent)",
                    seq + 1
                )));
            }
            continue;
        }
        in_a_row = 0;
        if seq >= warmup as u64 {
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    path.close();
    samples.sort_unstable();
    let pick = |per_mille: usize| {
        samples[(samples.len() * per_mille / 1000).min(samples.len() - 1)] as f64 / 1e3
    };
    Ok(RoundTrips {
        p50_us: pick(500),
        p99_us: pick(990),
        lost,
    })
}

/// What one one-way run found.
pub struct OneWay {
    /// Datagrams that reached the sink, per second from the first send to the last arrival.
    pub per_s: f64,
    pub sent: u64,
    pub received: u64,
}

impl OneWay {
    pub fn lost(&self) -> u64 {
        self.sent - self.received
    }

    pub fn lost_pct(&self) -> f64 {
        100.0 * self.lost() as f64 / self.sent as f64
    }
}

/// Sends `count` 64-byte datagrams to the sink as fast as the path takes them, then waits
/// until the sink has seen them all or nothing new for [`QUIET`]; counts what arrived.
pub fn one_way(
    ep: &UdpEndpoint,
    targets: &UdpTargets,
    count: u64,
    timeout: Duration,
) -> io::Result<OneWay> {
    let mut path = Datagrams::open(ep, targets, UdpWhich::Sink, timeout)?;
    // Datagrams of an earlier run still on their way would be counted in this one.
    let (before, bad_before) = wait_for_quiet(targets, u64::MAX);
    let start_ns = targets.now_ns();
    for seq in 0..count {
        path.send(&datagram(seq)).map_err(|e| {
            let what = match timed_out(&e) {
                true => "timed out (the proxy stopped reading)".to_string(),
                false => e.to_string(),
            };
            io::Error::new(
                e.kind(),
                format!("sending datagram {seq} of {count}: {what}"),
            )
        })?;
    }
    let (after, bad_after) = wait_for_quiet(targets, before + count);
    let last_ns = targets.counts.last_ns.load(Ordering::Relaxed);
    path.close();
    let received = after - before;
    if bad_after > bad_before {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the sink got {} datagrams of the wrong size or contents",
                bad_after - bad_before
            ),
        ));
    }
    if received > count {
        return Err(io::Error::other(format!(
            "{received} datagrams arrived, {count} were sent (duplicates)"
        )));
    }
    if received == 0 {
        return Err(io::Error::other(format!(
            "none of {count} datagrams reached the sink"
        )));
    }
    let secs = last_ns.saturating_sub(start_ns).max(1) as f64 / 1e9;
    Ok(OneWay {
        per_s: received as f64 / secs,
        sent: count,
        received,
    })
}

/// Waits until the sink has counted `target` good datagrams, or saw nothing for [`QUIET`]
/// (at most 10 s); returns its (good, bad) counts.
fn wait_for_quiet(targets: &UdpTargets, target: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = targets.sink_counts();
    let mut since = Instant::now();
    while last.0 < target && since.elapsed() < QUIET && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        let now = targets.sink_counts();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct() -> UdpEndpoint {
        UdpEndpoint {
            name: "direct".into(),
            via: Via::Direct,
        }
    }

    #[test]
    fn datagrams_check_their_own_contents() {
        for seq in [0, 1, 77, u32::MAX as u64 + 5] {
            assert_eq!(check_datagram(&datagram(seq)).unwrap(), seq);
        }
        let mut d = datagram(9);
        d[40] ^= 1;
        assert!(check_datagram(&d).is_err(), "a corrupted byte");
        assert!(
            check_datagram(&datagram(9)[..63]).is_err(),
            "a cut datagram"
        );
        let joined = [datagram(1), datagram(2)].concat();
        assert!(check_datagram(&joined).is_err(), "two datagrams as one");
    }

    #[test]
    fn direct_udp_round_trips_and_one_way_count_everything() {
        let targets = UdpTargets::start().unwrap();
        let timeout = Duration::from_secs(10);
        let rtt = round_trips(&direct(), &targets, 200, timeout).unwrap();
        assert!(rtt.p50_us > 0.0 && rtt.p50_us <= rtt.p99_us);
        // Few enough to fit in the sink's receive buffer: nothing may be lost.
        let one = one_way(&direct(), &targets, 100, timeout).unwrap();
        assert_eq!((one.sent, one.received, one.lost()), (100, 100, 0));
        assert!(one.per_s > 0.0);
        // The sink noticed nothing wrong, and counted every one.
        assert_eq!(targets.sink_counts(), (100, 0));
    }

    #[test]
    fn the_sink_counts_bad_datagrams_apart() {
        let targets = UdpTargets::start().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&[1, 2, 3], targets.sink).unwrap();
        socket.send_to(&datagram(5), targets.sink).unwrap();
        assert_eq!(wait_for_quiet(&targets, u64::MAX), (1, 1));
    }

    #[test]
    fn a_path_that_answers_nothing_fails_quickly() {
        // A "target" that swallows everything: the echo address of targets that are not
        // running, i.e. a bound socket nobody reads.
        let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut targets = UdpTargets::start().unwrap();
        targets.echo = black_hole.local_addr().unwrap();
        let start = Instant::now();
        let err = round_trips(&direct(), &targets, 10, Duration::from_secs(5))
            .err()
            .expect("no answers");
        assert!(
            err.to_string()
                .contains("no answer to 3 datagrams in a row"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(30));
        // The same for one way: nothing arrives, and that is an error, not a zero.
        targets.sink = black_hole.local_addr().unwrap();
        let err = one_way(&direct(), &targets, 100, Duration::from_secs(5))
            .err()
            .expect("nothing arrives");
        assert!(
            err.to_string()
                .contains("none of 100 datagrams reached the sink"),
            "{err}"
        );
    }
}

//! The tunnel: two pumps, one per direction, each on its own OS thread, sharing one
//! frame-atomic writer to the client and one close state.
//!
//! ```text
//!              upload pump (the connection's thread)
//!   client ──► ClientReader ──► decoded bytes ──────────────────────────► target socket
//!   client ◄── ClientWriter ◄── frame queue ◄── FrameEncoder ◄── target socket
//!                  ▲  (crossbeam channel)   download pump (a second thread)
//!                  └── Pongs, Pings, Closes from the upload pump; Close 1001 from shutdown
//! ```
//!
//! Why not two `tungstenite::WebSocket`s over cloned sockets? A WebSocket's reader also
//! writes (it answers Pings and Closes), so two writers could interleave the bytes of two
//! frames, and two state machines would disagree about whether the connection is closing.
//! Here every frame to the client goes through one queue into one [`ClientWriter`]: whole
//! frames, a Pong behind at most the one data frame being written, and the single close state
//! (RFC 6455 §5.5.1); see [`writer`].
//!
//! ## How a tunnel ends (RFC 6455 §7.1, draft-76 §5.3)
//!
//! Three rules hold on every path. Bytes already read from one side are delivered to the
//! other before the Close, also when the other direction failed first. After sending its
//! Close the proxy ends its stream (FIN), then reads and discards until the client's Close,
//! its EOF or `--close-timeout`, and only then closes the socket: closing with unread input
//! would reset the connection, and the client's kernel would throw away our last bytes and
//! the Close. And no write waits for ever: one that makes no progress for the stall limit
//! (`--idle-timeout` when set, else `--stall-timeout`) ends the tunnel with a logged reason.
//!
//! | ending | the client receives | the target receives | who waits, how long |
//! |---|---|---|---|
//! | target EOF | every byte the target sent, Close 1000 `target closed`, FIN | every byte the client sent until its Close (a target that only half-closed still reads them), then FIN | the client: `--close-timeout` to answer |
//! | target half-close | the same as EOF (a FIN is all the proxy sees) | the same | the same |
//! | target reset, or close with unread bytes | every byte read from the target before the reset, Close 1011 `target read failed: …`, FIN | — | the client: `--close-timeout` to answer |
//! | target write error | every byte the target sent, then Close 1011 `target write failed: …`; the client's later data is discarded | everything before the failed write | as above |
//! | client Close | our answering Close (same code), FIN | every byte before the client's Close, then FIN | the target: `--close-timeout` to end after our FIN (its late bytes are discarded) |
//! | client vanishes (EOF, no Close) | whatever the target still sends, then Close 1000 and FIN, for a client that only half-closed | every byte, then FIN | the target: `--close-timeout` to end |
//! | client reset | — | every byte read before the reset, then FIN | as above |
//! | protocol violation | Close 1002/1007/1009 with the reason, FIN | the bytes decoded before the violation, then FIN | the client: `--close-timeout` to close |
//! | idle timeout | Close 1001 `idle timeout …`, FIN | FIN after the client's answer | the client: `--close-timeout` |
//! | stall (a peer stopped reading) | client stalled: nothing more, the socket is shut down; target stalled: what the target sent, then Close 1011 `target stopped reading …` | client stalled: FIN; target stalled: the socket is shut down | the stall limit, once |
//! | heartbeat timeout | Close 1001 `no answer to a heartbeat ping …`, FIN | FIN after the client's answer | the client: `--close-timeout` |
//! | shutdown | Close 1001 `server shutting down`, FIN | every byte the client sent until its answer, then FIN | everyone: `--shutdown-grace`, then every socket is shut down |
//!
//! (hixie-76 has no close codes: its Close is `0xFF 0x00`; hixie-75 has no closing frame at
//! all, so there the FIN is the Close.)
//!
//! Each pump's end is signalled through a channel whose sender it drops when it ends (also
//! when it panics; nothing is ever sent on it): the upload pump's end is the client's answer
//! the download pump waits for,
//! and the download pump's end is what the connection thread waits for (bounded by
//! `--close-timeout`, after which both sockets are shut down, which wakes any blocked read or
//! write). So both threads always end and both sockets are always closed.
//!
//! Timers need no extra thread (see [`clock`]): the upload pump reads the client with a short
//! read timeout and checks the clocks whenever a read times out.
//!
//! Every running tunnel is listed in a registry, so a graceful shutdown can queue a Close
//! 1001 for each one without waiting on any of them ([`close_all`]).
//!
//! Layout: this file starts a tunnel and waits for both pumps; [`pumps`] has the two loops,
//! [`writer`] the frame-atomic writer, [`clock`] the idle and heartbeat timers.

mod clock;
mod pumps;
mod writer;

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use log::{debug, warn};

use crate::framing::{ClientReader, CloseInfo, Controls, FrameEncoder, close_code};
use crate::listener::threads;
use crate::socket::{ClientSink, Readable, SharedSocket, lingering_close};
use clock::Clock;
use pumps::{ClientEnd, Download, pump_client_to_target, pump_target_to_client};
use writer::{ClientWriter, Turn, lock};

/// Everything a tunnel needs, once the handshake is done and the target connected.
pub struct Tunnel {
    pub id: u64,
    /// The client socket (for shutdown; the reader and writer use the same socket).
    pub client: SharedSocket,
    pub reader: Box<dyn ClientReader>,
    pub writer: Box<dyn ClientSink>,
    pub encoder: Box<dyn FrameEncoder>,
    pub controls: Controls,
    /// The target socket (for shutdown; reads and writes go through the two handles below).
    pub target: SharedSocket,
    /// Read by the download pump only.
    pub target_reader: Box<dyn Readable>,
    /// Written by the upload pump only.
    pub target_writer: Box<dyn Write + Send>,
    pub timers: Timers,
}

/// The tunnel's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// How long the side that started closing waits for the other to finish.
    pub close_timeout: Duration,
    /// How long a write to either peer may make no progress before the tunnel ends.
    pub stall_limit: Duration,
    /// Close after this long with no data either way (Close 1001 `idle timeout`).
    pub idle_timeout: Option<Duration>,
    /// Ping a client that has sent nothing for this long; close if it stays silent for two
    /// intervals after a Ping.
    pub heartbeat: Option<Duration>,
}

/// What happened, for the close log line.
#[derive(Debug, Clone)]
pub struct Report {
    /// Bytes delivered from the client to the target.
    pub bytes_up: u64,
    /// Bytes delivered from the target to the client.
    pub bytes_down: u64,
    /// Who closed and why.
    pub ending: String,
}

/// State both pumps share.
struct Shared {
    id: u64,
    controls: Controls,
    client: SharedSocket,
    target: SharedSocket,
    /// Every frame to the client goes through it.
    writer: ClientWriter,
    ending: Mutex<Option<String>>,
    /// Why writing to the target failed: the reason the client's Close will carry, after
    /// the target's last bytes.
    target_failure: Mutex<Option<String>>,
    /// Held by the upload pump while it writes to the target. The kernel reports a reset
    /// once, to the first call that asks: when that is the upload pump's write, the download
    /// pump's read then sees a plain end of stream. So at the target's EOF the download pump
    /// waits for the write under way (and the failure it may record) before it chooses
    /// between "target closed" and the failure.
    target_writes: Mutex<()>,
    close_timeout: Duration,
    stall: Duration,
    /// What the download pump did, set as it ends.
    download: Mutex<Option<Download>>,
    started: Instant,
    /// Milliseconds after `started` of the last data either way (kept only with an idle timeout).
    last_data: Option<AtomicU64>,
}

impl Shared {
    /// Records why the tunnel ends; the first reason wins.
    fn record(&self, why: impl Into<String>) {
        let mut ending = lock(&self.ending);
        if ending.is_none() {
            *ending = Some(why.into());
        }
    }

    fn target_failed(&self, why: String) {
        lock(&self.target_failure).get_or_insert(why);
    }

    /// Why writing to the target failed, once no write is under way (see `target_writes`).
    fn target_failure(&self) -> Option<String> {
        drop(lock(&self.target_writes));
        lock(&self.target_failure).clone()
    }

    /// Notes that data moved (only when an idle timeout is on).
    fn touch(&self) {
        if let Some(last) = &self.last_data {
            last.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    fn idle_for(&self) -> Duration {
        let last = self
            .last_data
            .as_ref()
            .map_or(0, |l| l.load(Ordering::Relaxed));
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// The proxy closes the tunnel (shutdown): Close 1001, queued without waiting.
    fn close_for(&self, reason: &str) {
        let close = CloseInfo {
            code: close_code::GOING_AWAY,
            reason: reason.into(),
        };
        if self.writer.send_close(Some(&close), Turn::NoWait) {
            self.record(format!("proxy closed it: {reason}"));
        }
    }

    /// Our side of the client connection is over: write what is queued (our Close), end our
    /// stream, and read until the client closes too, so that closing the socket does not
    /// reset it: for `--close-timeout` at most, or [`AFTER_HANDSHAKE`] once the closing
    /// handshake is complete.
    fn finish_client(&self, end: ClientEnd) {
        self.writer.finish();
        let linger = match end {
            ClientEnd::Closed => AFTER_HANDSHAKE,
            ClientEnd::Cut | ClientEnd::Gone => self.close_timeout,
            ClientEnd::NoAnswer => return,
        };
        lingering_close(&self.client.0, linger);
    }
}

/// How long the proxy still reads (and discards) what a client sends after the closing
/// handshake is complete, before closing: the client should send nothing more, and the
/// server is to close first (RFC 6455 §7.1.1), but stray bytes must not turn our close into
/// a reset that destroys the Close still on its way to the client.
const AFTER_HANDSHAKE: Duration = Duration::from_millis(100);

/// Every running tunnel, for [`close_all`].
fn registry() -> &'static Mutex<HashMap<u64, Weak<Shared>>> {
    static TUNNELS: OnceLock<Mutex<HashMap<u64, Weak<Shared>>>> = OnceLock::new();
    TUNNELS.get_or_init(Mutex::default)
}

fn running() -> Vec<Arc<Shared>> {
    lock(registry())
        .values()
        .filter_map(Weak::upgrade)
        .collect()
}

/// Set by [`close_all`]: tunnels that start later (their handshake was under way) close at
/// once.
static CLOSING_ALL: OnceLock<String> = OnceLock::new();

/// Queues a Close 1001 with `reason` for every running tunnel (graceful shutdown), and for
/// every tunnel that starts later, without waiting on any: a tunnel whose client is not
/// reading gets the rest of its Close from [`push_all`]. Tunnels then end as usual: the
/// client answers, the target is half-closed after the data in flight. Returns how many
/// tunnels there were.
pub fn close_all(reason: &str) -> usize {
    let _ = CLOSING_ALL.set(reason.into());
    let tunnels = running();
    for shared in &tunnels {
        shared.close_for(reason);
    }
    tunnels.len()
}

/// Writes, without waiting, what the socket takes of every tunnel's queued frames (during a
/// shutdown, for clients that were not reading when [`close_all`] ran).
pub fn push_all() {
    for shared in running() {
        shared.writer.push_now();
    }
}

/// Shuts down both sockets of every running tunnel (the end of a shutdown's grace period).
pub fn shut_down_all() {
    for shared in running() {
        shared.client.shutdown(Shutdown::Both);
        shared.target.shutdown(Shutdown::Both);
    }
}

/// Runs a tunnel until both directions have ended. Runs the upload pump on the calling thread.
pub fn run(tunnel: Tunnel) -> Report {
    let Tunnel {
        id,
        client,
        mut reader,
        writer,
        encoder,
        controls,
        target,
        target_reader,
        target_writer,
        timers,
    } = tunnel;
    // No write waits for ever (the stall limit); see the module doc.
    for socket in [&client, &target] {
        let _ = socket.0.set_write_timeout(Some(timers.stall_limit));
    }
    let shared = Arc::new(Shared {
        id,
        controls,
        client,
        target,
        writer: ClientWriter::new(id, controls, writer, timers.stall_limit),
        ending: Mutex::new(None),
        target_failure: Mutex::new(None),
        target_writes: Mutex::new(()),
        close_timeout: timers.close_timeout,
        stall: timers.stall_limit,
        download: Mutex::new(None),
        started: Instant::now(),
        last_data: timers.idle_timeout.map(|_| AtomicU64::new(0)),
    });
    lock(registry()).insert(id, Arc::downgrade(&shared));
    // After registering, so that a shutdown either finds this tunnel or is seen here.
    if let Some(reason) = CLOSING_ALL.get() {
        shared.close_for(reason);
    }
    let report = relay(
        &shared,
        reader.as_mut(),
        encoder,
        target_reader,
        target_writer,
        timers,
    );
    lock(registry()).remove(&id);
    report
}

/// Starts the download pump, runs the upload pump here, and waits for both to end.
fn relay(
    shared: &Arc<Shared>,
    reader: &mut dyn ClientReader,
    mut encoder: Box<dyn FrameEncoder>,
    mut target_reader: Box<dyn Readable>,
    mut target_writer: Box<dyn Write + Send>,
    timers: Timers,
) -> Report {
    // Each pump's end is a dropped sender (also when it panics): nothing is ever sent, so
    // neither pump waits for the other to take anything. (Zero capacity: the smallest
    // channel, and every idle tunnel holds two.)
    let (upload_running, upload_ended) = crossbeam_channel::bounded::<()>(0);
    let (download_running, download_ended) = crossbeam_channel::bounded::<()>(0);
    let started = {
        let shared = Arc::clone(shared);
        threads::spawn(move || {
            let download = pump_target_to_client(
                &shared,
                encoder.as_mut(),
                target_reader.as_mut(),
                &upload_ended,
            );
            *lock(&shared.download) = Some(download);
            // Let go of the sockets before the end shows, so the tunnel is over by then.
            drop((encoder, target_reader, shared));
            drop(download_running);
        })
    };
    if let Err(e) = started {
        warn!("[#{}] cannot start the download thread: {e}", shared.id);
        shared.record(format!("server out of threads: {e}"));
        let close = CloseInfo {
            code: close_code::TRY_AGAIN_LATER,
            reason: "server overloaded".into(),
        };
        shared.writer.send_close(Some(&close), Turn::Wait);
        shared.finish_client(ClientEnd::Cut);
        return report(shared, 0, 0);
    }

    let mut clock = Clock::new(shared, timers);
    let upload = pump_client_to_target(shared, reader, target_writer.as_mut(), &mut clock);
    drop(upload_running);
    // Nothing more will reach the target: FIN after the last forwarded byte (for TLS
    // targets, the writer's drop sends close_notify first).
    let _ = target_writer.flush();
    drop(target_writer);
    shared.target.shutdown(Shutdown::Write);
    if upload.end != ClientEnd::Gone {
        shared.finish_client(upload.end);
    }
    let download = wait_for_download(shared, &download_ended);
    if !download.target_ended {
        // The target may still be sending: read until its EOF (it has our FIN), so that
        // closing does not reset it before it read what the client sent.
        lingering_close(&shared.target.0, shared.close_timeout);
    }
    if upload.end == ClientEnd::Gone {
        // The download pump delivered what the target sent, and its Close, to a client
        // that may only have half-closed; now our stream ends too.
        shared.finish_client(upload.end);
    }
    report(shared, upload.bytes, download.bytes)
}

/// Waits for the download pump: it ends when the target does, which our FIN asks for. A
/// target still open after `--close-timeout` is cut off, and so is a client that stalls the
/// download pump's write.
fn wait_for_download(shared: &Shared, ended: &crossbeam_channel::Receiver<()>) -> Download {
    if let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(shared.close_timeout) {
        debug!(
            "[#{}] target still open {:?} after the client side ended; closing it",
            shared.id, shared.close_timeout
        );
        shared.target.shutdown(Shutdown::Both);
        shared.client.shutdown(Shutdown::Both);
        let _ = ended.recv();
    }
    // Unset if the pump panicked.
    lock(&shared.download).take().unwrap_or(Download {
        bytes: 0,
        target_ended: false,
    })
}

fn report(shared: &Shared, bytes_up: u64, bytes_down: u64) -> Report {
    Report {
        bytes_up,
        bytes_down,
        ending: lock(&shared.ending)
            .clone()
            .unwrap_or_else(|| "closed".into()),
    }
}

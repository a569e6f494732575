//! The tunnel: two pumps, one per direction, each on its own OS thread, sharing one
//! frame-atomic writer to the client and one close state.
//!
//! ```text
//!              upload pump (the connection's thread)
//!   client ──► ClientReader ──► decoded bytes ──► target socket
//!   client ◄── ClientWriter ◄── frames ◄── FrameEncoder ◄── target socket
//!              download pump (a second thread, see crate::workers)
//! ```
//!
//! Why not two `tungstenite::WebSocket`s over cloned sockets? A WebSocket's reader also
//! writes (it answers Pings and Closes), so two writers could interleave the bytes of two
//! frames, and two state machines would disagree about whether the connection is closing.
//! Here every byte to the client goes through one [`ClientWriter`]: a whole frame per lock,
//! control frames ahead of data frames not yet started, and the single "Close sent" flag
//! (RFC 6455 §5.5.1). Target reads happen outside its lock, so a Pong waits for at most the
//! one frame being written.
//!
//! Closing, without losing bytes (RFC 6455 §7.1, draft-76 §5.3):
//! - **Target ends** (EOF): every frame already read was written, in order; then we send
//!   Close 1000 `target closed` and wait, bounded, for the client's Close.
//! - **Client sends Close**: everything before it was already written to the target; we
//!   answer Close, then half-close the target (FIN after the last byte) and let it finish.
//! - **Either side fails or vanishes**: the other side is closed promptly, with the reason
//!   recorded for the log.
//!
//! Each pump signals when it ends (a [`workers::Outcome`], set even if the pump panics); the
//! other pump waits for it with a timeout and, if it expires, shuts both sockets down, which
//! wakes any blocked read or write. So both threads always end and both sockets are always
//! closed.
//!
//! Timers need no extra thread (see [`clock`]): the upload pump reads the client with a short
//! read timeout and checks the clocks whenever a read times out.
//!
//! Every running tunnel is listed in a registry, so a graceful shutdown can send each one a
//! Close 1001 ([`close_all`]).
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

use log::{debug, warn};

use crate::framing::{ClientReader, CloseInfo, Controls, FrameEncoder, Wire, close_code};
use crate::socket::{Readable, SharedSocket, lingering_close};
use crate::workers::{self, Outcome, SetOnDrop};
use clock::Clock;
use pumps::{pump_client_to_target, pump_target_to_client};
use writer::{ClientWriter, lock};

/// Everything a tunnel needs, once the handshake is done and the target connected.
pub struct Tunnel {
    pub id: u64,
    /// The client socket (for shutdown; the reader and writer use the same socket).
    pub client: SharedSocket,
    pub reader: Box<dyn ClientReader>,
    pub writer: Box<dyn Write + Send>,
    pub encoder: Box<dyn FrameEncoder>,
    pub controls: Controls,
    /// The target socket (for shutdown; reads and writes go through the two handles below).
    pub target: SharedSocket,
    /// Read by the download pump only.
    pub target_reader: Box<dyn Readable>,
    /// Written by the upload pump only.
    pub target_writer: Box<dyn Write + Send>,
    /// How long the side that started closing waits for the other to finish.
    pub close_timeout: Duration,
    pub timers: Timers,
}

/// Optional clocks on a tunnel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
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
    /// Every byte to the client goes through it.
    writer: ClientWriter,
    ending: Mutex<Option<String>>,
    close_timeout: Duration,
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

    /// The closing handshake is complete (both Closes sent): nothing more may go to the
    /// client, so end our side of its TCP connection now (RFC 6455 §7.1.1: the server closes
    /// first) instead of after the target's teardown. Dropping the writer first lets TLS send
    /// its close_notify before the FIN.
    fn finish_client_writes(&self) {
        self.writer.finish();
        self.client.shutdown(Shutdown::Write);
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
}

/// Every running tunnel, for [`close_all`].
fn registry() -> &'static Mutex<HashMap<u64, Weak<Shared>>> {
    static TUNNELS: OnceLock<Mutex<HashMap<u64, Weak<Shared>>>> = OnceLock::new();
    TUNNELS.get_or_init(Mutex::default)
}

/// Sends every running tunnel a Close 1001 with `reason` (graceful shutdown). Tunnels then
/// end as usual: the client answers, the target is half-closed after the data in flight.
pub fn close_all(reason: &str) -> usize {
    let tunnels: Vec<Arc<Shared>> = lock(registry())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for shared in &tunnels {
        shared.record(format!("proxy closed it: {reason}"));
        shared.writer.send_close(Some(CloseInfo {
            code: close_code::GOING_AWAY,
            reason: reason.into(),
        }));
        if shared.controls.wire == Wire::Hixie75 {
            shared.client.shutdown(Shutdown::Both);
        }
    }
    tunnels.len()
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
        close_timeout,
        timers,
    } = tunnel;
    let shared = Arc::new(Shared {
        id,
        controls,
        client,
        target,
        writer: ClientWriter::new(id, controls, writer),
        ending: Mutex::new(None),
        close_timeout,
        started: Instant::now(),
        last_data: timers.idle_timeout.map(|_| AtomicU64::new(0)),
    });
    lock(registry()).insert(id, Arc::downgrade(&shared));
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
    let (id, close_timeout) = (shared.id, shared.close_timeout);
    // Set when the upload pump ends (also if it panics); the download pump may wait for it.
    let upload_ended = Outcome::new();
    let upload_done = SetOnDrop::new(Arc::clone(&upload_ended), ());

    let download = {
        let shared = Arc::clone(shared);
        workers::spawn(move || {
            let bytes = pump_target_to_client(
                &shared,
                encoder.as_mut(),
                target_reader.as_mut(),
                &upload_ended,
            );
            // Let go of the sockets before reporting, so the tunnel is over when we report.
            drop((encoder, target_reader, shared));
            bytes
        })
    };
    let download = match download {
        Ok(handle) => handle,
        Err(e) => {
            warn!("[#{id}] cannot start the download thread: {e}");
            shared.record(format!("server out of threads: {e}"));
            shared.writer.send_close(Some(CloseInfo {
                code: close_code::TRY_AGAIN_LATER,
                reason: "server overloaded".into(),
            }));
            return report(shared, 0, 0);
        }
    };

    let mut clock = Clock::new(shared, timers);
    // The bytes forwarded, and whether the client broke the protocol.
    let (bytes_up, client_broke_protocol) =
        pump_client_to_target(shared, reader, target_writer.as_mut(), &mut clock);
    // Nothing more will reach the target: FIN after the last forwarded byte (for TLS
    // targets, the writer's drop sends close_notify first).
    let _ = target_writer.flush();
    drop(target_writer);
    shared.target.shutdown(Shutdown::Write);
    drop(upload_done);
    if client_broke_protocol {
        // The client may still be sending: read and discard it for a moment, so that
        // closing does not reset the connection and destroy our Close in flight.
        lingering_close(&shared.client.0);
    }
    let bytes_down = match download.join_timeout(close_timeout) {
        Some(bytes) => bytes.unwrap_or(0),
        None => {
            debug!(
                "[#{id}] target still open {close_timeout:?} after the client side ended; closing it"
            );
            shared.target.shutdown(Shutdown::Both);
            shared.client.shutdown(Shutdown::Both);
            download.join().unwrap_or(0)
        }
    };
    report(shared, bytes_up, bytes_down)
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

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
//! Here every byte to the client goes through [`ClientWriter`] under one mutex: a whole frame
//! per lock, so frames never interleave (target reads happen outside the lock). Control frames
//! (Pong, heartbeat Ping) jump the queue: they are first put in a small outbox, and whichever
//! pump takes the lock next writes the outbox before anything else. So a Pong waits for at
//! most the one frame being written, however the threads are scheduled and even if the
//! download pump wins the lock again and again. The writer also holds the single
//! "Close sent" flag (RFC 6455 §5.5.1): after it, nothing more is sent.
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
//! Timers need no extra thread: with `--idle-timeout` or `--heartbeat`, the upload pump reads
//! the client with a short read timeout and checks the clocks whenever a read times out
//! (the readers resume cleanly after a timeout). Heartbeat Pings (RFC 6455 §5.5.2) go through
//! the same writer, so they too wait for at most one frame.
//!
//! Every running tunnel is listed in a registry, so a graceful shutdown can send each one a
//! Close 1001 ([`close_all`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::framing::{
    ClientReader, CloseInfo, Controls, FrameEncoder, Inbound, ReadError, Wire, close_code,
};
use crate::socket::{Readable, SharedSocket, lingering_close};
use crate::target::describe;
use crate::workers::{self, Outcome, SetOnDrop};

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

/// The only way to write to the client.
struct ClientWriter {
    out: Box<dyn Write + Send>,
    close_sent: bool,
}

impl ClientWriter {
    /// Writes the control frames waiting in `outbox` (in the order they were queued), unless
    /// our Close has gone out.
    fn write_outbox(&mut self, outbox: &Mutex<Vec<u8>>) -> io::Result<()> {
        let waiting = std::mem::take(&mut *lock(outbox));
        if waiting.is_empty() || self.close_sent {
            return Ok(());
        }
        self.out.write_all(&waiting)
    }
}

/// Why a data frame was not sent.
enum SendError {
    /// A Close was already sent; no more data may follow (RFC 6455 §5.5.1).
    Closing,
    Io(std::io::Error),
}

/// State both pumps share.
struct Shared {
    id: u64,
    controls: Controls,
    client: SharedSocket,
    target: SharedSocket,
    writer: Mutex<ClientWriter>,
    /// Control frames waiting for the writer; written before the next data frame.
    outbox: Mutex<Vec<u8>>,
    ending: Mutex<Option<String>>,
    close_timeout: Duration,
    started: Instant,
    /// Milliseconds after `started` of the last data either way (kept only with an idle timeout).
    last_data: Option<AtomicU64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Records why the tunnel ends; the first reason wins.
    fn record(&self, why: impl Into<String>) {
        let mut ending = lock(&self.ending);
        if ending.is_none() {
            *ending = Some(why.into());
        }
    }

    fn send_data(&self, frame: &[u8]) -> Result<(), SendError> {
        let mut writer = lock(&self.writer);
        if writer.close_sent {
            return Err(SendError::Closing);
        }
        writer.write_outbox(&self.outbox).map_err(SendError::Io)?;
        writer.out.write_all(frame).map_err(SendError::Io)
    }

    /// Sends a control frame ahead of any data frame not yet started.
    fn send_control(&self, frame: &[u8]) {
        lock(&self.outbox).extend_from_slice(frame);
        // If the download pump takes the lock first, it writes our frame for us.
        if let Err(e) = lock(&self.writer).write_outbox(&self.outbox) {
            debug!("[#{}] control frame not sent: {e}", self.id);
        }
    }

    /// Sends our Close unless one was sent already. Returns whether this call sent it.
    fn send_close(&self, close: Option<CloseInfo>) -> bool {
        let mut writer = lock(&self.writer);
        if writer.close_sent {
            return false;
        }
        // Pongs queued before our Close still go out (after it, nothing may).
        let frame = self.controls.close(close.as_ref());
        if let Err(e) = writer
            .write_outbox(&self.outbox)
            .and_then(|()| writer.out.write_all(&frame))
        {
            debug!("[#{}] close frame not sent: {e}", self.id);
        }
        writer.close_sent = true;
        if let Some(close) = &close {
            debug!("[#{}] proxy→client close {close}", self.id);
        }
        true
    }

    fn close_sent(&self) -> bool {
        lock(&self.writer).close_sent
    }

    /// The closing handshake is complete (both Closes sent): nothing more may go to the
    /// client, so end our side of its TCP connection now (RFC 6455 §7.1.1: the server closes
    /// first) instead of after the target's teardown. Dropping the writer first lets TLS send
    /// its close_notify before the FIN.
    fn finish_client_writes(&self) {
        let mut writer = lock(&self.writer);
        writer.close_sent = true;
        drop(std::mem::replace(&mut writer.out, Box::new(io::sink())));
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
        shared.send_close(Some(CloseInfo {
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
        writer: Mutex::new(ClientWriter {
            out: writer,
            close_sent: false,
        }),
        outbox: Mutex::default(),
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
            shared.send_close(Some(CloseInfo {
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

/// Client → target: decode what the client sends and write it to the target.
fn pump_client_to_target(
    shared: &Shared,
    reader: &mut dyn ClientReader,
    target: &mut dyn Write,
    clock: &mut Clock,
) -> (u64, bool) {
    let mut forwarded = 0u64;
    loop {
        let event = reader.next();
        clock.client_spoke(&event);
        match event {
            Ok(Inbound::Data(bytes)) => {
                if let Err(e) = target.write_all(bytes) {
                    let why = format!("target write failed: {}", describe(&e));
                    shared.record(why.clone());
                    shared.send_close(Some(CloseInfo {
                        code: close_code::INTERNAL_ERROR,
                        reason: why,
                    }));
                    break;
                }
                forwarded += bytes.len() as u64;
                shared.touch();
            }
            Ok(Inbound::Ping(payload)) => shared.send_control(&shared.controls.pong(&payload)),
            Ok(Inbound::Pong) => {}
            Ok(Inbound::Close(close)) => {
                shared.record(match &close {
                    Some(close) => format!("client closed ({close})"),
                    None => "client closed".into(),
                });
                // Answer with the same code (RFC 6455 §5.5.1), unless we started closing.
                shared.send_close(close);
                shared.finish_client_writes();
                break;
            }
            Ok(Inbound::Eof) => {
                shared.record("client disconnected without a closing handshake");
                break;
            }
            Err(ReadError::Violation(violation)) => {
                warn!("[#{}] client broke the protocol: {violation}", shared.id);
                shared.record(format!("client broke the protocol: {violation}"));
                shared.send_close(Some(violation));
                return (forwarded, true);
            }
            Err(ReadError::Io(e)) if is_timeout(&e) => {
                if let Some(expired) = clock.check(shared) {
                    shared.record(expired.reason.clone());
                    shared.send_close(Some(expired));
                    break;
                }
            }
            Err(ReadError::Io(e)) => {
                shared.record(format!("client read failed: {}", describe(&e)));
                break;
            }
        }
    }
    (forwarded, false)
}

/// Target → client: each read from the target becomes one frame to the client.
fn pump_target_to_client(
    shared: &Shared,
    encoder: &mut dyn FrameEncoder,
    target: &mut dyn Readable,
    upload_ended: &Outcome<()>,
) -> u64 {
    let (mut delivered, mut discarded) = (0u64, 0u64);
    let started_closing = loop {
        match encoder.frame_from(target) {
            Ok(Some((frame, raw_len))) => match shared.send_data(frame) {
                Ok(()) => {
                    delivered += raw_len as u64;
                    shared.touch();
                }
                // The client is closing: drain the target until it ends.
                Err(SendError::Closing) => discarded += raw_len as u64,
                Err(SendError::Io(e)) => {
                    shared.record(format!("client write failed: {}", describe(&e)));
                    shared.client.shutdown(Shutdown::Both);
                    break false;
                }
            },
            Ok(None) => {
                if !shared.close_sent() {
                    shared.record("target closed the connection");
                }
                break shared.send_close(Some(CloseInfo {
                    code: close_code::NORMAL,
                    reason: "target closed".into(),
                }));
            }
            Err(_) if shared.close_sent() => break false,
            Err(e) => {
                let why = format!("target read failed: {}", describe(&e));
                shared.record(why.clone());
                break shared.send_close(Some(CloseInfo {
                    code: close_code::INTERNAL_ERROR,
                    reason: why,
                }));
            }
        }
    };
    if discarded > 0 {
        debug!(
            "[#{}] discarded {discarded} bytes the target sent after the client closed",
            shared.id
        );
    }
    if started_closing {
        if shared.controls.wire == Wire::Hixie75 {
            // hixie-75 has no closing handshake: closing the TCP connection is the close.
            shared.client.shutdown(Shutdown::Both);
        } else if upload_ended.wait_timeout(shared.close_timeout).is_none() {
            debug!(
                "[#{}] client did not answer our Close within {:?}",
                shared.id, shared.close_timeout
            );
            shared.client.shutdown(Shutdown::Both);
        }
    }
    delivered
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The idle and heartbeat clocks, kept by the upload pump.
struct Clock {
    timers: Timers,
    /// When the client last sent anything (a frame of any kind).
    client_heard: Instant,
    /// When our unanswered heartbeat Ping went out.
    ping_sent: Option<Instant>,
    pings: u64,
}

impl Clock {
    /// Arms the client socket's read timeout so the pump wakes up to check the clocks.
    fn new(shared: &Shared, timers: Timers) -> Clock {
        let heartbeat = timers
            .heartbeat
            .filter(|_| shared.controls.ping(b"").is_some());
        let timers = Timers {
            heartbeat,
            ..timers
        };
        let shortest = [timers.idle_timeout, timers.heartbeat]
            .into_iter()
            .flatten()
            .min();
        if let Some(shortest) = shortest {
            let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            let _ = shared.client.0.set_read_timeout(Some(tick));
        }
        Clock {
            timers,
            client_heard: Instant::now(),
            ping_sent: None,
            pings: 0,
        }
    }

    /// Any frame from the client proves it is alive.
    fn client_spoke(&mut self, event: &Result<Inbound<'_>, ReadError>) {
        if self.timers.heartbeat.is_some() && event.is_ok() {
            self.client_heard = Instant::now();
            self.ping_sent = None;
        }
    }

    /// Sends a heartbeat if one is due; returns the Close to send if a clock ran out.
    fn check(&mut self, shared: &Shared) -> Option<CloseInfo> {
        if let Some(idle) = self.timers.idle_timeout
            && shared.idle_for() >= idle
        {
            return Some(CloseInfo {
                code: close_code::GOING_AWAY,
                reason: format!("idle timeout ({} s without data)", idle.as_secs_f64()),
            });
        }
        let interval = self.timers.heartbeat?;
        match self.ping_sent {
            Some(sent) if sent.elapsed() >= interval * 2 => Some(CloseInfo {
                code: close_code::GOING_AWAY,
                reason: format!(
                    "no answer to a heartbeat ping within {} s",
                    (interval * 2).as_secs_f64()
                ),
            }),
            None if self.client_heard.elapsed() >= interval => {
                self.pings += 1;
                if let Some(ping) = shared
                    .controls
                    .ping(format!("wsproxy {}", self.pings).as_bytes())
                {
                    debug!(
                        "[#{}] proxy→client heartbeat ping {}",
                        shared.id, self.pings
                    );
                    shared.send_control(&ping);
                }
                self.ping_sent = Some(Instant::now());
                None
            }
            _ => None,
        }
    }
}

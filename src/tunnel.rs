//! The tunnel: two pumps, one per direction, each on its own OS thread, sharing one
//! frame-atomic writer to the client and one close state.
//!
//! ```text
//!              upload pump (the connection's thread)
//!   client ──► ClientReader ──► decoded bytes ──► target socket
//!   client ◄── ClientWriter ◄── frames ◄── FrameEncoder ◄── target socket
//!              download pump (a second thread)
//! ```
//!
//! Why not two `tungstenite::WebSocket`s over cloned sockets? A WebSocket's reader also
//! writes (it answers Pings and Closes), so two writers could interleave the bytes of two
//! frames, and two state machines would disagree about whether the connection is closing.
//! Here every byte to the client goes through [`ClientWriter`] under one mutex: a whole frame
//! per lock, so frames never interleave, and a Pong waits for at most the one frame being
//! written (target reads happen outside the lock). The writer also holds the single
//! "Close sent" flag (RFC 6455 §5.5.1): after it, data frames are refused.
//!
//! Closing, without losing bytes (RFC 6455 §7.1, draft-76 §5.3):
//! - **Target ends** (EOF): every frame already read was written, in order; then we send
//!   Close 1000 `target closed` and wait, bounded, for the client's Close.
//! - **Client sends Close**: everything before it was already written to the target; we
//!   answer Close, then half-close the target (FIN after the last byte) and let it finish.
//! - **Either side fails or vanishes**: the other side is closed promptly, with the reason
//!   recorded for the log.
//!
//! Each pump drops a channel sender when it ends; the other pump waits on it with a timeout
//! and, if it expires, shuts both sockets down, which wakes any blocked read or write. So both
//! threads always end and both sockets are always closed.

use std::io::Write;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use log::{debug, warn};

use crate::framing::{
    ClientReader, CloseInfo, Controls, FrameEncoder, Inbound, ReadError, Wire, close_code,
};
use crate::socket::SharedSocket;
use crate::target::describe;

/// Stack size of the download pump's thread: it only reads, frames and writes.
const DOWNLOAD_STACK: usize = 128 * 1024;

/// Everything a tunnel needs, once the handshake is done and the target connected.
pub struct Tunnel {
    pub id: u64,
    /// The client socket (for shutdown; the reader and writer use the same socket).
    pub client: SharedSocket,
    pub reader: Box<dyn ClientReader>,
    pub writer: Box<dyn Write + Send>,
    pub encoder: Box<dyn FrameEncoder>,
    pub controls: Controls,
    pub target: SharedSocket,
    /// How long the side that started closing waits for the other to finish.
    pub close_timeout: Duration,
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
    ending: Mutex<Option<String>>,
    close_timeout: Duration,
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
        writer.out.write_all(frame).map_err(SendError::Io)
    }

    fn send_control(&self, frame: &[u8]) {
        let mut writer = lock(&self.writer);
        if !writer.close_sent
            && let Err(e) = writer.out.write_all(frame)
        {
            debug!("[#{}] control frame not sent: {e}", self.id);
        }
    }

    /// Sends our Close unless one was sent already. Returns whether this call sent it.
    fn send_close(&self, close: Option<CloseInfo>) -> bool {
        let mut writer = lock(&self.writer);
        if writer.close_sent {
            return false;
        }
        writer.close_sent = true;
        let frame = self.controls.close(close.as_ref());
        if let Err(e) = writer.out.write_all(&frame) {
            debug!("[#{}] close frame not sent: {e}", self.id);
        }
        if let Some(close) = &close {
            debug!("[#{}] proxy→client close {close}", self.id);
        }
        true
    }

    fn close_sent(&self) -> bool {
        lock(&self.writer).close_sent
    }
}

/// Runs a tunnel until both directions have ended. Runs the upload pump on the calling thread.
pub fn run(tunnel: Tunnel) -> Report {
    let Tunnel {
        id,
        client,
        mut reader,
        writer,
        mut encoder,
        controls,
        target,
        close_timeout,
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
        ending: Mutex::new(None),
        close_timeout,
    });
    let (upload_done, upload_ended) = bounded::<()>(0);
    let (download_done, download_ended) = bounded::<()>(0);

    let download = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("tunnel-{id}-down"))
            .stack_size(DOWNLOAD_STACK)
            .spawn(move || {
                let _done = download_done;
                pump_target_to_client(&shared, encoder.as_mut(), &upload_ended)
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
            return report(&shared, 0, 0);
        }
    };

    let bytes_up = pump_client_to_target(&shared, reader.as_mut());
    // Nothing more will reach the target: FIN after the last forwarded byte.
    shared.target.shutdown(Shutdown::Write);
    drop(upload_done);
    if download_ended.recv_timeout(close_timeout) == Err(RecvTimeoutError::Timeout) {
        debug!(
            "[#{id}] target still open {close_timeout:?} after the client side ended; closing it"
        );
        shared.target.shutdown(Shutdown::Both);
        shared.client.shutdown(Shutdown::Both);
    }
    let bytes_down = download.join().unwrap_or(0);
    report(&shared, bytes_up, bytes_down)
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
fn pump_client_to_target(shared: &Shared, reader: &mut dyn ClientReader) -> u64 {
    let mut target = shared.target.clone();
    let mut forwarded = 0u64;
    loop {
        match reader.next() {
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
                break;
            }
            Err(ReadError::Io(e)) => {
                shared.record(format!("client read failed: {}", describe(&e)));
                break;
            }
        }
    }
    forwarded
}

/// Target → client: each read from the target becomes one frame to the client.
fn pump_target_to_client(
    shared: &Shared,
    encoder: &mut dyn FrameEncoder,
    upload_ended: &Receiver<()>,
) -> u64 {
    let mut target = shared.target.clone();
    let (mut delivered, mut discarded) = (0u64, 0u64);
    let started_closing = loop {
        match encoder.frame_from(&mut target) {
            Ok(Some((frame, raw_len))) => match shared.send_data(frame) {
                Ok(()) => delivered += raw_len as u64,
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
        } else if upload_ended.recv_timeout(shared.close_timeout) == Err(RecvTimeoutError::Timeout)
        {
            debug!(
                "[#{}] client did not answer our Close within {:?}",
                shared.id, shared.close_timeout
            );
            shared.client.shutdown(Shutdown::Both);
        }
    }
    delivered
}

//! The two pumps: upload (client → target) and download (target → client), one per thread.
//!
//! Each is a loop over one kind of event, and each ends its direction its own way (RFC 6455
//! §7.1, draft-76 §5.3; the whole table of endings is in the parent module):
//! - the **upload pump** reads client events ([`ClientReader`]) and writes decoded bytes to the
//!   target. A client Close is answered; once any Close of ours is queued it keeps reading
//!   (still forwarding data, for a target that only half-closed) until the client's Close,
//!   the client's EOF or `--close-timeout`. A failed write to the target does not end it: it
//!   goes on reading and discarding, so the client is never reset, while the download pump
//!   delivers what the target sent. A read timeout is the moment to check the [`Clock`].
//! - the **download pump** turns each target read into one frame ([`FrameEncoder`]) and sends
//!   it to the [`ClientWriter`](super::writer::ClientWriter), waiting until it is written. The
//!   target's end (EOF or error) becomes our Close, after every frame already read; then it
//!   waits, bounded, for the client's answer (the upload pump's end).

use std::io::{self, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, warn};

use super::Shared;
use super::clock::Clock;
use super::writer::{SendError, Turn};
use crate::framing::{ClientReader, CloseInfo, FrameEncoder, Inbound, ReadError, close_code};
use crate::socket::Readable;
use crate::target::describe;

/// How the client's side ended, as the upload pump saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientEnd {
    /// The client's Close arrived (its own, answered, or its answer to ours): the closing
    /// handshake is complete, so end our stream and close (RFC 6455 §7.1.1: the server
    /// closes TCP first), after discarding any stray bytes still arriving.
    Closed,
    /// The client broke the protocol (our Close is queued): end our stream after the Close
    /// and linger until the client's EOF or `--close-timeout`.
    Cut,
    /// The client did not answer our Close within `--close-timeout` (it may not even have
    /// read it): the wait is over, the socket is shut down.
    NoAnswer,
    /// The client's TCP stream ended or failed without a Close: the download pump may still
    /// be delivering to a client that only half-closed.
    Gone,
}

/// What the upload pump did.
pub(super) struct Upload {
    /// Bytes delivered to the target.
    pub bytes: u64,
    pub end: ClientEnd,
}

/// The upload pump's state between events.
struct Uploader<'a> {
    shared: &'a Shared,
    target: &'a mut dyn Write,
    forwarded: u64,
    /// Bytes from the client dropped because the target could not take them.
    discarded: u64,
    /// Writing to the target failed: what the client sends is discarded from now on.
    target_failed: bool,
    /// Once a Close of ours is queued: when we stop waiting for the client's answer.
    deadline: Option<Instant>,
}

/// Client → target: decode what the client sends and write it to the target.
pub(super) fn pump_client_to_target(
    shared: &Shared,
    reader: &mut dyn ClientReader,
    target: &mut dyn Write,
    clock: &mut Clock,
) -> Upload {
    let mut up = Uploader {
        shared,
        target,
        forwarded: 0,
        discarded: 0,
        target_failed: false,
        deadline: None,
    };
    let end = loop {
        up.watch_for_our_close();
        let event = reader.next();
        clock.client_spoke(&event);
        let end = match event {
            Ok(Inbound::Data(bytes)) => {
                up.forward(bytes);
                None
            }
            Ok(Inbound::Ping(payload)) => up.control(shared.controls.pong(&payload)),
            Ok(Inbound::Pong) => None,
            Ok(Inbound::Close(close)) => Some(up.client_closed(close)),
            Ok(Inbound::Eof) => {
                shared.record(if shared.writer.closing() {
                    "client closed TCP without answering our Close"
                } else {
                    "client disconnected without a closing handshake"
                });
                Some(ClientEnd::Gone)
            }
            Err(ReadError::Violation(violation)) => {
                warn!("[#{}] client broke the protocol: {violation}", shared.id);
                shared.record(format!("client broke the protocol: {violation}"));
                shared.writer.send_close(Some(&violation), Turn::Try);
                Some(ClientEnd::Cut)
            }
            Err(ReadError::Io(e)) if is_timeout(&e) => up.tick(clock),
            Err(ReadError::Io(e)) => {
                shared.record(format!("client read failed: {}", describe(&e)));
                Some(ClientEnd::Gone)
            }
        };
        if let Some(end) = end {
            break end;
        }
    };
    if up.discarded > 0 {
        debug!(
            "[#{}] discarded {} bytes from the client after the target failed",
            shared.id, up.discarded
        );
    }
    Upload {
        bytes: up.forwarded,
        end,
    }
}

impl Uploader<'_> {
    /// Once a Close of ours is queued (by either pump or the shutdown), the client has
    /// `--close-timeout` to answer: reads get a timeout that ends the wait.
    fn watch_for_our_close(&mut self) {
        if self.deadline.is_none() && self.shared.writer.closing() {
            let timeout = self.shared.close_timeout;
            self.deadline = Some(Instant::now() + timeout);
            let _ = self.shared.client.0.set_read_timeout(Some(timeout));
        }
    }

    /// Data for the target; discarded once writing to it failed.
    fn forward(&mut self, bytes: &[u8]) {
        if self.target_failed {
            self.discarded += bytes.len() as u64;
            return;
        }
        let _writing = super::writer::lock(&self.shared.target_writes);
        match self.target.write_all(bytes) {
            Ok(()) => {
                self.forwarded += bytes.len() as u64;
                self.shared.touch();
            }
            Err(e) => {
                // The client's bytes cannot be delivered. Stop forwarding and shut the target
                // down (a target that stalled would otherwise never end), but keep reading the
                // client: the download pump still delivers what the target sent, then Close.
                let why = target_write_error(&e, self.shared.stall);
                self.shared.record(why.clone());
                self.shared.target_failed(why);
                self.target_failed = true;
                self.shared.target.shutdown(Shutdown::Both);
            }
        }
    }

    /// Sends a control frame; ends the pump if writing to the client has failed.
    fn control(&self, frame: Vec<u8>) -> Option<ClientEnd> {
        match self.shared.writer.send_control(frame) {
            Err(SendError::Failed(why)) => Some(self.client_write_failed(why)),
            _ => None,
        }
    }

    /// The client's Close: the answer to ours, or its own, answered with the same code
    /// (RFC 6455 §5.5.1) unless we closed first.
    fn client_closed(&self, close: Option<CloseInfo>) -> ClientEnd {
        self.shared.record(match &close {
            Some(close) => format!("client closed ({close})"),
            None => "client closed".into(),
        });
        self.shared.writer.send_close(close.as_ref(), Turn::Try);
        ClientEnd::Closed
    }

    /// A read timed out: the client's time to answer our Close may be up, or a clock due.
    fn tick(&mut self, clock: &mut Clock) -> Option<ClientEnd> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                debug!(
                    "[#{}] client did not answer our Close within {:?}",
                    self.shared.id, self.shared.close_timeout
                );
                self.shared
                    .record("client did not answer our Close in time");
                self.shared.client.shutdown(Shutdown::Both);
                return Some(ClientEnd::NoAnswer);
            }
            let _ = self.shared.client.0.set_read_timeout(Some(left));
            return None;
        }
        if let Some(expired) = clock.check(self.shared) {
            self.shared.record(expired.reason.clone());
            self.shared.writer.send_close(Some(&expired), Turn::Try);
        }
        match self.shared.writer.failure() {
            Err(SendError::Failed(why)) => Some(self.client_write_failed(why)),
            _ => None,
        }
    }

    /// Writing to the client failed or stalled: the client side is over.
    fn client_write_failed(&self, why: String) -> ClientEnd {
        self.shared.record(why);
        self.shared.client.shutdown(Shutdown::Both);
        ClientEnd::Gone
    }
}

/// The reason a write to the target failed, for the log and the client's Close.
fn target_write_error(e: &io::Error, stall: Duration) -> String {
    if is_timeout(e) {
        format!(
            "target stopped reading: no write progress for {} s (the stall limit)",
            stall.as_secs_f64()
        )
    } else {
        format!("target write failed: {}", describe(e))
    }
}

/// What the download pump did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Download {
    /// Bytes delivered to the client.
    pub bytes: u64,
    /// It read the target to its end (EOF or an error): nothing is left unread there.
    pub target_ended: bool,
}

/// Target → client: each read from the target becomes one frame to the client.
pub(super) fn pump_target_to_client(
    shared: &Shared,
    encoder: &mut dyn FrameEncoder,
    target: &mut dyn Readable,
    upload_ended: &Receiver<()>,
) -> Download {
    let (mut delivered, mut discarded) = (0u64, 0u64);
    let mut target_ended = true;
    let queued_close = loop {
        match encoder.frame_from(target) {
            Ok(Some((frame, raw_len))) => match shared.writer.send_data(frame) {
                Ok(written) => {
                    delivered += raw_len as u64;
                    shared.touch();
                    if let Some(buffer) = written {
                        encoder.recycle(buffer);
                    }
                }
                // We are closing: drain the target until it ends.
                Err(SendError::Closing) => discarded += raw_len as u64,
                Err(SendError::Failed(why)) => {
                    shared.record(why);
                    // Wakes the upload pump, which ends the tunnel.
                    shared.client.shutdown(Shutdown::Both);
                    target_ended = false;
                    break false;
                }
            },
            Ok(None) => break close_after_target(shared, None),
            Err(_) if shared.writer.closing() => break false,
            Err(e) => break close_after_target(shared, Some(&e)),
        }
    };
    if discarded > 0 {
        debug!(
            "[#{}] discarded {discarded} bytes the target sent after our Close",
            shared.id
        );
    }
    if queued_close {
        // The client has --close-timeout to answer (the upload pump ends when it does); a
        // client that never reads again is cut off then.
        if let Err(RecvTimeoutError::Timeout) = upload_ended.recv_timeout(shared.close_timeout) {
            debug!(
                "[#{}] client did not answer our Close within {:?}",
                shared.id, shared.close_timeout
            );
            shared.record("client did not answer our Close in time");
            shared.client.shutdown(Shutdown::Both);
        }
    }
    Download {
        bytes: delivered,
        target_ended,
    }
}

/// The target ended (EOF, or a read error): our Close follows every frame already read.
/// 1000 for a clean end; 1011 with the reason if the target failed either way. Waits until
/// the Close is written; returns whether this pump queued it.
fn close_after_target(shared: &Shared, error: Option<&io::Error>) -> bool {
    let close = match (shared.target_failure(), error) {
        // The upload pump could not write to the target: that is what went wrong.
        (Some(why), _) => CloseInfo {
            code: close_code::INTERNAL_ERROR,
            reason: why,
        },
        (None, Some(e)) => {
            let why = format!("target read failed: {}", describe(e));
            shared.record(why.clone());
            CloseInfo {
                code: close_code::INTERNAL_ERROR,
                reason: why,
            }
        }
        (None, None) => {
            shared.record("target closed the connection");
            CloseInfo {
                code: close_code::NORMAL,
                reason: "target closed".into(),
            }
        }
    };
    shared.writer.send_close(Some(&close), Turn::Wait)
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

//! The two pumps: upload (client → target) and download (target → client), one per thread.
//!
//! Each is a loop over one kind of event, and each ends the tunnel its own way (RFC 6455
//! §7.1, draft-76 §5.3; the closing rules are listed in the parent module):
//! - the **upload pump** reads client events ([`ClientReader`]) and writes decoded bytes to the
//!   target; a client Close is answered and ends the client side; a read timeout is the moment
//!   to check the [`Clock`];
//! - the **download pump** turns each target read into one frame ([`FrameEncoder`]) and hands
//!   it to the [`ClientWriter`](super::writer::ClientWriter); the target's EOF becomes our
//!   Close 1000, after every frame already read.

use std::io::{self, Write};
use std::net::Shutdown;

use log::{debug, warn};

use super::Shared;
use super::clock::Clock;
use super::writer::SendError;
use crate::framing::{ClientReader, CloseInfo, FrameEncoder, Inbound, ReadError, Wire, close_code};
use crate::socket::Readable;
use crate::target::describe;
use crate::workers::Outcome;

/// Client → target: decode what the client sends and write it to the target.
pub(super) fn pump_client_to_target(
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
                    shared.writer.send_close(Some(CloseInfo {
                        code: close_code::INTERNAL_ERROR,
                        reason: why,
                    }));
                    break;
                }
                forwarded += bytes.len() as u64;
                shared.touch();
            }
            Ok(Inbound::Ping(payload)) => {
                shared.writer.send_control(&shared.controls.pong(&payload))
            }
            Ok(Inbound::Pong) => {}
            Ok(Inbound::Close(close)) => {
                shared.record(match &close {
                    Some(close) => format!("client closed ({close})"),
                    None => "client closed".into(),
                });
                // Answer with the same code (RFC 6455 §5.5.1), unless we started closing.
                shared.writer.send_close(close);
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
                shared.writer.send_close(Some(violation));
                return (forwarded, true);
            }
            Err(ReadError::Io(e)) if is_timeout(&e) => {
                if let Some(expired) = clock.check(shared) {
                    shared.record(expired.reason.clone());
                    shared.writer.send_close(Some(expired));
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
pub(super) fn pump_target_to_client(
    shared: &Shared,
    encoder: &mut dyn FrameEncoder,
    target: &mut dyn Readable,
    upload_ended: &Outcome<()>,
) -> u64 {
    let (mut delivered, mut discarded) = (0u64, 0u64);
    let started_closing = loop {
        match encoder.frame_from(target) {
            Ok(Some((frame, raw_len))) => match shared.writer.send_data(frame) {
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
                if !shared.writer.close_sent() {
                    shared.record("target closed the connection");
                }
                break shared.writer.send_close(Some(CloseInfo {
                    code: close_code::NORMAL,
                    reason: "target closed".into(),
                }));
            }
            Err(_) if shared.writer.close_sent() => break false,
            Err(e) => {
                let why = format!("target read failed: {}", describe(&e));
                shared.record(why.clone());
                break shared.writer.send_close(Some(CloseInfo {
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

//! Framing: how bytes travel once the handshake is done.
//!
//! Two wire formats sit behind one small interface, so the tunnel does not care which one it
//! is pumping:
//!
//! - [`rfc6455`]: RFC 6455 §5 frames (also hybi-07/08): masked client frames, binary or text
//!   data frames, fragmentation, Ping/Pong/Close control frames. Header parsing and formatting
//!   use `tungstenite`'s frame codec; we own the read loop so payloads stream straight from
//!   the socket to the target without extra copies.
//! - [`hixie`]: draft-hixie-75/76 frames: `0x00 <UTF-8 text> 0xFF`, Base64 data, and
//!   hixie-76's `0xFF 0x00` closing handshake.
//!
//! Reading: a [`ClientReader`] turns what the client sends into [`Inbound`] events, with
//! payloads already unmasked and Base64-decoded. Writing: a [`FrameEncoder`] turns one read
//! from the target into exactly one frame, built in a pooled buffer that it hands over; [`Controls`] builds the
//! few control frames (close, pong, ping) either thread may need to send.

pub mod base64_stream;
pub mod hixie;
pub mod mask;
pub mod rfc6455;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::io;

use crate::buffers::Filled;
use crate::socket::Readable;

/// What the data frames we send to the client carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Raw bytes in binary frames.
    Binary,
    /// Base64 (RFC 4648 §4) in text frames.
    Base64,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Binary => "binary",
            Encoding::Base64 => "Base64 text",
        })
    }
}

/// The wire format of a connection, which decides how control frames look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// hixie-75: no closing handshake at all.
    Hixie75,
    /// hixie-76: `0xFF 0x00` closes.
    Hixie76,
    /// RFC 6455 and hybi-07/08.
    Rfc6455,
}

/// A close code and reason (RFC 6455 §5.5.1, §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.reason)
        }
    }
}

/// Something the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Payload bytes for the target, decoded. Possibly only part of a message: payloads are
    /// streamed as they arrive, so a 10 MiB frame never sits in memory.
    Data(&'a [u8]),
    /// A Ping with its payload: answer it with a Pong.
    Ping(Vec<u8>),
    /// A Pong (the answer to a heartbeat Ping).
    Pong,
    /// The client started (or answered) the closing handshake.
    Close(Option<CloseInfo>),
    /// The TCP connection ended without a closing handshake.
    Eof,
}

/// Why reading from the client failed.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed (or a read timeout fired: `WouldBlock`/`TimedOut`, which is resumable).
    Io(io::Error),
    /// The client broke the protocol: close with this code and reason.
    Violation(CloseInfo),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Builds a protocol violation with a close code (RFC 6455 §7.4.1).
pub fn violation(code: u16, reason: impl Into<String>) -> ReadError {
    ReadError::Violation(CloseInfo {
        code,
        reason: reason.into(),
    })
}

/// Close codes we send (RFC 6455 §7.4.1, IANA registry).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest single frame (hixie: the longest frame) we accept.
    pub max_frame: u64,
    /// The largest message (all fragments of one message together).
    pub max_message: u64,
}

impl Default for Limits {
    /// tungstenite's defaults: 16 MiB frames, 64 MiB messages.
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_message: 64 << 20,
        }
    }
}

/// Reads what the client sends, one event at a time.
pub trait ClientReader: Send {
    /// Blocks until the next event. `Inbound::Data` borrows the reader's buffer until the
    /// next call. Errors of kind `WouldBlock`/`TimedOut` (a read timeout) leave the reader
    /// intact, so the caller may check its timers and call again.
    fn next(&mut self) -> Result<Inbound<'_>, ReadError>;
}

/// Wraps what the target sends into frames for the client.
pub trait FrameEncoder: Send {
    /// Reads once from the target (a large read) and returns one complete frame carrying
    /// exactly what arrived, plus the number of target bytes in it. `None` at end of stream.
    /// The frame is the pool buffer it was built in, moved out (no copy), so it can travel to
    /// the client's writer on another thread.
    fn frame_from(&mut self, target: &mut dyn Readable) -> io::Result<Option<(Filled, usize)>>;

    /// Takes back a frame's buffer once the frame is written, to build the next frame in it.
    fn recycle(&mut self, written: Filled);
}

/// Builds control frames for a connection's wire format.
#[derive(Debug, Clone, Copy)]
pub struct Controls {
    pub wire: Wire,
}

impl Controls {
    /// The frame that closes the connection (empty for hixie-75, which has none).
    pub fn close(&self, close: Option<&CloseInfo>) -> Vec<u8> {
        match self.wire {
            Wire::Hixie75 => Vec::new(),
            Wire::Hixie76 => vec![0xFF, 0x00],
            Wire::Rfc6455 => rfc6455::close_frame(close),
        }
    }

    /// The Pong answering a Ping (RFC 6455 §5.5.3); hixie has no pings.
    pub fn pong(&self, payload: &[u8]) -> Vec<u8> {
        rfc6455::control_frame(tungstenite::protocol::frame::coding::Control::Pong, payload)
    }

    /// A heartbeat Ping, if the wire format has pings.
    pub fn ping(&self, payload: &[u8]) -> Option<Vec<u8>> {
        (self.wire == Wire::Rfc6455).then(|| {
            rfc6455::control_frame(tungstenite::protocol::frame::coding::Control::Ping, payload)
        })
    }
}

/// A short hex + ASCII preview of the first bytes of a payload, for `-d` frame lines.
pub fn preview(bytes: &[u8]) -> String {
    const SHOWN: usize = 16;
    let shown = &bytes[..bytes.len().min(SHOWN)];
    let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
    let ascii: String = shown
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let more = if bytes.len() > SHOWN { " …" } else { "" };
    format!("{}{more} |{ascii}|", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_shows_hex_and_ascii() {
        assert_eq!(preview(b"GET /\r\n"), "47 45 54 20 2f 0d 0a |GET /..|");
        assert!(preview(&[b'a'; 40]).contains(" … |aaaaaaaaaaaaaaaa|"));
    }

    #[test]
    fn hixie76_closes_with_ff00_and_hixie75_with_nothing() {
        assert_eq!(
            Controls {
                wire: Wire::Hixie76
            }
            .close(None),
            vec![0xFF, 0x00]
        );
        assert!(
            Controls {
                wire: Wire::Hixie75
            }
            .close(None)
            .is_empty()
        );
        assert!(
            Controls {
                wire: Wire::Hixie76
            }
            .ping(b"x")
            .is_none()
        );
    }
}

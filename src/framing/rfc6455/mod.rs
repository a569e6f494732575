//! RFC 6455 framing (RFC 6455 §5; hybi-07/08 use the same wire format).
//!
//! A frame is a 2–14 byte header (FIN, RSV1–3, opcode, MASK bit, 7/16/64-bit length, and for
//! client frames a 4-byte masking key, §5.2) followed by the payload. `tungstenite`'s
//! `FrameHeader` parses and formats headers; this module owns the loop around it:
//!
//! - [`Rfc6455Reader`] reads the client's frames through one reusable buffer, in large reads.
//!   Payloads are unmasked (§5.3) and handed on as they arrive, so a 16 MiB frame costs no
//!   more memory than a small one; the payloads of all the frames one read brought are
//!   packed together while unmasking and handed on as one piece (one write to the target).
//!   It enforces what a server must: client frames masked (§5.1), no RSV bits without an
//!   extension (§5.2), control frames short and unfragmented (§5.5), continuation frames only
//!   inside a message (§5.4), close codes valid and reasons UTF-8 (§7.4), and the frame and
//!   message size limits (close 1009).
//!   Binary frames carry raw bytes; text frames carry Base64, decoded on the fly.
//! - [`Rfc6455Encoder`] turns each read from the target into one unmasked server frame,
//!   reading straight into the frame buffer after room for the header, so a relayed byte is
//!   copied once and a frame goes out in one write.
//!
//! Layout: `reader.rs` holds [`Rfc6455Reader`] and the frame and message state it tracks;
//! `encoder.rs` holds [`Rfc6455Encoder`]; this file builds the server's control frames
//! ([`control_frame`], [`close_frame`]) and holds [`read_some`], the read helper both halves
//! (and [`super::hixie`]) use. `test_support.rs` builds client frames for the unit tests.

use std::io::{self, Read};

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, OpCode};

use super::CloseInfo;

mod encoder;
mod reader;
#[cfg(test)]
mod test_support;

pub use encoder::{Rfc6455Encoder, base64_chunk};
pub use reader::Rfc6455Reader;

/// A server control frame (unmasked), e.g. a Pong echoing a Ping's payload.
pub fn control_frame(control: Control, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        opcode: OpCode::Control(control),
        ..FrameHeader::default()
    };
    let mut frame = Vec::with_capacity(2 + payload.len());
    header
        .format(payload.len() as u64, &mut frame)
        .expect("writing to a Vec cannot fail");
    frame.extend_from_slice(payload);
    frame
}

/// A Close frame with an optional code and reason (the reason is cut to fit 125 bytes).
pub fn close_frame(close: Option<&CloseInfo>) -> Vec<u8> {
    let mut payload = Vec::new();
    if let Some(close) = close {
        payload.extend_from_slice(&close.code.to_be_bytes());
        let mut cut = close.reason.len().min(123);
        while !close.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.extend_from_slice(&close.reason.as_bytes()[..cut]);
    }
    control_frame(Control::Close, &payload)
}

/// One read, retried on `Interrupted`.
pub fn read_some(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match source.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let long = CloseInfo {
            code: 1011,
            reason: "é".repeat(100),
        };
        let frame = close_frame(Some(&long));
        assert!(frame.len() <= 127);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}

//! Writing the server's data frames (RFC 6455 §5.2, §5.6).
//!
//! [`Rfc6455Encoder`] turns each read from the target into one unmasked frame (a server
//! never masks, §5.1): binary frames carry the bytes as they are, text frames carry them
//! Base64-encoded (§5.6: text must be UTF-8, and Base64 is). It reads straight into the
//! frame buffer after [`HEADER_ROOM`] bytes, then writes the header (§5.2) just before the
//! payload, so a relayed byte is copied once and a frame goes out in one write. The frame
//! leaves in that buffer ([`Filled`]), so handing it to the client's writer copies nothing.

use std::io;

use base64::Engine;
use log::{debug, log_enabled};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::read_some;
use crate::buffers::{self, Buffer, Filled, Pace};
use crate::framing::base64_stream::BASE64;
use crate::framing::{Encoding, FrameEncoder, preview};
use crate::socket::Readable;

/// The longest header of a server frame (no mask): 2 bytes + a 64-bit length.
const HEADER_ROOM: usize = 10;
const _: () = assert!(HEADER_ROOM <= buffers::ROOM);
/// Target bytes per Base64 frame, for a buffer of `payload` bytes: they encode to exactly
/// `payload` characters.
pub const fn base64_chunk(payload: usize) -> usize {
    payload / 4 * 3
}

/// Builds server data frames from target reads.
pub struct Rfc6455Encoder {
    id: u64,
    encoding: Encoding,
    /// Header room followed by the payload.
    frame: Buffer,
    /// Raw target bytes waiting to be Base64-encoded (Base64 mode only).
    raw: Buffer,
    /// How target reads have been going (when to give buffers back, when to use large ones).
    pace: Pace,
}

impl Rfc6455Encoder {
    pub fn new(id: u64, encoding: Encoding) -> Self {
        Rfc6455Encoder {
            id,
            encoding,
            frame: Buffer::default(),
            raw: Buffer::default(),
            pace: Pace::default(),
        }
    }
}

impl FrameEncoder for Rfc6455Encoder {
    fn frame_from(&mut self, target: &mut dyn Readable) -> io::Result<Option<(Filled, usize)>> {
        self.pace
            .before_read(target, [&mut self.frame, &mut self.raw])?;
        let payload = self.frame.payload();
        let frame = self.frame.get();
        let (opcode, raw_len, payload_len) = match self.encoding {
            Encoding::Binary => {
                let n = read_some(target, &mut frame[HEADER_ROOM..HEADER_ROOM + payload])?;
                self.pace.record(n, payload);
                (Data::Binary, n, n)
            }
            Encoding::Base64 => {
                let asked = base64_chunk(payload);
                let raw = &mut self.raw.get()[..asked];
                let n = read_some(target, raw)?;
                self.pace.record(n, asked);
                let encoded = BASE64
                    .encode_slice(&raw[..n], &mut frame[HEADER_ROOM..])
                    .expect("the frame buffer holds a whole encoded chunk");
                (Data::Text, n, encoded)
            }
        };
        if raw_len == 0 {
            return Ok(None);
        }
        let header = FrameHeader {
            opcode: OpCode::Data(opcode),
            ..FrameHeader::default()
        };
        let start = HEADER_ROOM - header.len(payload_len as u64);
        header
            .format(payload_len as u64, &mut &mut frame[start..HEADER_ROOM])
            .expect("the header fits its room");
        if log_enabled!(log::Level::Debug) {
            let kind = if opcode == Data::Text {
                "text"
            } else {
                "binary"
            };
            debug!(
                "[#{}] proxy→client {kind} len={payload_len} {} ({raw_len} target bytes)",
                self.id,
                preview(&frame[HEADER_ROOM..HEADER_ROOM + payload_len])
            );
        }
        let frame = self.frame.take_filled(start..HEADER_ROOM + payload_len);
        Ok(Some((frame, raw_len)))
    }

    fn recycle(&mut self, written: Filled) {
        self.frame.restore(written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_sends_each_read_as_one_frame() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut source = &data[..];
        let mut encoder = Rfc6455Encoder::new(1, Encoding::Binary);
        let (frame, raw) = encoder.frame_from(&mut source).unwrap().unwrap();
        let frame = &*frame;
        assert_eq!(raw, buffers::SMALL);
        assert_eq!(&frame[..2], &[0x82, 127]);
        assert_eq!(&frame[10..], &data[..buffers::SMALL]);
        let mut base64 = Rfc6455Encoder::new(1, Encoding::Base64);
        let mut small = &b"hi"[..];
        let (frame, raw) = base64.frame_from(&mut small).unwrap().unwrap();
        assert_eq!((&*frame, raw), (&b"\x81\x04aGk="[..], 2));
        assert!(base64.frame_from(&mut small).unwrap().is_none());
    }
}

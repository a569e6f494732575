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

use std::io::{self, Cursor, Read};

use base64::Engine;
use log::{debug, log_enabled};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::base64_stream::{BASE64, Base64Stream, max_decoded_len};
use super::mask::unmask_to;
use super::{
    ClientReader, CloseInfo, Encoding, FrameEncoder, Inbound, Limits, ReadError, close_code,
    preview, violation,
};
use crate::buffers::{self, Buffer, Pace};
use crate::socket::Readable;

/// The longest header of a server frame (no mask): 2 bytes + a 64-bit length.
const HEADER_ROOM: usize = 10;
const _: () = assert!(HEADER_ROOM <= buffers::ROOM);
/// Target bytes per Base64 frame, for a buffer of `payload` bytes: they encode to exactly
/// `payload` characters.
pub const fn base64_chunk(payload: usize) -> usize {
    payload / 4 * 3
}

/// The frame being read.
struct FrameInProgress {
    opcode: OpCode,
    is_final: bool,
    mask: [u8; 4],
    length: u64,
    remaining: u64,
    /// Decoded bytes this frame produced (for the `-d` line).
    decoded: u64,
    /// The first payload bytes (only kept under `-d`).
    preview: Vec<u8>,
}

/// The data message that frames are adding to.
struct MessageInProgress {
    is_text: bool,
    received: u64,
    base64: Base64Stream,
}

/// What one step of the read loop produced (payload bytes are added to
/// [`Rfc6455Reader::gathered`] instead).
enum Step {
    Event(Inbound<'static>),
    /// The buffer is used up.
    NeedMore,
    /// The next payload cannot join the bytes gathered so far: hand those on first.
    Flush,
    Again,
}

/// The payload that one `next()` call hands on. Consecutive frames in the buffer are
/// gathered into one piece, so the target gets one write for many frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gathered {
    Nothing,
    /// Unmasked binary payload packed together at `buf[start..end]`: each frame's payload
    /// is moved back over the headers before it as it is unmasked.
    Raw {
        start: usize,
        end: usize,
    },
    /// Decoded Base64 at `decoded[..n]`.
    Decoded(usize),
}

impl Gathered {
    fn is_empty(self) -> bool {
        match self {
            Gathered::Nothing => true,
            Gathered::Raw { start, end } => start == end,
            Gathered::Decoded(n) => n == 0,
        }
    }
}

/// Reads RFC 6455 frames from the client.
pub struct Rfc6455Reader<R> {
    id: u64,
    stream: R,
    /// Bytes read from the client; `buf[pos..end]` is not consumed yet.
    buf: Buffer,
    pos: usize,
    end: usize,
    /// How reads have been going (when to give buffers back, when to use large ones).
    pace: Pace,
    frame: Option<FrameInProgress>,
    message: Option<MessageInProgress>,
    control: Vec<u8>,
    /// Base64-decoded payload bytes, for text frames.
    decoded: Buffer,
    gathered: Gathered,
    /// An event or error that came after gathered data: the next `next()` returns it.
    held_back: Option<Result<Inbound<'static>, ReadError>>,
    limits: Limits,
}

impl<R: Readable> Rfc6455Reader<R> {
    /// `leftover` holds bytes that arrived with the handshake (the client's first frames).
    pub fn new(id: u64, stream: R, leftover: &[u8], limits: Limits) -> Self {
        let mut buf = Buffer::default();
        if !leftover.is_empty() {
            buf.get()[..leftover.len()].copy_from_slice(leftover);
        }
        Rfc6455Reader {
            id,
            stream,
            buf,
            pos: 0,
            end: leftover.len(),
            pace: Pace::default(),
            frame: None,
            message: None,
            control: Vec::new(),
            decoded: Buffer::default(),
            gathered: Gathered::Nothing,
            held_back: None,
            limits,
        }
    }

    /// Reads more bytes, keeping unconsumed ones. Returns false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            // Both buffers are empty: idle, they go back to the pool (see crate::buffers),
            // and this is the moment to pick their size.
            self.pace
                .before_read(&mut self.stream, [&mut self.buf, &mut self.decoded])?;
        } else {
            // What is left is a partial frame header (payload is always consumed as it
            // arrives): move it to the start, into a buffer of the size the pace asks for.
            // (Frames rarely line up with reads, so waiting for an empty buffer to change
            // size could wait forever.)
            let bulk = self.pace.bulk();
            if bulk != (self.buf.payload() == buffers::LARGE) && self.end - self.pos <= 64 {
                let rest = self.buf.get()[self.pos..self.end].to_vec();
                self.buf.set_large(bulk);
                self.decoded.set_large(bulk);
                self.buf.get()[..rest.len()].copy_from_slice(&rest);
            } else {
                self.buf.get().copy_within(self.pos..self.end, 0);
            }
            self.end -= self.pos;
            self.pos = 0;
        }
        let buf = self.buf.get();
        let room = buf.len() - self.end;
        let n = read_some(&mut self.stream, &mut buf[self.end..])?;
        self.pace.record(n, room);
        self.end += n;
        Ok(n > 0)
    }

    fn step(&mut self) -> Result<Step, ReadError> {
        if self.frame.is_none() {
            return self.start_frame();
        }
        if self.pos == self.end {
            return Ok(Step::NeedMore);
        }
        let frame = self.frame.as_mut().expect("a frame is in progress");
        let n = frame.remaining.min((self.end - self.pos) as u64) as usize;
        let range = self.pos..self.pos + n;
        let offset = frame.length - frame.remaining;
        let is_text = self.message.as_ref().is_some_and(|m| m.is_text);
        // Where the unmasked bytes go: binary payload right after the payload gathered so
        // far; anything else stays in place.
        if self.gathered.is_empty() {
            // (Base64 characters carried to the next group can leave it empty.)
            self.gathered = Gathered::Nothing;
        }
        let to = match (frame.opcode, is_text, self.gathered) {
            (OpCode::Control(_), ..) => range.start,
            (OpCode::Data(_), false, Gathered::Nothing) => range.start,
            (OpCode::Data(_), false, Gathered::Raw { end, .. }) => end,
            (OpCode::Data(_), true, Gathered::Nothing) => range.start,
            (OpCode::Data(_), true, Gathered::Decoded(n))
                if self.decoded.get().len() - n >= max_decoded_len(range.len()) =>
            {
                range.start
            }
            _ => return Ok(Step::Flush),
        };
        let buf = self.buf.get();
        unmask_to(buf, range.clone(), to, frame.mask, offset);
        let unmasked = to..to + n;
        frame.remaining -= n as u64;
        self.pos += n;
        if frame.preview.len() < 16 && log_enabled!(log::Level::Debug) {
            let take = n.min(16 - frame.preview.len());
            frame.preview.extend_from_slice(&buf[to..to + take]);
        }
        let frame_done = frame.remaining == 0;
        match frame.opcode {
            OpCode::Control(_) => {
                self.control.extend_from_slice(&buf[unmasked]);
                if frame_done {
                    return self.finish_control().map(Step::Event);
                }
                Ok(Step::Again)
            }
            OpCode::Data(_) => {
                let message = self.message.as_mut().expect("a message is in progress");
                if !message.is_text {
                    frame.decoded += n as u64;
                    self.gathered = match self.gathered {
                        Gathered::Raw { start, .. } => Gathered::Raw { start, end: to + n },
                        _ => Gathered::Raw {
                            start: to,
                            end: to + n,
                        },
                    };
                    if frame_done {
                        self.finish_data_frame();
                    }
                    return Ok(Step::Again);
                }
                let before = match self.gathered {
                    Gathered::Decoded(n) => n,
                    _ => 0,
                };
                let decoded = &mut self.decoded.get()[before..];
                let mut produced = message
                    .base64
                    .feed(&buf[unmasked], decoded)
                    .map_err(|e| violation(close_code::INVALID_DATA, e))?;
                if frame_done && frame.is_final {
                    produced += message
                        .base64
                        .finish(&mut decoded[produced..])
                        .map_err(|e| violation(close_code::INVALID_DATA, e))?;
                }
                frame.decoded += produced as u64;
                self.gathered = Gathered::Decoded(before + produced);
                if frame_done {
                    self.finish_data_frame();
                }
                Ok(Step::Again)
            }
        }
    }

    /// Parses and checks the next frame header.
    fn start_frame(&mut self) -> Result<Step, ReadError> {
        let mut cursor = Cursor::new(&self.buf.get()[self.pos..self.end]);
        let parsed = FrameHeader::parse(&mut cursor)
            .map_err(|e| violation(close_code::PROTOCOL_ERROR, format!("bad frame header: {e}")))?;
        let Some((header, length)) = parsed else {
            return Ok(Step::NeedMore);
        };
        self.pos += cursor.position() as usize;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "reserved bits set, but no extension was negotiated",
            ));
        }
        let Some(mask) = header.mask else {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "client frames must be masked (RFC 6455 §5.1)",
            ));
        };
        match header.opcode {
            OpCode::Control(_) => {
                if !header.is_final {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "fragmented control frame",
                    ));
                }
                if length > 125 {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        format!("control frame of {length} bytes (the limit is 125)"),
                    ));
                }
                self.control.clear();
            }
            OpCode::Data(data) => {
                if length > i64::MAX as u64 {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "64-bit payload length with its most significant bit set (RFC 6455 §5.2)",
                    ));
                }
                if length > self.limits.max_frame {
                    return Err(violation(
                        close_code::TOO_BIG,
                        format!(
                            "frame of {length} bytes exceeds the limit of {}",
                            self.limits.max_frame
                        ),
                    ));
                }
                match (data, &mut self.message) {
                    (Data::Continue, None) => {
                        return Err(violation(
                            close_code::PROTOCOL_ERROR,
                            "continuation frame without a message to continue",
                        ));
                    }
                    (Data::Continue, Some(_)) => {}
                    (_, Some(_)) => {
                        return Err(violation(
                            close_code::PROTOCOL_ERROR,
                            "new message started before the previous one finished",
                        ));
                    }
                    (data, None) => {
                        self.message = Some(MessageInProgress {
                            is_text: data == Data::Text,
                            received: 0,
                            base64: Base64Stream::default(),
                        });
                    }
                }
                let message = self.message.as_mut().expect("just set");
                message.received += length;
                if message.received > self.limits.max_message {
                    return Err(violation(
                        close_code::TOO_BIG,
                        format!(
                            "message exceeds the limit of {} bytes",
                            self.limits.max_message
                        ),
                    ));
                }
            }
        }
        self.frame = Some(FrameInProgress {
            opcode: header.opcode,
            is_final: header.is_final,
            mask,
            length,
            remaining: length,
            decoded: 0,
            preview: Vec::new(),
        });
        if length > 0 {
            return Ok(Step::Again);
        }
        // An empty frame is complete already (an empty message is data, not a close).
        match header.opcode {
            OpCode::Control(_) => self.finish_control().map(Step::Event),
            OpCode::Data(_) => {
                let message = self.message.as_mut().expect("a message is in progress");
                if message.is_text && header.is_final {
                    let mut tail = [0u8; 8];
                    let produced = message
                        .base64
                        .finish(&mut tail)
                        .map_err(|e| violation(close_code::INVALID_DATA, e))?;
                    if produced > 0 {
                        // The message's last characters: they follow decoded bytes of the
                        // same message (if any were gathered), never raw ones.
                        let before = match self.gathered {
                            Gathered::Decoded(n) => n,
                            _ => 0,
                        };
                        self.decoded.get()[before..before + produced]
                            .copy_from_slice(&tail[..produced]);
                        self.gathered = Gathered::Decoded(before + produced);
                    }
                }
                self.finish_data_frame();
                Ok(Step::Again)
            }
        }
    }

    fn finish_data_frame(&mut self) {
        let frame = self.frame.take().expect("a frame is in progress");
        self.log_frame(&frame);
        if frame.is_final {
            self.message = None;
        }
    }

    fn finish_control(&mut self) -> Result<Inbound<'static>, ReadError> {
        let frame = self.frame.take().expect("a frame is in progress");
        self.log_frame(&frame);
        let payload = std::mem::take(&mut self.control);
        match frame.opcode {
            OpCode::Control(Control::Ping) => Ok(Inbound::Ping(payload)),
            OpCode::Control(Control::Pong) => Ok(Inbound::Pong),
            _ => parse_close(&payload).map(Inbound::Close),
        }
    }

    fn log_frame(&self, frame: &FrameInProgress) {
        if !log_enabled!(log::Level::Debug) {
            return;
        }
        let kind = match frame.opcode {
            OpCode::Data(Data::Text) => "text",
            OpCode::Data(Data::Binary) => "binary",
            OpCode::Data(Data::Continue) => "continuation",
            OpCode::Control(Control::Ping) => "ping",
            OpCode::Control(Control::Pong) => "pong",
            OpCode::Control(Control::Close) => "close",
            _ => "reserved",
        };
        let is_text = self.message.as_ref().is_some_and(|m| m.is_text);
        let decoded = if matches!(frame.opcode, OpCode::Data(_)) && is_text {
            format!(" → {} bytes decoded", frame.decoded)
        } else {
            String::new()
        };
        debug!(
            "[#{}] client→proxy {kind}{} len={} {}{decoded}",
            self.id,
            if frame.is_final {
                ""
            } else {
                " (more fragments)"
            },
            frame.length,
            preview(&frame.preview)
        );
    }
}

impl<R: Readable> ClientReader for Rfc6455Reader<R> {
    /// Returns the payload of as many buffered frames as can be gathered into one piece, or
    /// the next event. Anything that comes after gathered data (an event, a protocol
    /// violation) waits for the next call, so the data is delivered first.
    fn next(&mut self) -> Result<Inbound<'_>, ReadError> {
        if let Some(held_back) = self.held_back.take() {
            return held_back;
        }
        self.gathered = Gathered::Nothing;
        let have_data = |gathered: Gathered| !gathered.is_empty();
        loop {
            let step = match self.step() {
                Ok(step) => step,
                Err(e) if have_data(self.gathered) => {
                    self.held_back = Some(Err(e));
                    break;
                }
                Err(e) => return Err(e),
            };
            match step {
                Step::Again => {}
                Step::Flush => break,
                Step::Event(event) if have_data(self.gathered) => {
                    self.held_back = Some(Ok(event));
                    break;
                }
                Step::Event(event) => return Ok(event),
                Step::NeedMore if have_data(self.gathered) => break,
                Step::NeedMore => {
                    // Nothing worth handing on (empty frames gather nothing): start afresh.
                    self.gathered = Gathered::Nothing;
                    if !self.fill()? {
                        return Ok(Inbound::Eof);
                    }
                }
            }
        }
        Ok(Inbound::Data(match self.gathered {
            Gathered::Raw { start, end } => &self.buf.held()[start..end],
            Gathered::Decoded(n) => &self.decoded.held()[..n],
            Gathered::Nothing => &[],
        }))
    }
}

/// Parses a Close frame's payload: an optional 2-byte code and a UTF-8 reason (§5.5.1).
fn parse_close(payload: &[u8]) -> Result<Option<CloseInfo>, ReadError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(violation(
            close_code::PROTOCOL_ERROR,
            "close frame with a 1-byte payload",
        )),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() {
                return Err(violation(
                    close_code::PROTOCOL_ERROR,
                    format!("invalid close code {code}"),
                ));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| violation(close_code::INVALID_DATA, "close reason is not UTF-8"))?;
            Ok(Some(CloseInfo {
                code,
                reason: reason.to_string(),
            }))
        }
    }
}

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
    fn frame_from(&mut self, target: &mut dyn Readable) -> io::Result<Option<(&[u8], usize)>> {
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
        let frame = &frame[start..HEADER_ROOM + payload_len];
        if log_enabled!(log::Level::Debug) {
            let kind = if opcode == Data::Text {
                "text"
            } else {
                "binary"
            };
            debug!(
                "[#{}] proxy→client {kind} len={payload_len} {} ({raw_len} target bytes)",
                self.id,
                preview(&frame[HEADER_ROOM - start..])
            );
        }
        Ok(Some((frame, raw_len)))
    }
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

    /// A client frame as a browser would send it.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// Delivers bytes `step` at a time, to exercise every split point.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Readable for Trickle {}

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Reads everything, returning the data forwarded and the other events.
    fn read_all(wire: Vec<u8>, step: usize) -> (Vec<u8>, Vec<String>) {
        let source = Trickle {
            data: wire,
            at: 0,
            step,
        };
        let mut reader = Rfc6455Reader::new(1, source, &[], Limits::default());
        let (mut data, mut events) = (Vec::new(), Vec::new());
        loop {
            match reader.next() {
                Ok(Inbound::Data(d)) => data.extend_from_slice(d),
                Ok(Inbound::Eof) => break,
                Ok(other) => events.push(format!("{other:?}")),
                Err(ReadError::Violation(v)) => {
                    events.push(format!("violation {v}"));
                    break;
                }
                Err(ReadError::Io(e)) => panic!("{e}"),
            }
        }
        (data, events)
    }

    #[test]
    fn binary_and_base64_text_frames_at_every_split() {
        let mut wire = client_frame(0x2, true, b"raw bytes");
        wire.extend(client_frame(0x1, false, b"aGVs"));
        wire.extend(client_frame(0x9, true, b"ping!"));
        wire.extend(client_frame(0x0, true, b"bG8="));
        wire.extend(client_frame(0x2, true, b""));
        wire.extend(client_frame(0x8, true, b"\x03\xe8bye"));
        for step in 1..=wire.len() {
            let (data, events) = read_all(wire.clone(), step);
            assert_eq!(data, b"raw byteshello", "step {step}");
            assert_eq!(
                events,
                vec![
                    "Ping([112, 105, 110, 103, 33])".to_string(),
                    "Close(Some(CloseInfo { code: 1000, reason: \"bye\" }))".to_string()
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn frames_read_together_are_handed_on_as_one_piece() {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..5u8 {
            let payload: Vec<u8> = (0..1000u32).map(|j| (j as u8) ^ i).collect();
            wire.extend(client_frame(
                if i == 0 { 0x2 } else { 0x0 },
                i == 4,
                &payload,
            ));
            expected.extend(payload);
        }
        wire.extend(client_frame(0x9, true, b"ping"));
        wire.extend(client_frame(0x2, true, b"after"));
        wire.extend([0x82, 0x01, b'x']); // unmasked: a violation
        wire.extend(client_frame(0x2, true, b"never"));
        let source = Trickle {
            data: wire,
            at: 0,
            step: usize::MAX,
        };
        let mut reader = Rfc6455Reader::new(1, source, &[], Limits::default());
        // One read brought everything: five frames' payloads come as one piece, the
        // headers between them squeezed out ...
        match reader.next() {
            Ok(Inbound::Data(data)) => assert_eq!(data, &expected[..]),
            other => panic!("{other:?}"),
        }
        // ... then the Ping that followed them, and the data after it ...
        assert!(matches!(reader.next(), Ok(Inbound::Ping(p)) if p == b"ping"));
        assert!(matches!(reader.next(), Ok(Inbound::Data(b"after"))));
        // ... and the violation only after everything before it was delivered.
        assert!(matches!(reader.next(), Err(ReadError::Violation(v)) if v.code == 1002));
    }

    #[test]
    fn large_frames_stream_through() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let (data, _) = read_all(client_frame(0x2, true, &payload), 70_000);
        assert_eq!(data, payload);
    }

    #[test]
    fn protocol_violations_get_their_close_codes() {
        let unmasked = vec![0x82, 0x01, b'x'];
        assert!(read_all(unmasked, 100).1[0].contains("violation 1002"));
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(2u64 << 30).to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4]);
        assert!(read_all(huge, 100).1[0].contains("violation 1009"));
        assert!(
            read_all(client_frame(0x1, true, b"not base64!"), 100).1[0].contains("violation 1007")
        );
        assert!(read_all(client_frame(0x0, true, b"x"), 100).1[0].contains("violation 1002"));
        assert!(read_all(client_frame(0x9, false, b"x"), 100).1[0].contains("violation 1002"));
        assert!(read_all(client_frame(0x8, true, b"\x03"), 100).1[0].contains("violation 1002"));
        assert!(
            read_all(client_frame(0x8, true, b"\x03\xed"), 100).1[0].contains("violation 1002")
        );
        let mut two_starts = client_frame(0x2, false, b"a");
        two_starts.extend(client_frame(0x2, true, b"b"));
        assert!(read_all(two_starts, 100).1[0].contains("violation 1002"));
        let rsv = vec![0xC2, 0x80, 0, 0, 0, 0];
        assert!(read_all(rsv, 100).1[0].contains("violation 1002"));
    }

    #[test]
    fn encoder_sends_each_read_as_one_frame() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut source = &data[..];
        let mut encoder = Rfc6455Encoder::new(1, Encoding::Binary);
        let (frame, raw) = encoder.frame_from(&mut source).unwrap().unwrap();
        assert_eq!(raw, buffers::SMALL);
        assert_eq!(&frame[..2], &[0x82, 127]);
        assert_eq!(&frame[10..], &data[..buffers::SMALL]);
        let mut base64 = Rfc6455Encoder::new(1, Encoding::Base64);
        let mut small = &b"hi"[..];
        let (frame, raw) = base64.frame_from(&mut small).unwrap().unwrap();
        assert_eq!((frame, raw), (&b"\x81\x04aGk="[..], 2));
        assert!(base64.frame_from(&mut small).unwrap().is_none());
    }

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

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), step in 1usize..50) {
            let source = Trickle { data: wire, at: 0, step };
            let mut reader = Rfc6455Reader::new(1, source, &[], Limits::default());
            for _ in 0..1000 {
                match reader.next() {
                    Ok(Inbound::Eof) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

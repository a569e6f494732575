//! Reading the client's frames (RFC 6455 §5.1–§5.5, §7.4).
//!
//! [`Rfc6455Reader`] reads through one reusable buffer, in large reads. `tungstenite`'s
//! `FrameHeader` parses each header; the reader checks it (masked, §5.1; no RSV bits, §5.2;
//! control frames short and unfragmented, §5.5; continuations only inside a message, §5.4;
//! size limits), then unmasks the payload (§5.3) as it arrives. Binary payloads of
//! consecutive frames are packed together while unmasking ([`Gathered`]); text payloads are
//! Base64-decoded on the fly. Close payloads are checked by [`parse_close`] (§5.5.1, §7.4).

use std::io::{self, Cursor};

use log::{debug, log_enabled};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::read_some;
use crate::buffers::{self, Buffer, Pace};
use crate::framing::base64_stream::{Base64Stream, max_decoded_len};
use crate::framing::mask::unmask_to;
use crate::framing::{
    ClientReader, CloseInfo, Inbound, Limits, ReadError, close_code, preview, violation,
};
use crate::socket::Readable;

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

/// The most frames one message may have. Empty frames add nothing to a message's size, so
/// without this an endless message of empty continuation frames would never reach any cap;
/// 65,536 frames still let a message of the default 64 MiB come in frames of 1 KiB.
pub const MAX_FRAMES_PER_MESSAGE: u32 = 1 << 16;

/// The data message that frames are adding to.
struct MessageInProgress {
    is_text: bool,
    received: u64,
    /// Frames of this message so far.
    frames: u32,
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
                let ends_message = frame_done && frame.is_final;
                let (produced, failure) = match message.base64.feed(&buf[unmasked], decoded) {
                    Ok(n) if ends_message => match message.base64.finish(&mut decoded[n..]) {
                        Ok(tail) => (n + tail, None),
                        Err(e) => (n, Some(e.why)),
                    },
                    Ok(n) => (n, None),
                    // What was decoded before the error is valid: it is handed on first.
                    Err(e) => (e.decoded, Some(e.why)),
                };
                frame.decoded += produced as u64;
                self.gathered = Gathered::Decoded(before + produced);
                if let Some(why) = failure {
                    return Err(self.invalid_base64(why));
                }
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
                            frames: 0,
                            base64: Base64Stream::default(),
                        });
                    }
                }
                let message = self.message.as_mut().expect("just set");
                message.frames += 1;
                if message.frames > MAX_FRAMES_PER_MESSAGE {
                    return Err(violation(
                        close_code::TOO_BIG,
                        format!("message of more than {MAX_FRAMES_PER_MESSAGE} frames"),
                    ));
                }
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
                    let produced = match message.base64.finish(&mut tail) {
                        Ok(produced) => produced,
                        Err(e) => return Err(self.invalid_base64(e.why)),
                    };
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

    /// The frame being read carried invalid Base64: log it like every other frame, then
    /// close with 1007 (RFC 6455 §7.4.1, "data inconsistent with the type of the message").
    fn invalid_base64(&mut self, why: String) -> ReadError {
        if let Some(frame) = self.frame.take() {
            self.log_frame(&frame, Some(&why));
        }
        violation(close_code::INVALID_DATA, why)
    }

    fn finish_data_frame(&mut self) {
        let frame = self.frame.take().expect("a frame is in progress");
        self.log_frame(&frame, None);
        if frame.is_final {
            self.message = None;
        }
    }

    fn finish_control(&mut self) -> Result<Inbound<'static>, ReadError> {
        let frame = self.frame.take().expect("a frame is in progress");
        self.log_frame(&frame, None);
        let payload = std::mem::take(&mut self.control);
        match frame.opcode {
            OpCode::Control(Control::Ping) => Ok(Inbound::Ping(payload)),
            OpCode::Control(Control::Pong) => Ok(Inbound::Pong),
            _ => parse_close(&payload).map(Inbound::Close),
        }
    }

    /// The `-d` line of a frame; `failure` says why it ended the connection, if it did.
    fn log_frame(&self, frame: &FrameInProgress, failure: Option<&str>) {
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
        let decoded = match failure {
            Some(why) => format!(" → {why}"),
            None if matches!(frame.opcode, OpCode::Data(_)) && is_text => {
                format!(" → {} bytes decoded", frame.decoded)
            }
            None => String::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::rfc6455::test_support::{client_frame, read_all};
    use crate::framing::test_support::Trickle;

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
        let source = Trickle::new(wire, usize::MAX);
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
    fn base64_whitespace_is_ignored_across_fragments_and_errors_name_the_message_offset() {
        let mut wire = client_frame(0x1, false, b"aGVs\n");
        wire.extend(client_frame(0x0, false, b" bG"));
        wire.extend(client_frame(0x0, true, b"8=\r\n"));
        wire.extend(client_frame(0x1, true, b"IHdvcmxk\n"));
        // A bad byte at offset 8 of a message whose frames split it 4 + 6.
        wire.extend(client_frame(0x1, false, b"aGVs"));
        wire.extend(client_frame(0x0, true, b"bG8g*A"));
        for step in 1..=wire.len() {
            let (data, events) = read_all(wire.clone(), step);
            assert_eq!(data, b"hello worldhello ", "step {step}");
            assert!(
                events[0].contains("violation 1007") && events[0].contains("offset 8:"),
                "step {step}: {events:?}"
            );
        }
    }

    #[test]
    fn a_message_of_too_many_frames_is_closed_with_1009() {
        let mut wire = client_frame(0x2, false, b"");
        for _ in 0..MAX_FRAMES_PER_MESSAGE {
            wire.extend(client_frame(0x0, false, b""));
        }
        let (data, events) = read_all(wire, 1 << 20);
        assert!(data.is_empty());
        assert!(
            events[0].contains("violation 1009") && events[0].contains("frames"),
            "{events:?}"
        );
        // Up to the limit, empty frames are fine, and so are many short messages.
        let mut wire = Vec::new();
        for _ in 0..3 {
            wire.extend(client_frame(0x2, false, b"a"));
            for _ in 0..MAX_FRAMES_PER_MESSAGE - 2 {
                wire.extend(client_frame(0x0, false, b""));
            }
            wire.extend(client_frame(0x0, true, b"b"));
        }
        let (data, events) = read_all(wire, 1 << 20);
        assert_eq!(data, b"ababab");
        assert!(events.is_empty(), "{events:?}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), step in 1usize..50) {
            let source = Trickle::new(wire, step);
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

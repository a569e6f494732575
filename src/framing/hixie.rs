//! draft-hixie-75/76 framing (draft-hixie-thewebsocketprotocol-76 §4.2 and §5.3; draft-75
//! frames the same way but has no closing handshake).
//!
//! Reading, byte by byte in the draft's terms but from a large buffer in ours:
//!
//! - A frame type byte with the high bit clear starts a *sentinel* frame: bytes up to `0xFF`.
//!   Type `0x00` is a UTF-8 text message; for us it is Base64, decoded as it streams in. Other
//!   sentinel types are discarded.
//! - A type byte with the high bit set starts a *length-prefixed* frame: a length in base-128
//!   digits (high bit = more digits follow), then that many bytes, which are discarded — except
//!   that type `0xFF` with length 0 is the closing handshake.
//!
//! Neither kind has a length limit in the draft; we cap both at [`Limits::max_frame`], so an
//! unterminated frame cannot eat memory (we never buffer a frame anyway) or time.
//!
//! Writing: each read from the target becomes `0x00 <Base64> 0xFF` (Base64 is ASCII, so it can
//! never contain the `0xFF` terminator).

use std::io;

use base64::Engine;
use log::{debug, log_enabled};

use super::base64_stream::{BASE64, Base64Stream, max_decoded_len};
use super::rfc6455::{base64_chunk, read_some};
use super::{
    ClientReader, FrameEncoder, Inbound, Limits, ReadError, close_code, preview, violation,
};
use crate::buffers::{self, Buffer, Filled, Pace};
use crate::socket::Readable;

/// Where the reader is within a frame.
enum State {
    /// Expecting a frame type byte.
    FrameType,
    /// Inside a `0x00` text frame.
    Text { length: u64, base64: Base64Stream },
    /// Inside a sentinel frame of another type: skip to `0xFF`.
    SkipSentinel { length: u64 },
    /// Reading the base-128 length of a length-prefixed frame.
    Length { frame_type: u8, length: u64 },
    /// Skipping a length-prefixed frame's payload.
    SkipBytes { remaining: u64 },
}

/// Reads hixie frames from the client.
pub struct HixieReader<R> {
    id: u64,
    stream: R,
    /// Bytes read from the client; `buf[pos..end]` is not consumed yet.
    buf: Buffer,
    pos: usize,
    end: usize,
    /// How reads have been going (when to give buffers back, when to use large ones).
    pace: Pace,
    state: State,
    /// Decoded bytes; one `next()` gathers the text of every frame in the buffer here.
    decoded: Buffer,
    /// An event or error that came after gathered data: the next `next()` returns it.
    held_back: Option<Result<Inbound<'static>, ReadError>>,
    limits: Limits,
}

/// What consuming buffered bytes ended with (decoded bytes are gathered meanwhile).
enum Step {
    Event(Inbound<'static>),
    /// The buffer is used up.
    NeedMore,
    /// The decoded buffer is too full to take the next piece: hand on what it holds.
    Flush,
}

// Client bytes are read a buffer's payload at a time; their decoding fits a buffer too.
const _: () = assert!(max_decoded_len(buffers::SMALL) <= buffers::SMALL + buffers::ROOM);
const _: () = assert!(max_decoded_len(buffers::LARGE) <= buffers::LARGE + buffers::ROOM);

impl<R: Readable> HixieReader<R> {
    pub fn new(id: u64, stream: R, leftover: &[u8], limits: Limits) -> Self {
        let mut buf = Buffer::default();
        if !leftover.is_empty() {
            buf.get()[..leftover.len()].copy_from_slice(leftover);
        }
        HixieReader {
            id,
            stream,
            buf,
            pos: 0,
            end: leftover.len(),
            pace: Pace::default(),
            state: State::FrameType,
            decoded: Buffer::default(),
            held_back: None,
            limits,
        }
    }

    /// Consumes buffered bytes, adding decoded text to `decoded[..*gathered]`, until the
    /// buffer is used up or an event comes.
    fn step(&mut self, gathered: &mut usize) -> Result<Step, ReadError> {
        if self.pos == self.end {
            return Ok(Step::NeedMore);
        }
        let buf = self.buf.get();
        while self.pos < self.end {
            match &mut self.state {
                State::FrameType => {
                    let frame_type = buf[self.pos];
                    self.pos += 1;
                    self.state = match frame_type {
                        0x00 => State::Text {
                            length: 0,
                            base64: Base64Stream::default(),
                        },
                        t if t & 0x80 != 0 => State::Length {
                            frame_type: t,
                            length: 0,
                        },
                        _ => State::SkipSentinel { length: 0 },
                    };
                }
                State::Length { frame_type, length } => {
                    let byte = buf[self.pos];
                    self.pos += 1;
                    *length = *length * 128 + u64::from(byte & 0x7F);
                    let (frame_type, length) = (*frame_type, *length);
                    too_long(length, &self.limits)?;
                    if byte & 0x80 == 0 {
                        if log_enabled!(log::Level::Debug) {
                            debug!(
                                "[#{}] client→proxy length-prefixed type=0x{frame_type:02x} len={length}",
                                self.id
                            );
                        }
                        if frame_type == 0xFF && length == 0 {
                            self.state = State::FrameType;
                            return Ok(Step::Event(Inbound::Close(None)));
                        }
                        self.state = State::SkipBytes { remaining: length };
                    }
                }
                State::SkipBytes { remaining } => {
                    let n = (*remaining).min((self.end - self.pos) as u64);
                    *remaining -= n;
                    self.pos += n as usize;
                    if *remaining == 0 {
                        self.state = State::FrameType;
                    }
                }
                State::SkipSentinel { length } => {
                    let available = &buf[self.pos..self.end];
                    let found = find_terminator(available);
                    let n = found.unwrap_or(available.len());
                    *length += n as u64;
                    let length = *length;
                    self.pos += n;
                    too_long(length, &self.limits)?;
                    if found.is_some() {
                        self.pos += 1;
                        self.state = State::FrameType;
                    }
                }
                State::Text { length, base64 } => {
                    let available = &buf[self.pos..self.end];
                    let found = find_terminator(available);
                    let n = found.unwrap_or(available.len());
                    let piece = &buf[self.pos..self.pos + n];
                    let decoded = &mut self.decoded.get()[*gathered..];
                    if decoded.len() < max_decoded_len(n) {
                        return Ok(Step::Flush);
                    }
                    let first = *length == 0;
                    *length += n as u64;
                    let total = *length;
                    let (produced, failure) = match base64.feed(piece, decoded) {
                        Ok(n) if found.is_some() => match base64.finish(&mut decoded[n..]) {
                            Ok(tail) => (n + tail, None),
                            Err(e) => (n, Some(e.why)),
                        },
                        Ok(n) => (n, None),
                        Err(e) => (e.decoded, Some(e.why)),
                    };
                    let part = if found.is_some() { "end" } else { "start" };
                    if let Some(why) = failure {
                        // The failing piece is logged like every other; what was decoded
                        // before the error is handed on before the close.
                        debug!(
                            "[#{}] client→proxy text {part} {} ({total} bytes so far) → {why}",
                            self.id,
                            preview(piece)
                        );
                        *gathered += produced;
                        return Err(violation(close_code::INVALID_DATA, why));
                    }
                    if log_enabled!(log::Level::Debug) && (first || found.is_some()) {
                        debug!(
                            "[#{}] client→proxy text {part} {} ({total} bytes so far) → {produced} bytes decoded",
                            self.id,
                            preview(piece)
                        );
                    }
                    self.pos += n;
                    if total > self.limits.max_frame {
                        return Err(violation(
                            close_code::TOO_BIG,
                            format!("hixie frame longer than {} bytes", self.limits.max_frame),
                        ));
                    }
                    if found.is_some() {
                        self.pos += 1;
                        self.state = State::FrameType;
                    }
                    *gathered += produced;
                }
            }
        }
        Ok(Step::NeedMore)
    }
}

impl<R: Readable> ClientReader for HixieReader<R> {
    /// Returns the decoded text of every frame in the buffer as one piece, or the next
    /// event. Anything that comes after gathered data (an event, a protocol violation) waits
    /// for the next call, so the data is delivered first.
    fn next(&mut self) -> Result<Inbound<'_>, ReadError> {
        if let Some(held_back) = self.held_back.take() {
            return held_back;
        }
        let mut gathered = 0;
        loop {
            match self.step(&mut gathered) {
                Err(e) if gathered > 0 => {
                    self.held_back = Some(Err(e));
                    break;
                }
                Err(e) => return Err(e),
                Ok(Step::Event(event)) if gathered > 0 => {
                    self.held_back = Some(Ok(event));
                    break;
                }
                Ok(Step::Event(event)) => return Ok(event),
                Ok(Step::Flush) => break,
                Ok(Step::NeedMore) if gathered > 0 => break,
                Ok(Step::NeedMore) => {
                    // Every buffered byte is consumed (frame state lives in `self.state`).
                    self.pos = 0;
                    self.end = 0;
                    self.pace
                        .before_read(&mut self.stream, [&mut self.buf, &mut self.decoded])?;
                    let asked = self.buf.payload();
                    let n = read_some(&mut self.stream, &mut self.buf.get()[..asked])?;
                    if n == 0 {
                        return Ok(Inbound::Eof);
                    }
                    self.pace.record(n, asked);
                    self.end = n;
                }
            }
        }
        Ok(Inbound::Data(&self.decoded.held()[..gathered]))
    }
}

/// The index of the first `0xFF` (the end of a sentinel frame). Text frames carry Base64,
/// which is ASCII, and ASCII never has the high bit set: so we test eight bytes at a time for
/// any high bit and only look byte by byte at a word that has one. This scan runs over every
/// byte a hixie client uploads.
fn find_terminator(bytes: &[u8]) -> Option<usize> {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for (index, word) in (&mut words).enumerate() {
        let value = u64::from_ne_bytes(word.try_into().expect("chunks of 8"));
        if value & HIGH_BITS != 0
            && let Some(at) = word.iter().position(|&b| b == 0xFF)
        {
            return Some(index * 8 + at);
        }
    }
    let tail = bytes.len() - words.remainder().len();
    words
        .remainder()
        .iter()
        .position(|&b| b == 0xFF)
        .map(|at| tail + at)
}

fn too_long(length: u64, limits: &Limits) -> Result<(), ReadError> {
    if length > limits.max_frame {
        return Err(violation(
            close_code::TOO_BIG,
            format!("hixie frame longer than {} bytes", limits.max_frame),
        ));
    }
    Ok(())
}

/// Builds `0x00 <Base64> 0xFF` frames from target reads.
pub struct HixieEncoder {
    id: u64,
    frame: Buffer,
    raw: Buffer,
    pace: Pace,
}

impl HixieEncoder {
    pub fn new(id: u64) -> Self {
        HixieEncoder {
            id,
            frame: Buffer::default(),
            raw: Buffer::default(),
            pace: Pace::default(),
        }
    }
}

impl FrameEncoder for HixieEncoder {
    fn frame_from(&mut self, target: &mut dyn Readable) -> io::Result<Option<(Filled, usize)>> {
        self.pace
            .before_read(target, [&mut self.frame, &mut self.raw])?;
        // The frame is 0x00, the Base64 text, 0xFF: the text fills the frame buffer's payload.
        let asked = base64_chunk(self.frame.payload());
        let raw = &mut self.raw.get()[..asked];
        let n = read_some(target, raw)?;
        self.pace.record(n, asked);
        if n == 0 {
            return Ok(None);
        }
        let frame = self.frame.get();
        frame[0] = 0x00;
        let encoded = BASE64
            .encode_slice(&raw[..n], &mut frame[1..])
            .expect("the frame buffer holds a whole encoded chunk");
        frame[1 + encoded] = 0xFF;
        if log_enabled!(log::Level::Debug) {
            debug!(
                "[#{}] proxy→client text len={encoded} {} ({n} target bytes)",
                self.id,
                preview(&frame[1..encoded + 2])
            );
        }
        Ok(Some((self.frame.take_filled(0..encoded + 2), n)))
    }

    fn recycle(&mut self, written: Filled) {
        self.frame.restore(written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::test_support::{Trickle, collect};

    fn read_all(wire: &[u8], step: usize, limits: Limits) -> (Vec<u8>, Vec<String>) {
        collect(&mut HixieReader::new(
            1,
            Trickle::new(wire, step),
            &[],
            limits,
        ))
    }

    #[test]
    fn frames_split_across_reads_at_every_byte() {
        let mut wire = b"\x00aGVsbG8=\xff".to_vec(); // "hello"
        wire.extend_from_slice(b"\x80\x03abc"); // a length-prefixed frame, discarded
        wire.extend_from_slice(b"\x01ignored\xff"); // a sentinel frame of another type, discarded
        wire.extend_from_slice(b"\x00\xff"); // an empty message
        wire.extend_from_slice(b"\x00IHdvcmxk\xff"); // " world"
        wire.extend_from_slice(b"\xff\x00"); // the closing handshake
        for step in 1..=wire.len() {
            let (data, events) = read_all(&wire, step, Limits::default());
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(events, vec!["Close(None)".to_string()], "step {step}");
        }
    }

    #[test]
    fn frames_read_together_are_handed_on_as_one_piece() {
        // "hello", " world" and "!" in three frames, a closing handshake, then garbage.
        let wire = b"\x00aGVsbG8=\xff\x00IHdvcmxk\xff\x00IQ==\xff\xff\x00\x00*\xff";
        let source = Trickle::new(wire.to_vec(), usize::MAX);
        let mut reader = HixieReader::new(1, source, &[], Limits::default());
        assert!(matches!(reader.next(), Ok(Inbound::Data(b"hello world!"))));
        assert!(matches!(reader.next(), Ok(Inbound::Close(None))));
        assert!(matches!(reader.next(), Err(ReadError::Violation(_))));
    }

    #[test]
    fn terminator_is_found_at_every_position() {
        for len in 0..40 {
            let mut bytes = vec![b'A'; len];
            assert_eq!(find_terminator(&bytes), None);
            for at in 0..len {
                bytes[at] = 0x80; // a high bit that is not the terminator
                bytes.iter_mut().skip(at + 1).for_each(|b| *b = b'A');
                if at + 1 < len {
                    bytes[at + 1] = 0xFF;
                    assert_eq!(find_terminator(&bytes), Some(at + 1), "len {len} at {at}");
                }
                bytes[at] = 0xFF;
                assert_eq!(find_terminator(&bytes), Some(at), "len {len} at {at}");
                bytes[at] = b'A';
            }
        }
    }

    #[test]
    fn multi_byte_lengths_are_base_128() {
        let mut wire = vec![0x80, 0x81, 0x00]; // 128 bytes follow
        wire.extend(std::iter::repeat_n(b'x', 128));
        wire.extend_from_slice(b"\x00aGk=\xff");
        assert_eq!(read_all(&wire, 7, Limits::default()).0, b"hi");
    }

    #[test]
    fn caps_unterminated_and_huge_frames() {
        let limits = Limits {
            max_frame: 100,
            max_message: 100,
        };
        let unterminated = [&[0x00][..], &[b'A'; 200][..]].concat();
        assert!(read_all(&unterminated, 50, limits).1[0].contains("violation 1009"));
        let huge = [0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(read_all(&huge, 50, limits).1[0].contains("violation 1009"));
        let never_ending_length = [&[0x80][..], &[0xFF; 64][..]].concat();
        assert!(
            read_all(&never_ending_length, 50, Limits::default()).1[0].contains("violation 1009")
        );
    }

    #[test]
    fn invalid_base64_is_a_violation() {
        assert!(
            read_all(b"\x00not base64\xff", 4, Limits::default()).1[0].contains("violation 1007")
        );
    }

    #[test]
    fn whitespace_in_base64_is_ignored_and_errors_name_their_offset() {
        let wire = b"\x00aGVs\nbG8=\r\n\xff\x00 IHdv cmxk \xff\x00aGk*\xff";
        for step in 1..=wire.len() {
            let (data, events) = read_all(wire, step, Limits::default());
            assert_eq!(data, b"hello world", "step {step}");
            assert!(
                events[0].contains("violation 1007") && events[0].contains("offset 3"),
                "step {step}: {events:?}"
            );
        }
    }

    #[test]
    fn encoder_wraps_base64_in_sentinels() {
        let mut encoder = HixieEncoder::new(1);
        let mut source = &b"hello"[..];
        let (frame, raw) = encoder.frame_from(&mut source).unwrap().unwrap();
        assert_eq!((&*frame, raw), (&b"\x00aGVsbG8=\xff"[..], 5));
        assert!(encoder.frame_from(&mut source).unwrap().is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), step in 1usize..50) {
            let _ = read_all(&wire, step, Limits { max_frame: 300, max_message: 300 });
        }
    }
}

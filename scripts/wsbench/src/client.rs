//! A lean WebSocket tunnel client: handshakes and framing written by hand.
//!
//! The client must never be the bottleneck, so:
//! - every message goes out in **one `write`**: header and masked payload are built in one
//!   reusable buffer (Base64 is encoded straight into it);
//! - masking XORs eight bytes at a time;
//! - reads are large (256 KiB) and big binary payloads are read straight into the caller's
//!   buffer, skipping a copy;
//! - nothing is allocated per frame.
//!
//! A [`Tunnel`] is a [`Reader`] plus a [`Writer`] sharing one socket, so a test can send
//! from one thread while it receives on another. A TCP tunnel is read as a byte stream
//! ([`Reader::read`], [`Reader::verify_next`]); a UDP tunnel, where a message is a
//! datagram, one message at a time ([`Reader::read_message`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::{GeneralPurposeConfig, Simd};

/// Standard Base64 with the `base64` crate's SIMD engine (AVX2/NEON when the CPU has it), so
/// the load client's own encoding and decoding stay far cheaper than the proxy's work.
pub static B64: std::sync::LazyLock<Simd> =
    std::sync::LazyLock::new(|| Simd::standard(GeneralPurposeConfig::new()));
use md5::Md5;
use sha1::{Digest, Sha1};

use crate::targets::{MAX_SLICE, expected, expected_b64, verify};

/// How the client talks to whatever listens at the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Plain TCP straight to the target: the baseline.
    Direct,
    /// RFC 6455 without `Sec-WebSocket-Protocol`: raw bytes in binary frames.
    Binary,
    /// RFC 6455 offering this one subprotocol (`websockets-proxy` or `base64`): Base64 in text frames.
    Text(&'static str),
    /// draft-hixie-76: MD5 key handshake, Base64 in `0x00 … 0xFF` frames.
    Hixie76,
}

/// Size of the receive buffer of a busy tunnel (idle tunnels use a small one).
pub const BIG_BUF: usize = 256 * 1024;
/// Payload reads at least this large bypass the receive buffer (binary frames only).
const DIRECT_READ_MIN: usize = 64 * 1024;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A small xorshift64 generator for masking keys and handshake nonces.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed =
            t.as_nanos() as u64 ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// XORs `src` with the repeating 4-byte `key` into `dst`, eight bytes per step.
/// `src` starts at payload offset 0 (masking restarts with every frame).
fn mask_copy(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let dst = &mut dst[..src.len()];
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        let v = u64::from_ne_bytes(s.try_into().unwrap()) ^ wide;
        d.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, (d, s)) in d8
        .into_remainder()
        .iter_mut()
        .zip(s8.remainder())
        .enumerate()
    {
        *d = s ^ key[i & 3];
    }
}

/// [`mask_copy`] in place.
fn mask_in_place(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut c8 = buf.chunks_exact_mut(8);
    for c in &mut c8 {
        let v = u64::from_ne_bytes((&*c).try_into().unwrap()) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in c8.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Writes an RFC 6455 client frame header (FIN set, MASK set) into `out`; returns its length.
fn frame_header(out: &mut [u8; 14], opcode: u8, len: usize, key: [u8; 4]) -> usize {
    out[0] = 0x80 | opcode;
    let n = if len < 126 {
        out[1] = 0x80 | len as u8;
        2
    } else if len <= 0xFFFF {
        out[1] = 0x80 | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 0x80 | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    out[n..n + 4].copy_from_slice(&key);
    n + 4
}

/// The sending half of a tunnel.
pub struct Writer {
    stream: Arc<TcpStream>,
    proto: Proto,
    /// Reused frame buffer; it only ever grows.
    buf: Vec<u8>,
    rng: Rng,
}

impl Writer {
    /// Sends `data` as one message (one frame, one `write_all`); plain bytes for `Direct`.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let total = match self.proto {
            Proto::Direct => return (&*self.stream).write_all(data),
            Proto::Binary => {
                let key = (self.rng.next() as u32).to_ne_bytes();
                let mut head = [0u8; 14];
                let h = frame_header(&mut head, 0x2, data.len(), key);
                self.grow(h + data.len());
                self.buf[..h].copy_from_slice(&head[..h]);
                mask_copy(&mut self.buf[h..], data, key);
                h + data.len()
            }
            Proto::Text(_) => {
                let key = (self.rng.next() as u32).to_ne_bytes();
                let len = base64::encoded_len(data.len(), true).unwrap();
                let mut head = [0u8; 14];
                let h = frame_header(&mut head, 0x1, len, key);
                self.grow(h + len);
                self.buf[..h].copy_from_slice(&head[..h]);
                B64.encode_slice(data, &mut self.buf[h..h + len]).unwrap();
                mask_in_place(&mut self.buf[h..h + len], key);
                h + len
            }
            Proto::Hixie76 => {
                let len = base64::encoded_len(data.len(), true).unwrap();
                self.grow(len + 2);
                self.buf[0] = 0x00;
                B64.encode_slice(data, &mut self.buf[1..1 + len]).unwrap();
                self.buf[1 + len] = 0xFF;
                len + 2
            }
        };
        (&*self.stream).write_all(&self.buf[..total])
    }

    /// Sends the `len` pattern bytes at stream position `offset` as one message, like
    /// `send(expected(offset, len))`, but in the Base64 modes the text is copied from the
    /// precomputed Base64 of the pattern instead of being encoded here.
    pub fn send_pattern(&mut self, offset: u64, len: usize) -> io::Result<()> {
        let hixie = match self.proto {
            Proto::Direct | Proto::Binary => return self.send(expected(offset, len)),
            Proto::Text(_) => false,
            Proto::Hixie76 => true,
        };
        let groups = len / 3;
        let text_len = base64::encoded_len(len, true).unwrap();
        let key = (self.rng.next() as u32).to_ne_bytes();
        let mut head = [0u8; 14];
        let h = if hixie {
            head[0] = 0x00;
            1
        } else {
            frame_header(&mut head, 0x1, text_len, key)
        };
        self.grow(h + text_len + 1);
        self.buf[..h].copy_from_slice(&head[..h]);
        let body = expected_b64(offset, groups);
        let tail = &mut self.buf[h + body.len()..h + text_len];
        B64.encode_slice(expected(offset + 3 * groups as u64, len % 3), tail)
            .unwrap();
        if hixie {
            self.buf[h..h + body.len()].copy_from_slice(body);
            self.buf[h + text_len] = 0xFF;
            return (&*self.stream).write_all(&self.buf[..h + text_len + 1]);
        }
        // body.len() is a multiple of 4, so the tail's mask starts at key byte 0 again.
        mask_copy(&mut self.buf[h..], body, key);
        mask_in_place(&mut self.buf[h + body.len()..h + text_len], key);
        (&*self.stream).write_all(&self.buf[..h + text_len])
    }

    /// Starts the closing handshake: Close 1000 (RFC 6455), `FF 00` (hixie-76) or a TCP
    /// half-close (direct).
    pub fn send_close(&mut self) -> io::Result<()> {
        match self.proto {
            Proto::Direct => self.stream.shutdown(Shutdown::Write),
            Proto::Hixie76 => (&*self.stream).write_all(&[0xFF, 0x00]),
            Proto::Binary | Proto::Text(_) => {
                let key = (self.rng.next() as u32).to_ne_bytes();
                let mut frame = [0u8; 16];
                let h = frame_header((&mut frame[..14]).try_into().unwrap(), 0x8, 2, key);
                mask_copy(&mut frame[h..], &1000u16.to_be_bytes(), key);
                (&*self.stream).write_all(&frame[..h + 2])
            }
        }
    }

    fn grow(&mut self, len: usize) {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
    }
}

/// A piece of the payload stream, as [`Reader::next_piece`] hands it out.
enum Piece {
    /// The tunnel is closed.
    End,
    /// Raw payload bytes: `buf[range]`.
    Raw(Range<usize>),
    /// Whole Base64 groups without padding: `buf[range]`, `range.len() / 4 * 3` bytes.
    Groups(Range<usize>),
    /// Decoded bytes in `stash[range]` (a padded last group, or a group for a tiny read).
    Stash(Range<usize>),
}

/// The receiving half of a tunnel: turns frames back into the payload byte stream.
///
/// [`Reader::read`] decodes into the caller's buffer, like any client would.
/// [`Reader::verify_next`] checks the stream against the test pattern without copying or
/// decoding it: raw bytes are compared where they lie in the receive buffer, and Base64
/// text is compared with the precomputed Base64 of the pattern ([`expected_b64`]). That
/// checks every byte just as well (Base64 is one-to-one) at the cost of a `memcmp`.
pub struct Reader {
    stream: Arc<TcpStream>,
    proto: Proto,
    /// Raw bytes received but not yet consumed are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// RFC 6455: payload bytes left in the current data frame.
    frame_left: u64,
    /// hixie-76: inside a `0x00 … 0xFF` frame.
    in_frame: bool,
    /// hixie-76: `buf[start..scanned]` is known to hold no `0xFF`.
    scanned: usize,
    /// Decoded bytes of one Base64 group not yet handed out: `stash[stash_pos..stash_len]`.
    stash: [u8; 3],
    stash_len: usize,
    stash_pos: usize,
    /// Set once the peer closed (Close frame, `FF 00` or EOF).
    closed: bool,
    /// The status code of the peer's Close frame, if any.
    pub close_code: Option<u16>,
}

impl Reader {
    fn new(stream: Arc<TcpStream>, proto: Proto, bufsize: usize) -> Reader {
        Reader {
            stream,
            proto,
            buf: vec![0; bufsize],
            start: 0,
            end: 0,
            frame_left: 0,
            in_frame: false,
            scanned: 0,
            stash: [0; 3],
            stash_len: 0,
            stash_pos: 0,
            closed: false,
            close_code: None,
        }
    }

    /// Reads more raw bytes into the buffer; returns how many (0 = EOF).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            // Move the unconsumed tail to the front so the next read can be large.
            self.buf.copy_within(self.start..self.end, 0);
            self.scanned -= self.start.min(self.scanned);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(bad(
                "receive buffer full (frame header or Base64 group too long)",
            ));
        }
        let n = (&*self.stream).read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Reads payload bytes into `out`; returns how many, 0 once the peer has closed.
    /// Every call returns at least one byte unless the tunnel is closed.
    pub fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // A big binary payload with nothing buffered goes straight into the caller's buffer.
        let want = match self.proto {
            Proto::Direct => out.len(),
            Proto::Binary => (out.len() as u64).min(self.frame_left) as usize,
            _ => 0,
        };
        if want >= DIRECT_READ_MIN && self.start == self.end && !self.closed {
            let n = (&*self.stream).read(&mut out[..want])?;
            match (n, self.proto) {
                (0, Proto::Direct) => self.closed = true,
                (0, _) => return Err(bad("EOF inside a frame")),
                _ if self.proto == Proto::Binary => self.frame_left -= n as u64,
                _ => {}
            }
            return Ok(n);
        }
        Ok(match self.next_piece(out.len())? {
            Piece::End => 0,
            Piece::Raw(r) => {
                out[..r.len()].copy_from_slice(&self.buf[r.clone()]);
                r.len()
            }
            Piece::Groups(r) => B64
                .decode_slice(&self.buf[r], out)
                .map_err(|e| bad(format!("invalid Base64 from the proxy: {e}")))?,
            Piece::Stash(r) => {
                out[..r.len()].copy_from_slice(&self.stash[r.clone()]);
                r.len()
            }
        })
    }

    /// Fills `out` completely; EOF first is an error.
    pub fn read_exact(&mut self, mut out: &mut [u8]) -> io::Result<()> {
        while !out.is_empty() {
            let n = self.read(out)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    self.eof_message(),
                ));
            }
            out = &mut out[n..];
        }
        Ok(())
    }

    /// Consumes up to `max` payload bytes, checking them against the pattern stream at
    /// `offset`; returns how many (0 once the peer has closed).
    pub fn verify_next(&mut self, offset: u64, max: usize) -> io::Result<usize> {
        Ok(match self.next_piece(max.min(MAX_SLICE))? {
            Piece::End => 0,
            Piece::Raw(r) => {
                verify(offset, &self.buf[r.clone()])?;
                r.len()
            }
            Piece::Groups(r) => {
                let text = &self.buf[r];
                if text != expected_b64(offset, text.len() / 4) {
                    // Decode to say exactly which byte is wrong.
                    let bytes = B64
                        .decode(text)
                        .map_err(|e| bad(format!("invalid Base64 from the proxy: {e}")))?;
                    verify(offset, &bytes)?;
                    return Err(bad("non-canonical Base64 from the proxy"));
                }
                text.len() / 4 * 3
            }
            Piece::Stash(r) => {
                verify(offset, &self.stash[r.clone()])?;
                r.len()
            }
        })
    }

    /// Reads one whole binary message (a datagram, in a UDP tunnel) into `out`; returns its
    /// length, or `None` once the peer has closed. Control frames are handled on the way,
    /// and a fragmented message is joined. A frame is only taken from the buffer once all
    /// of it has arrived, so after a read timeout (`WouldBlock`) between messages the call
    /// can simply be repeated.
    pub fn read_message(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        let mut len = 0;
        let mut started = false;
        loop {
            let frame = match self.whole_frame() {
                Err(e) if started => return Err(bad(format!("inside a fragmented message: {e}"))),
                other => other?,
            };
            let Some((opcode, fin, payload)) = frame else {
                return match started {
                    true => Err(bad("EOF inside a fragmented message")),
                    false => Ok(None),
                };
            };
            match opcode {
                0x2 if !started => {}
                0x0 if started => {}
                0x8 => {
                    let p = &self.buf[payload];
                    self.close_code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    self.closed = true;
                    return Ok(None);
                }
                0x9 | 0xA => continue, // Ping, Pong: the proxy only pings with --heartbeat
                _ => return Err(bad(format!("unexpected opcode {opcode} in a UDP tunnel"))),
            }
            if len + payload.len() > out.len() {
                return Err(bad(format!("a message over {} bytes", out.len())));
            }
            out[len..len + payload.len()].copy_from_slice(&self.buf[payload.clone()]);
            len += payload.len();
            started = true;
            if fin {
                return Ok(Some(len));
            }
        }
    }

    /// The next RFC 6455 frame once it is completely buffered: (opcode, FIN, the range of
    /// its payload in `buf`, valid until the next read); `None` at EOF.
    fn whole_frame(&mut self) -> io::Result<Option<(u8, bool, Range<usize>)>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            let avail = &self.buf[self.start..self.end];
            if let Some((opcode, masked, len, hlen)) = parse_header(avail)? {
                if masked {
                    return Err(bad("server frame is masked"));
                }
                if len > (self.buf.len() - hlen) as u64 {
                    return Err(bad(format!(
                        "a frame of {len} bytes: larger than the buffer"
                    )));
                }
                let total = hlen + len as usize;
                if avail.len() >= total {
                    let fin = avail[0] & 0x80 != 0;
                    let payload = self.start + hlen..self.start + total;
                    self.start += total;
                    return Ok(Some((opcode, fin, payload)));
                }
            }
            if self.fill()? == 0 {
                if self.start < self.end {
                    return Err(bad("EOF inside a frame"));
                }
                self.closed = true;
            }
        }
    }

    /// Describes the decoder's state, for error messages.
    pub fn state(&self) -> String {
        format!(
            "{} bytes buffered, {} left in the current frame",
            self.end - self.start,
            self.frame_left
        )
    }

    /// Describes why the stream ended, for error messages.
    pub fn eof_message(&self) -> String {
        match self.close_code {
            Some(code) => format!("tunnel closed by the proxy (Close {code})"),
            None => "tunnel closed by the peer".to_string(),
        }
    }

    /// The framing decoder: hands out the next piece of payload of at most `max` (> 0)
    /// bytes, reading from the socket as needed.
    fn next_piece(&mut self, max: usize) -> io::Result<Piece> {
        if self.stash_pos < self.stash_len {
            let n = max.min(self.stash_len - self.stash_pos);
            self.stash_pos += n;
            return Ok(Piece::Stash(self.stash_pos - n..self.stash_pos));
        }
        loop {
            if self.closed {
                return Ok(Piece::End);
            }
            match self.proto {
                Proto::Direct => {
                    if self.start < self.end {
                        return Ok(Piece::Raw(self.take(max)));
                    }
                    if self.fill()? == 0 {
                        self.closed = true;
                    }
                }
                Proto::Binary | Proto::Text(_) => {
                    if self.frame_left == 0 {
                        self.next_header()?;
                        continue;
                    }
                    let avail = ((self.end - self.start) as u64).min(self.frame_left) as usize;
                    let taken = if self.proto == Proto::Binary {
                        (avail > 0).then(|| Piece::Raw(self.take(avail.min(max))))
                    } else {
                        self.take_base64(avail, avail as u64 == self.frame_left, max)?
                    };
                    if let Some(piece) = taken {
                        self.frame_left -= match &piece {
                            Piece::Raw(r) | Piece::Groups(r) => r.len() as u64,
                            _ => 4,
                        };
                        return Ok(piece);
                    }
                    if self.fill()? == 0 {
                        return Err(bad("EOF inside a frame"));
                    }
                }
                Proto::Hixie76 => {
                    if !self.in_frame {
                        self.next_hixie_frame()?;
                        continue;
                    }
                    // Find the 0xFF terminator, scanning only bytes not seen before.
                    self.scanned = self.scanned.max(self.start);
                    let term = find_ff(&self.buf[self.scanned..self.end]).map(|i| self.scanned + i);
                    self.scanned = term.unwrap_or(self.end);
                    let stop = term.unwrap_or(self.end);
                    if let Some(piece) = self.take_base64(stop - self.start, term.is_some(), max)? {
                        return Ok(piece);
                    }
                    if term == Some(self.start) {
                        self.start += 1;
                        self.in_frame = false;
                    } else if self.fill()? == 0 {
                        return Err(bad("EOF inside a hixie frame"));
                    }
                }
            }
        }
    }

    /// Consumes up to `n` buffered bytes and returns their range.
    fn take(&mut self, n: usize) -> Range<usize> {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.start - n..self.start
    }

    /// Takes Base64 from the `avail` characters at `buf[start..]`, which end the frame if
    /// `last`: whole unpadded groups worth at most `max` bytes, or else one group decoded
    /// into the stash (a padded group, or any group when `max` < 3). `None` means more
    /// bytes are needed (or the frame is used up).
    fn take_base64(&mut self, avail: usize, last: bool, max: usize) -> io::Result<Option<Piece>> {
        if last && !avail.is_multiple_of(4) {
            return Err(bad("Base64 message length is not a multiple of 4"));
        }
        let groups = avail / 4;
        let mut whole = groups.min(max / 3);
        if whole > 0 && self.buf[self.start + whole * 4 - 1] == b'=' {
            whole -= 1; // a padded group goes through the stash
        }
        if whole > 0 {
            return Ok(Some(Piece::Groups(self.take(whole * 4))));
        }
        if groups == 0 {
            return Ok(None);
        }
        let group = self.take(4);
        self.stash_len = B64
            .decode_slice(&self.buf[group], &mut self.stash)
            .map_err(|e| bad(format!("invalid Base64 from the proxy: {e}")))?;
        self.stash_pos = max.min(self.stash_len);
        Ok(Some(Piece::Stash(0..self.stash_pos)))
    }

    /// Parses the next RFC 6455 frame header (reading more if needed) and handles control
    /// frames.
    fn next_header(&mut self) -> io::Result<()> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some((opcode, masked, len, hlen)) = parse_header(avail)? {
                if masked {
                    return Err(bad("server frame is masked"));
                }
                match opcode {
                    0x0..=0x2 => {
                        let want_text = matches!(self.proto, Proto::Text(_));
                        if opcode != 0x0 && (opcode == 0x1) != want_text {
                            return Err(bad(format!(
                                "unexpected opcode {opcode} for {:?}",
                                self.proto
                            )));
                        }
                        self.start += hlen;
                        self.frame_left = len;
                        return Ok(());
                    }
                    0x8..=0xA => {
                        // Control frame: wait until its (≤125-byte) payload is buffered.
                        if avail.len() < hlen + len as usize {
                            if self.fill()? == 0 {
                                return Err(bad("EOF inside a control frame"));
                            }
                            continue;
                        }
                        let payload = &avail[hlen..hlen + len as usize];
                        if opcode == 0x8 {
                            self.close_code = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            self.closed = true;
                        }
                        // Ping and Pong are skipped: the proxy only pings when told to
                        // (--heartbeat), which the benchmark never does.
                        self.start += hlen + len as usize;
                        return Ok(());
                    }
                    _ => return Err(bad(format!("unknown opcode {opcode}"))),
                }
            }
            if self.fill()? == 0 {
                if self.start < self.end {
                    return Err(bad("EOF inside a frame header"));
                }
                self.closed = true;
                return Ok(());
            }
        }
    }

    /// Between hixie-76 frames: expects `0x00` (a frame starts) or `0xFF 0x00` (close).
    fn next_hixie_frame(&mut self) -> io::Result<()> {
        if self.end - self.start < 2 && self.fill()? == 0 {
            if self.start == self.end {
                self.closed = true;
                return Ok(());
            }
            return Err(bad("EOF between hixie frames"));
        }
        match self.buf[self.start] {
            0x00 => {
                self.start += 1;
                self.in_frame = true;
            }
            0xFF if self.end - self.start >= 2 => {
                if self.buf[self.start + 1] != 0x00 {
                    return Err(bad("length-prefixed hixie frame from the proxy"));
                }
                self.start += 2;
                self.closed = true;
            }
            0xFF => {}
            t => return Err(bad(format!("unexpected hixie frame type {t:#04x}"))),
        }
        Ok(())
    }

    /// Reads until the peer closes, discarding data (used by [`Tunnel::close`]).
    fn drain(&mut self) -> io::Result<()> {
        while !matches!(self.next_piece(usize::MAX)?, Piece::End) {}
        Ok(())
    }
}

/// Position of the first 0xFF byte. Base64 text is 7-bit, so a word without any high bit
/// set can be skipped eight bytes at a time.
fn find_ff(hay: &[u8]) -> Option<usize> {
    let mut i = 0;
    for c in hay.chunks_exact(8) {
        if u64::from_ne_bytes(c.try_into().unwrap()) & 0x8080_8080_8080_8080 != 0 {
            break;
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == 0xFF).map(|p| p + i)
}

/// Parses an RFC 6455 frame header: (opcode, masked, payload length, header length), or
/// `None` if more bytes are needed.
fn parse_header(b: &[u8]) -> io::Result<Option<(u8, bool, u64, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 {
        return Err(bad("RSV bits set"));
    }
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut hlen) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    if masked {
        hlen += 4;
    }
    if b.len() < hlen {
        return Ok(None);
    }
    Ok(Some((opcode, masked, len, hlen)))
}

/// One tunnel: an open, handshaken connection through the proxy (or straight to the target).
pub struct Tunnel {
    pub reader: Reader,
    pub writer: Writer,
}

impl Tunnel {
    /// Connects to `addr`, performs the handshake for `proto` asking for `path`, and returns
    /// the tunnel. `bufsize` is the receive buffer size; `timeout` bounds every socket
    /// operation, so a stuck proxy fails the test instead of hanging the benchmark.
    pub fn open(
        addr: SocketAddr,
        path: &str,
        proto: Proto,
        bufsize: usize,
        timeout: Duration,
    ) -> io::Result<Tunnel> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // Both halves share the socket (no dup: an idle tunnel costs one descriptor).
        let stream = Arc::new(stream);
        let mut reader = Reader::new(Arc::clone(&stream), proto, bufsize);
        let mut writer = Writer {
            stream,
            proto,
            buf: Vec::new(),
            rng: Rng::new(),
        };
        match proto {
            Proto::Direct => {}
            Proto::Binary | Proto::Text(_) => {
                handshake_rfc6455(&mut reader, &mut writer, addr, path)?
            }
            Proto::Hixie76 => handshake_hixie76(&mut reader, &mut writer, addr, path)?,
        }
        Ok(Tunnel { reader, writer })
    }

    /// Changes the receive timeout (it was set by [`Tunnel::open`]).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.stream.set_read_timeout(timeout)
    }

    /// Orderly close: send our Close (unless we are answering theirs), then read until the
    /// peer's Close or EOF.
    pub fn close(mut self) -> io::Result<()> {
        let sent = self.writer.send_close();
        if !self.reader.closed {
            // (If they closed first, they may already have dropped the connection, so a
            // failure to send our answer does not matter.)
            sent?;
            self.reader.drain()?;
        }
        Ok(())
    }
}

/// Reads the HTTP response head into the reader's buffer; returns (status line, headers)
/// and leaves any bytes after the blank line in the buffer as frame data.
fn read_response_head(r: &mut Reader) -> io::Result<(String, Vec<(String, String)>)> {
    let head_end = loop {
        if let Some(i) = r.buf[..r.end].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if r.fill()? == 0 {
            let got = String::from_utf8_lossy(&r.buf[..r.end]).into_owned();
            return Err(bad(format!(
                "connection closed during the handshake; got {got:?}"
            )));
        }
    };
    let text = String::from_utf8_lossy(&r.buf[..head_end]).into_owned();
    r.start = head_end;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Fails unless the status code is 101; includes the start of the body in the error.
fn expect_101(r: &mut Reader, status: &str) -> io::Result<()> {
    if status.split_whitespace().nth(1) == Some("101") {
        return Ok(());
    }
    let _ = r.fill(); // the body may explain
    let body = String::from_utf8_lossy(&r.buf[r.start..r.end]);
    let body = body.trim();
    Err(bad(format!(
        "handshake refused: {status} {}",
        &body[..body.len().min(200)]
    )))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn handshake_rfc6455(
    r: &mut Reader,
    w: &mut Writer,
    addr: SocketAddr,
    path: &str,
) -> io::Result<()> {
    let nonce: [u8; 16] = [w.rng.next().to_ne_bytes(), w.rng.next().to_ne_bytes()]
        .concat()
        .try_into()
        .unwrap();
    let key = B64.encode(nonce);
    let protocol = match w.proto {
        Proto::Text(p) => format!("Sec-WebSocket-Protocol: {p}\r\n"),
        _ => String::new(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{addr}\r\n{protocol}\r\n"
    );
    (&*w.stream).write_all(request.as_bytes())?;
    let (status, headers) = read_response_head(r)?;
    expect_101(r, &status)?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = B64.encode(sha.finalize());
    if header(&headers, "sec-websocket-accept") != Some(accept.as_str()) {
        return Err(bad("wrong Sec-WebSocket-Accept"));
    }
    let got = header(&headers, "sec-websocket-protocol");
    match w.proto {
        Proto::Text(p) if got != Some(p) => {
            Err(bad(format!("asked for subprotocol {p}, got {got:?}")))
        }
        Proto::Binary if got.is_some() => Err(bad(format!("unasked subprotocol {got:?}"))),
        _ => Ok(()),
    }
}

/// Makes a draft-76 `Sec-WebSocket-Key`: `number * spaces` in decimal with random
/// characters and `spaces` spaces inserted (never at either end). Returns (key, number).
fn hixie_key(rng: &mut Rng) -> (String, u32) {
    let spaces = (rng.next() % 12 + 1) as u32;
    let number = (rng.next() % (u32::MAX / spaces) as u64) as u32;
    let mut key: Vec<u8> = (number as u64 * spaces as u64).to_string().into_bytes();
    const NOISE: &[u8] =
        b"!\"#$%&'()*+,-./:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
    for _ in 0..rng.next() % 12 + 1 {
        let at = (rng.next() % (key.len() as u64 + 1)) as usize;
        key.insert(at, NOISE[(rng.next() % NOISE.len() as u64) as usize]);
    }
    for _ in 0..spaces {
        let at = 1 + (rng.next() % (key.len() as u64 - 1)) as usize;
        key.insert(at, b' ');
    }
    (String::from_utf8(key).unwrap(), number)
}

fn handshake_hixie76(
    r: &mut Reader,
    w: &mut Writer,
    addr: SocketAddr,
    path: &str,
) -> io::Result<()> {
    let (key1, n1) = hixie_key(&mut w.rng);
    let (key2, n2) = hixie_key(&mut w.rng);
    let key3 = w.rng.next().to_ne_bytes();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: {addr}\r\n\
         Origin: http://{addr}\r\nSec-WebSocket-Key1: {key1}\r\nSec-WebSocket-Key2: {key2}\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&key3);
    (&*w.stream).write_all(&request)?;
    let (status, _headers) = read_response_head(r)?;
    expect_101(r, &status)?;
    // The 16-byte MD5 challenge answer follows the blank line.
    while r.end - r.start < 16 {
        if r.fill()? == 0 {
            return Err(bad("EOF before the hixie-76 challenge response"));
        }
    }
    let mut md5 = Md5::new();
    md5.update(n1.to_be_bytes());
    md5.update(n2.to_be_bytes());
    md5.update(key3);
    if r.buf[r.start..r.start + 16] != md5.finalize()[..] {
        return Err(bad("wrong hixie-76 challenge response"));
    }
    r.start += 16;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const SIZES: [usize; 13] = [0, 1, 2, 3, 4, 5, 125, 126, 1000, 65535, 65536, 70000, 7];

    /// A connection whose peer sends `bytes` in 7-byte pieces, then closes.
    fn feed(bytes: Vec<u8>) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            for piece in bytes.chunks(7) {
                s.write_all(piece).unwrap();
            }
        });
        TcpStream::connect(addr).unwrap()
    }

    /// What a server sends for messages of SIZES pattern bytes, then its close.
    fn server_stream(proto: Proto) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = 0;
        for n in SIZES {
            let data = expected(offset, n);
            offset += n as u64;
            let (opcode, payload) = match proto {
                Proto::Binary => (0x82, data.to_vec()),
                _ => (0x81, B64.encode(data).into_bytes()),
            };
            if proto == Proto::Hixie76 {
                out.push(0x00);
                out.extend_from_slice(&payload);
                out.push(0xFF);
                continue;
            }
            out.push(opcode);
            match payload.len() {
                len if len < 126 => out.push(len as u8),
                len if len <= 0xFFFF => {
                    out.push(126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                len => {
                    out.push(127);
                    out.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            out.extend_from_slice(&payload);
        }
        match proto {
            Proto::Hixie76 => out.extend_from_slice(&[0xFF, 0x00]),
            _ => out.extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]),
        }
        out
    }

    #[test]
    fn reader_decodes_every_framing() {
        let total: usize = SIZES.iter().sum();
        for proto in [Proto::Binary, Proto::Text("base64"), Proto::Hixie76] {
            // verify_next, with a tiny receive buffer to force partial frames and compaction.
            let mut r = Reader::new(Arc::new(feed(server_stream(proto))), proto, 64);
            let mut done = 0;
            loop {
                let n = r.verify_next(done as u64, 1000).unwrap();
                if n == 0 {
                    break;
                }
                done += n;
            }
            assert_eq!(done, total, "{proto:?}");
            if proto != Proto::Hixie76 {
                assert_eq!(r.close_code, Some(1000));
            }
            // read, with odd output sizes to exercise the Base64 stash.
            let mut r = Reader::new(Arc::new(feed(server_stream(proto))), proto, 64);
            let mut got = Vec::new();
            let mut out = [0u8; 4096];
            for want in [1, 2, 3, 5, 64, 4096].into_iter().cycle() {
                let n = r.read(&mut out[..want]).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&out[..n]);
            }
            assert_eq!(got.len(), total, "{proto:?}");
            assert!(
                verify(0, &got[..got.len().min(MAX_SLICE)]).is_ok(),
                "{proto:?}"
            );
        }
    }

    #[test]
    fn read_message_returns_one_message_at_a_time() {
        // SIZES as binary messages, a Ping between them, one message in three fragments,
        // then the Close; fed in 7-byte pieces.
        let mut stream = server_stream(Proto::Binary);
        let close = stream.split_off(stream.len() - 4);
        stream.extend_from_slice(&[0x89, 0x01, b'p']);
        stream.extend_from_slice(&[0x02, 0x01, 0xAA, 0x00, 0x02, 0xBB, 0xCC, 0x80, 0x00]);
        stream.extend_from_slice(&close);
        let mut r = Reader::new(Arc::new(feed(stream)), Proto::Binary, 256 * 1024);
        let mut out = vec![0u8; 70_000];
        let mut offset = 0;
        for n in SIZES {
            assert_eq!(r.read_message(&mut out).unwrap(), Some(n), "message of {n}");
            assert!(verify(offset, &out[..n]).is_ok());
            offset += n as u64;
        }
        assert_eq!(
            r.read_message(&mut out).unwrap(),
            Some(3),
            "fragments joined"
        );
        assert_eq!(&out[..3], &[0xAA, 0xBB, 0xCC]);
        assert_eq!(r.read_message(&mut out).unwrap(), None);
        assert_eq!(r.close_code, Some(1000));
        // A message larger than the caller's buffer is an error, not a cut.
        let mut r = Reader::new(
            Arc::new(feed(server_stream(Proto::Binary))),
            Proto::Binary,
            256 * 1024,
        );
        let mut small = [0u8; 100];
        for _ in 0..6 {
            r.read_message(&mut small).unwrap(); // 0, 1, 2, 3, 4, 5 bytes
        }
        assert!(r.read_message(&mut small).is_err(), "125 bytes into 100");
    }

    #[test]
    fn send_pattern_equals_send_of_the_bytes() {
        for proto in [Proto::Text("base64"), Proto::Hixie76] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            let mut w = Writer {
                stream: Arc::new(stream),
                proto,
                buf: Vec::new(),
                rng: Rng(1),
            };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (i, n) in SIZES.into_iter().enumerate() {
                let offset = 1_000_000 + i as u64 * 77;
                let text = base64::encoded_len(n, true).unwrap();
                let len = match proto {
                    Proto::Hixie76 => text + 2,
                    _ => {
                        text + if text < 126 {
                            6
                        } else if text <= 0xFFFF {
                            8
                        } else {
                            14
                        }
                    }
                };
                for frames in [&mut a, &mut b] {
                    w.rng = Rng(i as u64 + 1); // the same mask key for both sends
                    if frames.len() == i {
                        w.send_pattern(offset, n).unwrap();
                    } else {
                        w.send(expected(offset, n)).unwrap();
                    }
                    let mut frame = vec![0u8; len];
                    peer.read_exact(&mut frame).unwrap();
                    frames.push(frame);
                }
            }
            assert_eq!(a, b, "{proto:?}");
        }
    }

    #[test]
    fn masking_matches_bytewise() {
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let key = [1, 2, 3, 250];
        for len in [0, 1, 7, 8, 9, 63, 1000] {
            let mut dst = vec![0; len];
            mask_copy(&mut dst, &src[..len], key);
            let want: Vec<u8> = src[..len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(dst, want);
            mask_in_place(&mut dst, key);
            assert_eq!(dst, &src[..len]);
        }
    }

    #[test]
    fn find_ff_finds_first() {
        let mut v = vec![b'A'; 40];
        assert_eq!(find_ff(&v), None);
        v[33] = 0xFF;
        v[37] = 0xFF;
        assert_eq!(find_ff(&v), Some(33));
    }

    #[test]
    fn hixie_keys_follow_the_rules() {
        let mut rng = Rng::new();
        for _ in 0..1000 {
            let (key, number) = hixie_key(&mut rng);
            let spaces = key.bytes().filter(|&b| b == b' ').count() as u64;
            let digits: u64 = key
                .bytes()
                .filter(u8::is_ascii_digit)
                .fold(0, |a, d| a * 10 + (d - b'0') as u64);
            assert!(!key.starts_with(' ') && !key.ends_with(' '));
            assert_eq!(digits % spaces, 0);
            assert_eq!(digits / spaces, number as u64);
        }
    }
}

//! The TCP targets the tunnels lead to, all running as threads inside wsbench.
//!
//! | target | what it does with a connection |
//! |---|---|
//! | echo   | writes back every byte it reads; on EOF it half-closes its side |
//! | sink   | reads a [`Request`], then `count` bytes which it checks against the [`pattern`]; answers one byte, `K` (all correct) or `E` (mismatch) |
//! | source | reads a [`Request`], then sends `count` bytes of the [`pattern`] and waits for the client to close |
//! | idle   | reads an 8-byte tunnel id and parks the socket under that id, so the idle-tunnel test can later drive both ends of every tunnel itself |
//!
//! Every byte the client or a target receives is compared with the deterministic
//! pseudo-random [`pattern`], so a proxy that drops, duplicates, reorders or corrupts
//! data is caught, not just one that loses a byte count.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::client::B64;

/// Period of the test pattern: a prime, so that no power-of-two write or frame size
/// lines up with it and a chunk delivered twice or at the wrong place never matches.
pub const PERIOD: usize = 1_048_573;
/// The longest slice [`expected`] can hand out in one piece.
pub const MAX_SLICE: usize = 512 * 1024;

/// Stack size of the target threads: they only hold a few locals (buffers are on the heap).
const TARGET_STACK: usize = 128 * 1024;
/// Read buffer of the echo, sink and source targets.
const TARGET_BUF: usize = 256 * 1024;
/// Chunk size the source target writes.
const SOURCE_CHUNK: usize = 64 * 1024;

/// The pattern: `PERIOD` pseudo-random bytes (xorshift64*), followed by a copy of its first
/// `MAX_SLICE` bytes so that any `expected(offset, len)` is one contiguous slice.
pub fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data = Vec::with_capacity(PERIOD + MAX_SLICE + 8);
        while data.len() < PERIOD {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        data.truncate(PERIOD);
        data.extend_from_within(..MAX_SLICE);
        data
    })
}

/// The `len` bytes of the endless pattern stream that start at stream position `offset`.
pub fn expected(offset: u64, len: usize) -> &'static [u8] {
    assert!(len <= MAX_SLICE, "pattern slice too long");
    let start = (offset % PERIOD as u64) as usize;
    &pattern()[start..start + len]
}

/// The Base64 of `groups * 3` pattern bytes at stream position `offset`, which is what a
/// Base64 message of those bytes contains (without padding: the length is a multiple of 3).
/// Made from three precomputed encodings of the pattern, one per alignment, so that
/// neither the client nor the verification has to encode or decode anything.
pub fn expected_b64(offset: u64, groups: usize) -> &'static [u8] {
    static ENCODED: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    let encoded = ENCODED.get_or_init(|| {
        [0, 1, 2].map(|align| {
            let from = &pattern()[align..];
            B64.encode(&from[..from.len() / 3 * 3]).into_bytes()
        })
    });
    assert!(groups * 3 <= MAX_SLICE, "pattern slice too long");
    let start = (offset % PERIOD as u64) as usize;
    let (align, group) = (start % 3, start / 3);
    &encoded[align][group * 4..(group + groups) * 4]
}

/// Checks `got` against the pattern at `offset`; the error names the first wrong byte.
pub fn verify(offset: u64, got: &[u8]) -> io::Result<()> {
    let want = expected(offset, got.len());
    if got == want {
        return Ok(());
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "data mismatch at stream byte {}: got {:#04x}, expected {:#04x}",
            offset + at as u64,
            got[at],
            want[at]
        ),
    ))
}

/// What a client asks the sink or the source for: 16 bytes, two little-endian u64s.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Number of pattern bytes to transfer.
    pub count: u64,
    /// Stream position of the first byte (each run starts somewhere else in the pattern).
    pub offset: u64,
}

impl Request {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    fn decode(b: &[u8; 16]) -> Request {
        Request {
            count: u64::from_le_bytes(b[..8].try_into().unwrap()),
            offset: u64::from_le_bytes(b[8..].try_into().unwrap()),
        }
    }
}

/// Addresses of the running targets.
#[derive(Clone)]
pub struct Targets {
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    pub source: SocketAddr,
    pub idle: IdleTarget,
}

/// Which target a tunnel leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Echo,
    Sink,
    Source,
    Idle,
}

impl Targets {
    /// Binds all four targets on ephemeral loopback ports and starts their accept threads.
    pub fn start() -> io::Result<Targets> {
        expected_b64(0, 0); // build the pattern and its encodings now, not in a timed part
        Ok(Targets {
            echo: serve("echo", echo)?,
            sink: serve("sink", sink)?,
            source: serve("source", source)?,
            idle: IdleTarget::start()?,
        })
    }

    pub fn addr(&self, which: Which) -> SocketAddr {
        match which {
            Which::Echo => self.echo,
            Which::Sink => self.sink,
            Which::Source => self.source,
            Which::Idle => self.idle.addr,
        }
    }
}

/// Binds a loopback listener and runs `handler` on a thread per accepted connection.
fn serve(name: &'static str, handler: fn(TcpStream) -> io::Result<()>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let _ = stream.set_nodelay(true);
                let spawned = thread::Builder::new()
                    .name(name.to_string())
                    .stack_size(TARGET_STACK)
                    .spawn(move || {
                        if let Err(e) = handler(stream)
                            && e.kind() == io::ErrorKind::InvalidData
                        {
                            eprintln!("wsbench: {name} target: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    eprintln!("wsbench: {name} target: cannot spawn a thread: {e}");
                }
            }
        })?;
    Ok(addr)
}

/// Echo: write back whatever arrives, half-close on EOF.
fn echo(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; TARGET_BUF];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return s.shutdown(Shutdown::Write);
        }
        s.write_all(&buf[..n])?;
    }
}

/// Sink: verify `count` pattern bytes, answer `K` or `E`, then wait for the client to go.
fn sink(mut s: TcpStream) -> io::Result<()> {
    let mut head = [0u8; Request::LEN];
    s.read_exact(&mut head)?;
    let req = Request::decode(&head);
    let mut buf = vec![0u8; TARGET_BUF];
    let mut done = 0u64;
    let mut result = Ok(());
    while done < req.count {
        let want = (req.count - done).min(buf.len() as u64) as usize;
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            result = Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sink: EOF after {done} of {} bytes", req.count),
            ));
            break;
        }
        if let Err(e) = verify(req.offset + done, &buf[..n]) {
            result = Err(e);
            break;
        }
        done += n as u64;
    }
    s.write_all(if result.is_ok() { b"K" } else { b"E" })?;
    drain(&mut s, &mut buf);
    result
}

/// Source: send `count` pattern bytes in 64 KiB writes, then wait for the client to close
/// (so the proxy's relaying process is still there when its CPU time is read; websockify
/// forks one per tunnel).
fn source(mut s: TcpStream) -> io::Result<()> {
    let mut head = [0u8; Request::LEN];
    s.read_exact(&mut head)?;
    let req = Request::decode(&head);
    let mut done = 0u64;
    while done < req.count {
        let n = (req.count - done).min(SOURCE_CHUNK as u64) as usize;
        s.write_all(expected(req.offset + done, n))?;
        done += n as u64;
    }
    drain(&mut s, &mut [0u8; 4096]);
    Ok(())
}

/// Reads and discards until EOF or an error (used to linger until the client closes).
fn drain(s: &mut TcpStream, buf: &mut [u8]) {
    while matches!(s.read(buf), Ok(n) if n > 0) {}
}

/// The idle target: parks every connection under the tunnel id the client sends first.
///
/// It runs no thread per connection (the idle test holds up to ~9,000 of them; the proxy's
/// threads are what is being counted). The test later takes each parked socket back with
/// [`IdleTarget::take`] and plays the target's part itself.
#[derive(Clone)]
pub struct IdleTarget {
    pub addr: SocketAddr,
    parked: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl IdleTarget {
    fn start() -> io::Result<IdleTarget> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let target = IdleTarget {
            addr: listener.local_addr()?,
            parked: Arc::default(),
        };
        let parked = Arc::clone(&target.parked);
        thread::Builder::new()
            .name("idle-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut s) = conn else { continue };
                    // A connection that never says who it is must not stall the others forever.
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.set_nodelay(true);
                    let mut id = [0u8; 8];
                    if s.read_exact(&mut id).is_ok() {
                        parked.lock().unwrap().insert(u64::from_le_bytes(id), s);
                    }
                }
            })?;
        Ok(target)
    }

    /// How many connections are parked right now.
    pub fn count(&self) -> usize {
        self.parked.lock().unwrap().len()
    }

    /// Removes and returns the socket of tunnel `id`, waiting up to `wait` for it to arrive.
    pub fn take(&self, id: u64, wait: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(s) = self.parked.lock().unwrap().remove(&id) {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_micros(100));
        }
    }

    /// Closes every parked socket.
    pub fn clear(&self) {
        self.parked.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_wraps_contiguously() {
        assert_eq!(
            expected(PERIOD as u64 - 3, 8),
            &pattern()[PERIOD - 3..PERIOD + 5]
        );
        assert_eq!(expected(PERIOD as u64, 16), &pattern()[..16]);
        assert!(verify(5, expected(5, 100)).is_ok());
        assert!(verify(6, expected(5, 100)).is_err());
        for offset in [0, 1, 2, 3, 1000, PERIOD as u64 - 4, PERIOD as u64 * 5 + 7] {
            assert_eq!(
                expected_b64(offset, 1000),
                B64.encode(expected(offset, 3000)).as_bytes()
            );
        }
    }
}

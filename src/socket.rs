//! One TCP socket shared by a tunnel's two threads, without duplicating its descriptor.
//!
//! `TcpStream::try_clone` would give each thread its own handle, but each clone is another
//! file descriptor, and a proxy holding thousands of tunnels runs into the open-files limit
//! (two descriptors per tunnel is the budget). `std` implements `Read` and `Write` for
//! `&TcpStream`, so both threads can use one socket through an `Arc`: the kernel serializes
//! reads and writes, and the tunnel's writer lock keeps frames whole.
//!
//! Also here: [`ClientSink`], the client's write half as the tunnel's writer sees it (with
//! writes that never wait, for the shutdown path), and [`lingering_close`], which closes a
//! connection without resetting it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A byte source a pump reads from, which may be able to wait for data without a buffer.
///
/// Waiting first lets an idle pump hold no relay buffer (see [`crate::buffers`]). A plain
/// socket waits with a one-byte `peek`; sources that may hold decoded data of their own (TLS)
/// cannot wait this way and keep their buffer.
pub trait Readable: Read + Send {
    /// Whether [`wait_readable`](Self::wait_readable) works for this source.
    fn can_wait(&self) -> bool {
        false
    }

    /// Blocks until a read would not block (data, end of stream, or an error).
    fn wait_readable(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Readable for Box<dyn Readable> {
    fn can_wait(&self) -> bool {
        (**self).can_wait()
    }

    fn wait_readable(&mut self) -> io::Result<()> {
        (**self).wait_readable()
    }
}

impl Readable for &[u8] {}

/// TLS waits only when rustls holds no plaintext or undecrypted input of its own (then the
/// socket's readiness is the whole story); see [`crate::tls::TlsReader::wait_readable`].
impl Readable for crate::tls::TlsReader {
    fn can_wait(&self) -> bool {
        true
    }

    fn wait_readable(&mut self) -> io::Result<()> {
        crate::tls::TlsReader::wait_readable(self)
    }
}

/// A TCP socket shared between threads.
#[derive(Debug, Clone)]
pub struct SharedSocket(pub Arc<TcpStream>);

impl SharedSocket {
    pub fn new(stream: TcpStream) -> Self {
        SharedSocket(Arc::new(stream))
    }

    /// Shuts down one or both directions, ignoring "not connected" (already closed).
    pub fn shutdown(&self, how: Shutdown) {
        let _ = self.0.shutdown(how);
    }
}

impl Read for SharedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Readable for SharedSocket {
    fn can_wait(&self) -> bool {
        true
    }

    fn wait_readable(&mut self) -> io::Result<()> {
        self.0.peek(&mut [0u8; 1]).map(|_| ())
    }
}

impl Write for SharedSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How long [`lingering_close`] waits after an HTTP response.
pub const HTTP_LINGER: Duration = Duration::from_secs(2);

/// Gets a connection ready to be closed without losing what was sent on it: sends FIN, then
/// reads and discards what the peer still sends until it closes its side too (EOF) or for at
/// most `within`. Closing a socket with unread input makes the kernel send a reset instead of
/// a FIN, and the peer's kernel then throws away what it had not yet read — the end of a
/// response or a Close frame still in flight (RFC 9112 §9.6, RFC 6455 §7.1.1).
pub fn lingering_close(stream: &TcpStream, within: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + within;
    let mut sink = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// The client's write half, as the tunnel's frame writer uses it (plain TCP or TLS).
///
/// Ordinary writes wait for the socket, for at most its write timeout (the stall limit) per
/// write that makes no progress. The `_now` methods never wait: they are for the shutdown
/// path, which must not block on a client that stopped reading.
pub trait ClientSink: Write + Send {
    /// Writes what the socket takes right now, without waiting; `Ok(0)` if it takes nothing.
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize>;

    /// Sends bytes accepted earlier but held back (TLS records) without waiting; whether
    /// nothing is left.
    fn flush_now(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Ends the stream: nothing more will be written (TLS: `close_notify`, waiting a
    /// bounded time), then FIN.
    fn finish(&mut self);

    /// Like [`finish`](Self::finish) without waiting; whether it is done (TLS may still
    /// hold its `close_notify`; call again).
    fn finish_now(&mut self) -> bool;
}

impl ClientSink for SharedSocket {
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // MSG_DONTWAIT makes this one call non-blocking; the socket itself stays blocking
        // for the pumps (O_NONBLOCK would be shared with the other thread's reads).
        match socket2::SockRef::from(&*self.0).send_with_flags(bytes, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            other => other,
        }
    }

    fn finish(&mut self) {
        self.shutdown(Shutdown::Write);
    }

    fn finish_now(&mut self) -> bool {
        self.shutdown(Shutdown::Write);
        true
    }
}

/// TLS defers to the connection's own non-blocking record queue; see
/// [`crate::tls::TlsWriter::write_now`].
impl ClientSink for crate::tls::TlsWriter {
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        crate::tls::TlsWriter::write_now(self, bytes)
    }

    fn flush_now(&mut self) -> io::Result<bool> {
        crate::tls::TlsWriter::flush_now(self)
    }

    fn finish(&mut self) {
        self.close_notify();
        self.socket().shutdown(Shutdown::Write);
    }

    fn finish_now(&mut self) -> bool {
        let done = self.close_notify_now();
        if done {
            self.socket().shutdown(Shutdown::Write);
        }
        done
    }
}

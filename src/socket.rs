//! One TCP socket shared by a tunnel's two threads, without duplicating its descriptor.
//!
//! `TcpStream::try_clone` would give each thread its own handle, but each clone is another
//! file descriptor, and a proxy holding thousands of tunnels runs into the open-files limit
//! (two descriptors per tunnel is the budget). `std` implements `Read` and `Write` for
//! `&TcpStream`, so both threads can use one socket through an `Arc`: the kernel serializes
//! reads and writes, and the tunnel's writer lock keeps frames whole.

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

/// Closes a connection after an HTTP error response without losing the response: send FIN,
/// then read and discard what the client still sends (for a short while), so closing does not
/// turn into a reset that could destroy the response in flight (RFC 9112 §9.6).
pub fn lingering_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 4096];
    let mut discarded = 0usize;
    while discarded < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

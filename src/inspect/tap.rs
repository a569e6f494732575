//! Taps: a reader or writer that shows every chunk passing through it to an [`Observer`].
//!
//! A tap does not change what passes: a read returns what the inner reader returned, a write
//! writes what the inner writer accepted. After each successful call it hands the bytes that
//! actually moved (`buf[..n]`) to the observer, then returns. The observer must be quick — it
//! runs on the pump's thread, between two system calls — so the observers here copy at most
//! once into a channel ([`super::recorder`]) or bump counters and parse frame headers
//! ([`super::live`]).
//!
//! Ends are observed too, because a recording needs the TCP FIN of each side (RFC 9293 §3.6):
//! a read that returns 0 is the sender's end of stream, and dropping a writer is ours — the
//! tunnel drops a writer right before it shuts down that direction of the socket.
//!
//! ## How the proxy uses this
//!
//! With no feature on, no tap exists. With `--record` or `--admin`, `connection` wraps, once
//! the transport is known (after TLS), the client's reader as
//! `TapReader::new(reader, Flow::ClientToProxy, observer)` and its writer as
//! `TapWriter::new(writer, Flow::ProxyToClient, observer)`, and after the target connects the
//! target's reader and writer with `TargetToProxy` and `ProxyToTarget`. Two observers (a
//! recording and a live tunnel) are two taps stacked. The cost when on is one virtual call and
//! the observer's work per read or write.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use super::Flow;
use crate::socket::Readable;

/// Something that watches a tunnel's byte streams.
pub trait Observer: Send + Sync {
    /// `bytes` just crossed `flow` (in this order, on this flow; flows are not ordered among
    /// themselves).
    fn bytes(&self, flow: Flow, bytes: &[u8]);

    /// The sender of `flow` has finished: nothing more will cross it.
    fn finished(&self, _flow: Flow) {}
}

/// A reader that shows what it reads.
pub struct TapReader<R> {
    inner: R,
    flow: Flow,
    observer: Arc<dyn Observer>,
    ended: bool,
}

impl<R> TapReader<R> {
    pub fn new(inner: R, flow: Flow, observer: Arc<dyn Observer>) -> Self {
        TapReader {
            inner,
            flow,
            observer,
            ended: false,
        }
    }
}

impl<R: Read> Read for TapReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.observer.bytes(self.flow, &buf[..n]);
        } else if !buf.is_empty() && !self.ended {
            self.ended = true;
            self.observer.finished(self.flow);
        }
        Ok(n)
    }
}

impl<R: Readable> Readable for TapReader<R> {
    fn can_wait(&self) -> bool {
        self.inner.can_wait()
    }

    fn wait_readable(&mut self) -> io::Result<()> {
        self.inner.wait_readable()
    }
}

/// A writer that shows what it writes, and its own end when dropped.
pub struct TapWriter<W: Write> {
    inner: W,
    flow: Flow,
    observer: Arc<dyn Observer>,
}

impl<W: Write> TapWriter<W> {
    pub fn new(inner: W, flow: Flow, observer: Arc<dyn Observer>) -> Self {
        TapWriter {
            inner,
            flow,
            observer,
        }
    }
}

impl<W: Write> Write for TapWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.observer.bytes(self.flow, &buf[..n]);
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let part = &buf[..left.min(buf.len())];
            if !part.is_empty() {
                self.observer.bytes(self.flow, part);
            }
            left -= part.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for TapWriter<W> {
    fn drop(&mut self) {
        let _ = self.inner.flush();
        self.observer.finished(self.flow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Mutex;

    /// Collects what it is shown.
    #[derive(Default)]
    struct Seen(Mutex<Vec<(Flow, Option<Vec<u8>>)>>);

    impl Observer for Seen {
        fn bytes(&self, flow: Flow, bytes: &[u8]) {
            self.0.lock().unwrap().push((flow, Some(bytes.to_vec())));
        }
        fn finished(&self, flow: Flow) {
            self.0.lock().unwrap().push((flow, None));
        }
    }

    #[test]
    fn a_socket_pair_through_taps_shows_every_byte_and_both_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let seen = Arc::new(Seen::default());
        let observer: Arc<dyn Observer> = seen.clone();

        let mut writer = TapWriter::new(&client, Flow::ClientToProxy, Arc::clone(&observer));
        writer.write_all(b"hello ").unwrap();
        let parts = [IoSlice::new(b"vectored "), IoSlice::new(b"world")];
        let n = writer.write_vectored(&parts).unwrap();
        writer.write_all(&b"vectored world"[n..]).unwrap();
        drop(writer);
        client.shutdown(Shutdown::Write).unwrap();

        let mut reader = TapReader::new(&server, Flow::TargetToProxy, observer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello vectored world");

        let seen = seen.0.lock().unwrap();
        let concat = |flow: Flow| -> Vec<u8> {
            seen.iter()
                .filter(|(f, b)| *f == flow && b.is_some())
                .flat_map(|(_, b)| b.clone().unwrap())
                .collect()
        };
        assert_eq!(concat(Flow::ClientToProxy), b"hello vectored world");
        assert_eq!(concat(Flow::TargetToProxy), b"hello vectored world");
        let ends: Vec<Flow> = seen
            .iter()
            .filter(|(_, b)| b.is_none())
            .map(|(f, _)| *f)
            .collect();
        assert_eq!(ends, [Flow::ClientToProxy, Flow::TargetToProxy]);
    }
}

//! The established connection, split into a [`TlsReader`] and a [`TlsWriter`] that share one
//! `rustls::Connection` (the design is explained in the `tls` module's document).
//!
//! The socket I/O happens outside the connection's lock. Records reach the socket in the order
//! rustls produced them, as their implicit sequence numbers require (RFC 8446 §5.3); records the
//! reader's processing produces (alerts, RFC 8446 §6.2) go out without the reader ever waiting
//! for the writer; the answer to a peer's `key_update` rides with our next record (RFC 8446
//! §4.6.3); and `close_notify` ends each direction (RFC 8446 §6.1).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rustls::Connection;

use super::TlsInfo;
use crate::socket::SharedSocket;

/// Ciphertext read from the socket per `read()` (two full TLS records).
pub(super) const READ_BUF: usize = 32 * 1024;

/// At most this much plaintext is encrypted per lock of the connection by one `write()`.
pub const MAX_BATCH: usize = 128 * 1024;

/// How long sending our `close_notify` may block (the peer may have stopped reading).
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drains every queued record into `out`.
pub(super) fn drain(conn: &mut Connection, out: &mut Vec<u8>) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    Ok(())
}

/// Writes `out` to the socket and empties it (even on error).
pub(super) fn write_out(socket: &SharedSocket, out: &mut Vec<u8>) -> io::Result<()> {
    let result = if out.is_empty() {
        Ok(())
    } else {
        (&*socket.0).write_all(out)
    };
    out.clear();
    result
}

/// Splits an established connection into its two halves. `out` is the (empty) staging buffer
/// for ciphertext; `buf[start..end]` is ciphertext already read from the socket but not yet fed
/// to rustls (the reader keeps `buf` as its input buffer).
pub(super) fn split(
    conn: Connection,
    socket: SharedSocket,
    info: TlsInfo,
    out: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
) -> (TlsReader, TlsWriter) {
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        out: Mutex::new(out),
        flush_wanted: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        socket,
        info,
    });
    (
        TlsReader {
            shared: Arc::clone(&shared),
            buf,
            start,
            end,
        },
        TlsWriter {
            shared,
            closed: false,
        },
    )
}

/// What both halves share. Lock order: `out`, then `conn`.
struct Shared {
    /// The TLS state machine. Held only for CPU work, never across socket I/O.
    conn: Mutex<rustls::Connection>,
    /// Ciphertext on its way to the socket: empty between writes, except for records a
    /// write that may not wait ([`TlsWriter::write_now`]) could not send yet, which every
    /// later write sends first. Holding this lock is the right to take records out of `conn`
    /// and to write the socket, so records go out in the order produced.
    out: Mutex<Vec<u8>>,
    /// The reader queued records but could not take `out`; whoever holds it sends them.
    flush_wanted: AtomicBool,
    /// A fatal TLS error happened (an alert was queued); nothing more may be sent.
    failed: AtomicBool,
    socket: SharedSocket,
    info: TlsInfo,
}

impl Shared {
    /// Sends every queued record. Called with `out` held.
    fn send_queued(&self, out: &mut Vec<u8>) -> io::Result<()> {
        drain(&mut lock(&self.conn), out)?;
        write_out(&self.socket, out)
    }

    /// From the reader: send records its processing queued, without ever waiting for `out`.
    fn flush_from_reader(&self) {
        self.flush_wanted.store(true, Ordering::Release);
        let mut out = match self.out.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // The holder sends them after releasing `out` (it checks `flush_wanted`).
            Err(TryLockError::WouldBlock) => return,
        };
        self.flush_wanted.store(false, Ordering::Release);
        let _ = self.send_queued(&mut out);
    }

    /// From the writer, after releasing `out`: send what the reader left behind.
    fn flush_requested(&self) {
        while self.flush_wanted.swap(false, Ordering::AcqRel) {
            let mut out = lock(&self.out);
            let _ = self.send_queued(&mut out);
        }
    }
}

/// The plaintext read half: `Read` + `Send`. `Ok(0)` after the peer's `close_notify`; a TCP
/// EOF without it, or bad TLS data, is an error. Socket errors (including read timeouts set
/// on the socket) pass through unchanged and leave the stream usable.
pub struct TlsReader {
    shared: Arc<Shared>,
    /// Ciphertext read from the socket; `buf[start..end]` is not yet fed to rustls. Empty
    /// (freed) while [`TlsReader::wait_readable`] waits on an idle connection.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReader")
            .field("info", &self.shared.info)
            .finish_non_exhaustive()
    }
}

impl TlsReader {
    /// What was negotiated.
    pub fn info(&self) -> &TlsInfo {
        &self.shared.info
    }

    /// Whether a read returns without touching the socket: decrypted bytes are waiting, or
    /// received ciphertext not yet decrypted, or the stream has ended.
    pub fn has_buffered(&self) -> bool {
        if self.start < self.end {
            return true;
        }
        // Everything fed was processed already, so this only reports the state (a TLS error
        // counts as "a read returns at once", with that error).
        lock(&self.shared.conn)
            .process_new_packets()
            .map(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
            .unwrap_or(true)
    }

    /// For readers that free their buffers while idle: returns at once if a read would find
    /// something buffered ([`TlsReader::has_buffered`]); otherwise frees this reader's input
    /// buffer and blocks, without any lock, until the socket has data or has ended (a peek:
    /// nothing is consumed). The next read may still wait for the rest of a record.
    pub fn wait_readable(&mut self) -> io::Result<()> {
        if self.has_buffered() {
            return Ok(());
        }
        self.buf = Vec::new();
        (self.start, self.end) = (0, 0);
        self.shared.socket.0.peek(&mut [0u8; 1]).map(|_| ())
    }

    /// Takes decrypted bytes if there are any, feeding buffered ciphertext as needed.
    /// `None` means: nothing left to feed, read the socket. Holds `conn` only inside.
    fn take_plaintext(&mut self, dst: &mut [u8]) -> Option<io::Result<usize>> {
        let shared = &*self.shared;
        let mut flush = false;
        let result = {
            let mut conn = lock(&shared.conn);
            loop {
                match conn.reader().read(dst) {
                    // Data, or 0 after close_notify.
                    Ok(n) => break Some(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        break Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS peer closed the connection without close_notify",
                        )));
                    }
                    Err(e) => break Some(Err(e)),
                }
                if self.start == self.end {
                    break None;
                }
                let mut pending = &self.buf[self.start..self.end];
                match conn.read_tls(&mut pending) {
                    // After close_notify rustls reads nothing more: drop the rest.
                    Ok(0) => self.start = self.end,
                    Ok(fed) => self.start += fed,
                    Err(e) => {
                        break Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("TLS input refused: {e}"),
                        )));
                    }
                }
                if let Err(e) = conn.process_new_packets() {
                    shared.failed.store(true, Ordering::Release);
                    flush = conn.wants_write();
                    break Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS error: {e}"),
                    )));
                }
                flush |= conn.wants_write();
            }
        };
        if flush {
            shared.flush_from_reader();
        }
        result
    }
}

impl Read for TlsReader {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(result) = self.take_plaintext(dst) {
                return result;
            }
            // Nothing decrypted and nothing buffered: wait for the peer, holding no lock.
            (self.start, self.end) = (0, 0);
            if self.buf.is_empty() {
                self.buf = vec![0u8; READ_BUF];
            }
            let n = (&*self.shared.socket.0).read(&mut self.buf)?;
            if n == 0 {
                // Tell rustls about the EOF; the next round reports Ok(0) if close_notify
                // came first, or UnexpectedEof.
                let mut empty: &[u8] = &[];
                let _ = lock(&self.shared.conn).read_tls(&mut empty);
            }
            self.end = n;
        }
    }
}

/// The plaintext write half: `Write` + `Send`. Every `write` encrypts and sends before
/// returning (`flush` has nothing to do). Sends `close_notify` on [`TlsWriter::close_notify`]
/// or on drop.
pub struct TlsWriter {
    shared: Arc<Shared>,
    closed: bool,
}

impl fmt::Debug for TlsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWriter")
            .field("info", &self.shared.info)
            .finish_non_exhaustive()
    }
}

impl TlsWriter {
    /// Sends `close_notify` (RFC 8446 §6.1) once: nothing more will be written. Waits at most
    /// a couple of seconds for the socket (sets its write timeout), errors are ignored: the
    /// connection is closing anyway.
    pub fn close_notify(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        let shared = &*self.shared;
        let mut out = lock(&shared.out);
        let _ = shared
            .socket
            .0
            .set_write_timeout(Some(CLOSE_NOTIFY_TIMEOUT));
        {
            let mut conn = lock(&shared.conn);
            conn.send_close_notify();
            let _ = drain(&mut conn, &mut out);
        }
        let _ = write_out(&shared.socket, &mut out);
        drop(out);
        shared.flush_requested();
    }
}

impl TlsWriter {
    /// The socket under this connection.
    pub fn socket(&self) -> &SharedSocket {
        &self.shared.socket
    }

    /// Like `write`, but never waits for the socket: encrypts what rustls takes of `data`
    /// and sends what the socket takes right now; the rest of the records stays queued in
    /// rustls, in order, and goes out first with the next write (or [`Self::flush_now`]).
    /// Returns how much plaintext was taken: 0 while the reader is using the socket, or
    /// when rustls's queue is full.
    pub fn write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        self.usable()?;
        let shared = &*self.shared;
        let Some(mut out) = try_lock(&shared.out) else {
            return Ok(0);
        };
        let taken = {
            let mut conn = lock(&shared.conn);
            let taken = conn.writer().write(data)?;
            drain(&mut conn, &mut out)?;
            taken
        };
        send_now(&mut out, shared)?;
        Ok(taken)
    }

    /// Sends records still queued after [`Self::write_now`] without waiting; whether none
    /// are left.
    pub fn flush_now(&mut self) -> io::Result<bool> {
        let shared = &*self.shared;
        let Some(mut out) = try_lock(&shared.out) else {
            return Ok(false);
        };
        drain(&mut lock(&shared.conn), &mut out)?;
        send_now(&mut out, shared)
    }

    /// [`Self::close_notify`] without waiting: queues it (once) and sends what the socket
    /// takes; whether everything went out (else call again).
    pub fn close_notify_now(&mut self) -> bool {
        if self.shared.failed.load(Ordering::Acquire) {
            self.closed = true;
            return true;
        }
        let shared = &*self.shared;
        let Some(mut out) = try_lock(&shared.out) else {
            return false;
        };
        {
            let mut conn = lock(&shared.conn);
            if !self.closed {
                self.closed = true;
                conn.send_close_notify();
            }
            if drain(&mut conn, &mut out).is_err() {
                return true;
            }
        }
        send_now(&mut out, shared).unwrap_or(true)
    }

    /// Whether writes may still go out.
    fn usable(&self) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS close_notify already sent",
            ));
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "TLS connection failed",
            ));
        }
        Ok(())
    }
}

/// `try_lock`, ignoring poisoning; `None` if another thread holds the lock.
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Sends what the socket takes right now of the records in `out` (called with `out` held, so
/// records still go out in order; no other lock is held). What it does not take stays in
/// `out`, where the next writer sends it first. Whether nothing is left.
fn send_now(out: &mut Vec<u8>, shared: &Shared) -> io::Result<bool> {
    let socket = socket2::SockRef::from(&*shared.socket.0);
    let mut sent = 0;
    let result = loop {
        if sent == out.len() {
            // Whatever the reader had queued went out too.
            shared.flush_wanted.store(false, Ordering::Release);
            break Ok(true);
        }
        // MSG_DONTWAIT: this call never waits; the socket stays blocking for everyone else.
        match socket.send_with_flags(&out[sent..], libc::MSG_DONTWAIT) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    out.drain(..sent);
    result
}

impl Write for TlsWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.usable()?;
        if data.is_empty() {
            return Ok(0);
        }
        let shared = &*self.shared;
        let mut out = lock(&shared.out);
        let mut taken = 0;
        let encrypted = {
            let mut conn = lock(&shared.conn);
            let mut result = Ok(());
            while taken < data.len() && out.len() < MAX_BATCH {
                let end = data.len().min(taken + MAX_BATCH);
                match conn.writer().write(&data[taken..end]) {
                    Ok(0) => break,
                    Ok(n) => taken += n,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                if let Err(e) = drain(&mut conn, &mut out) {
                    result = Err(e);
                    break;
                }
            }
            result
        };
        // Records already taken out of rustls must go out whatever happened, in order.
        let sent = write_out(&shared.socket, &mut out);
        drop(out);
        shared.flush_requested();
        encrypted?;
        sent?;
        if taken == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "TLS connection accepts no more data",
            ));
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TlsWriter {
    fn drop(&mut self) {
        self.close_notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsServer;
    use crate::tls::test_support::*;
    use std::net::Shutdown;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    #[test]
    fn full_duplex_4mib_both_ways_at_once() {
        let pki = make_pki("duplex", "Duplex");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        assert_eq!(sr.info().server_name.as_deref(), Some("localhost"));
        assert!(cr.info().version.contains("1_3"), "{}", cr.info());

        const N: usize = 4 << 20;
        let up = pattern(1, N);
        let down = pattern(2, N);
        // Four threads: each side writes 4 MiB while its other thread reads 4 MiB. Both
        // directions fill their socket buffers, so a design where a blocked writer stopped the
        // reader (or the reverse) would deadlock here.
        let (done_tx, done_rx) = mpsc::channel();
        let mut handles = Vec::new();
        {
            let up = up.clone();
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                write_chunks(&mut cw, &up);
                drop(cw); // close_notify
                tx.send("client writer").unwrap();
            }));
        }
        {
            let down = down.clone();
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                write_chunks(&mut sw, &down);
                sw.close_notify();
                tx.send("server writer").unwrap();
                drop(sw);
            }));
        }
        {
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                let got = read_exactly(&mut sr, N);
                assert!(got == up, "upload corrupted");
                let mut b = [0u8; 16];
                assert_eq!(sr.read(&mut b).unwrap(), 0, "close_notify is EOF");
                tx.send("server reader").unwrap();
            }));
        }
        {
            let tx = done_tx.clone();
            handles.push(thread::spawn(move || {
                let got = read_exactly(&mut cr, N);
                assert!(got == down, "download corrupted");
                let mut b = [0u8; 16];
                assert_eq!(cr.read(&mut b).unwrap(), 0, "close_notify is EOF");
                tx.send("client reader").unwrap();
            }));
        }
        drop(done_tx);
        for _ in 0..4 {
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a TLS thread hung or panicked");
        }
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn echo_4mib_with_concurrent_reader() {
        let pki = make_pki("echo", "Echo");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "127.0.0.1").unwrap();
        // Server: echo on one thread (read from one half, write the other).
        let echo = thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match sr.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sw.write_all(&buf[..n]).unwrap(),
                    Err(e) => panic!("server read: {e}"),
                }
            }
        });
        const N: usize = 4 << 20;
        let data = pattern(3, N);
        let expected = data.clone();
        let reader = thread::spawn(move || read_exactly(&mut cr, N));
        write_chunks(&mut cw, &data);
        let got = reader.join().unwrap();
        assert!(got == expected, "echo corrupted");
        drop(cw);
        echo.join().unwrap();
    }

    #[test]
    fn blocked_reader_does_not_stop_writer() {
        let pki = make_pki("blocked", "Blocked");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        // The server's reader blocks: the client sends nothing yet.
        let (tx, rx) = mpsc::channel();
        let blocked = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let n = sr.read(&mut buf).unwrap();
            tx.send(buf[..n].to_vec()).unwrap();
        });
        thread::sleep(Duration::from_millis(100));
        // Meanwhile the server writes 1 MiB, and the client reads it.
        let data = pattern(4, 1 << 20);
        let started = Instant::now();
        let writer = {
            let data = data.clone();
            thread::spawn(move || {
                sw.write_all(&data).unwrap();
                sw
            })
        };
        assert!(read_exactly(&mut cr, data.len()) == data);
        assert!(started.elapsed() < Duration::from_secs(10));
        let _sw = writer.join().unwrap();
        assert!(rx.try_recv().is_err(), "the reader was still waiting");
        cw.write_all(b"wake up").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"wake up");
        blocked.join().unwrap();
    }

    #[test]
    fn key_updates_mid_stream() {
        // The client refreshes its keys mid-stream (RFC 8446 §4.6.3, update_requested). The
        // server's reader switches its read keys; rustls queues the server's own key_update in
        // front of the server's next record. Both directions must keep working.
        let pki = make_pki("keyupdate", "KeyUpdate");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        for round in 0..3u8 {
            lock(&cw.shared.conn).refresh_traffic_keys().unwrap();
            cw.write_all(&[round; 100]).unwrap();
            assert_eq!(read_exactly(&mut sr, 100), vec![round; 100]);
            sw.write_all(&[round + 10; 50]).unwrap();
            assert_eq!(read_exactly(&mut cr, 50), vec![round + 10; 50]);
        }
    }

    #[test]
    fn eof_without_close_notify_is_an_error() {
        let pki = make_pki("eof", "Eof");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((cr, cw), (mut sr, _sw)) = tls_pair(&server, &client, "localhost").unwrap();
        let socket = cw.shared.socket.clone();
        // Shut the TCP connection without close_notify (as a crashed peer would).
        std::mem::forget(cw);
        socket.shutdown(Shutdown::Both);
        let mut b = [0u8; 8];
        let err = sr.read(&mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        drop(cr);
    }

    #[test]
    fn corrupt_record_is_an_error_and_the_reader_sends_the_alert() {
        let pki = make_pki("corrupt", "Corrupt");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, cw), (mut sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        // An application-data record that cannot decrypt, written under the TLS layer.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x30];
        record.extend(pattern(5, 0x30));
        (&*cw.shared.socket.0).write_all(&record).unwrap();
        let err = sr.read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("TLS error"), "{err}");
        // The server's reader sent the bad_record_mac alert itself (the server never writes).
        let err = cr.read(&mut [0u8; 64]).unwrap_err();
        assert!(err.to_string().contains("BadRecordMac"), "{err}");
        // And nothing more is sent after a fatal error.
        assert!(sw.write(b"x").is_err());
        std::mem::forget(cw); // its close_notify would go to a dead connection
    }

    #[test]
    fn wait_readable_frees_the_buffer_and_wakes_on_data() {
        let pki = make_pki("wait", "Wait");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((_cr, mut cw), (mut sr, _sw)) = tls_pair(&server, &client, "localhost").unwrap();
        assert!(!sr.has_buffered());
        let waiter = thread::spawn(move || {
            sr.wait_readable().unwrap();
            assert!(sr.buf.is_empty(), "the input buffer is freed while idle");
            let mut b = [0u8; 3];
            assert_eq!(sr.read(&mut b).unwrap(), 3);
            assert_eq!(&b, b"abc");
            // More was sent than read: it is buffered now, so no waiting.
            assert!(sr.has_buffered());
            sr.wait_readable().unwrap();
            assert_eq!(read_exactly(&mut sr, 3), b"def");
        });
        thread::sleep(Duration::from_millis(100));
        cw.write_all(b"abcdef").unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn write_after_close_notify_is_refused() {
        let pki = make_pki("closed", "Closed");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        let ((mut cr, _cw), (_sr, mut sw)) = tls_pair(&server, &client, "localhost").unwrap();
        sw.write_all(b"last").unwrap();
        sw.close_notify();
        assert!(sw.write(b"more").is_err());
        assert_eq!(read_exactly(&mut cr, 4), b"last");
        let mut b = [0u8; 8];
        assert_eq!(cr.read(&mut b).unwrap(), 0);
    }
}

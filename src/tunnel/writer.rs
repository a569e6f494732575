//! The frame-atomic writer: the only way a tunnel writes to its client.
//!
//! Three producers write to the client: the download pump (data frames, already Base64-encoded
//! in the Base64 modes), the upload pump (Pongs, heartbeat Pings, Closes) and a graceful
//! shutdown (Close 1001). Every frame goes through one `crossbeam-channel` queue, in order.
//! Writing is a *role*, not a thread: after sending a frame into the queue, a producer tries to
//! take the role (a mutex around the client's write half, [`ClientSink`]) and, if it gets it,
//! writes everything waiting in the queue. What that gives:
//!
//! - **Whole frames.** Only the role's holder writes, a frame at a time, so the bytes of two
//!   frames never interleave. (Control frames may come between the frames of a fragmented
//!   message, RFC 6455 §5.4, but never inside a frame.) A holder that may not wait and finds
//!   the socket full keeps the rest of its frame as *unfinished*; the next holder writes that
//!   first.
//! - **A Pong waits for at most one data frame.** The download pump waits for the role after
//!   each data frame it sends, until that frame is written; so at most one data frame is ever
//!   queued or being written, and a control frame queued meanwhile goes out right after it.
//!   The upload pump and the shutdown only *try* to take the role: if another thread holds it,
//!   that thread writes their frame next.
//! - **Nothing is stranded.** A holder that releases the role looks at the queue once more,
//!   and takes the role again if a frame arrived meanwhile. The orderings that make this
//!   airtight: a producer does *send; SeqCst fence; try to take the role*, a holder does
//!   *release; SeqCst fence; look at the queue*. The two fences are totally ordered: if the
//!   producer's comes first, the holder's look sees the frame; if the holder's comes first,
//!   the producer's attempt sees the role free (or held by a third thread, which then looks
//!   at the queue in the same way).
//! - **One close state.** Our Close decides everything (RFC 6455 §5.5.1: after sending a
//!   Close, an endpoint sends no more data): the first Close queued sets [`ClientWriter`]'s
//!   `closing` flag, after which data frames are refused ([`SendError::Closing`]) and control
//!   frames dropped; the holder drops anything that raced in behind the Close, and after
//!   writing the Close ends the stream (TLS `close_notify`, then FIN).
//! - **No write waits for ever.** A write waits for the socket for at most its write timeout
//!   (the stall limit) without progress; the first write error ends all writing, and the
//!   producers learn it ([`SendError::Failed`]). The shutdown's writes never wait at all.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, error};

use crate::buffers::Filled;
use crate::framing::{CloseInfo, Controls};
use crate::socket::ClientSink;

/// Control frames that may wait in the queue at once (a Pong and a heartbeat Ping); beyond
/// that a Pong is dropped: a client that floods Pings while the writer is busy gets answers
/// to some of them only, as RFC 6455 §5.5.3 allows. (Small, because every idle tunnel holds
/// its queue.)
const QUEUED_CONTROLS: usize = 2;
/// The queue's size: the controls, the one data frame, the one Close. So sending a data frame
/// or the Close never waits for room.
const QUEUE: usize = QUEUED_CONTROLS + 2;

/// Why a frame was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SendError {
    /// Our Close was sent already; no more data may follow (RFC 6455 §5.5.1).
    Closing,
    /// Writing to the client failed or stalled; nothing more will be written. The reason.
    Failed(String),
}

/// How a producer takes its turn at the role after sending its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// Wait for the role, and let writes wait for the socket (the download pump).
    Wait,
    /// Take the role only if it is free; writes may wait (the upload pump).
    Try,
    /// Take the role only if it is free; writes never wait (the shutdown).
    NoWait,
}

/// One frame on its way to the client.
enum Outgoing {
    /// A data frame, in the pool buffer the encoder built it in.
    Data(Filled),
    /// A Pong or a heartbeat Ping.
    Control(Vec<u8>),
    /// Our Close (empty for hixie-75, whose close is the end of the stream).
    Close(Vec<u8>),
}

impl Outgoing {
    fn bytes(&self) -> &[u8] {
        match self {
            Outgoing::Data(frame) => frame,
            Outgoing::Control(frame) | Outgoing::Close(frame) => frame,
        }
    }
}

/// Writes frames to one client, whole frames at a time, from any thread.
pub(super) struct ClientWriter {
    /// For log lines.
    id: u64,
    controls: Controls,
    queue: Sender<Outgoing>,
    waiting: Receiver<Outgoing>,
    /// Our Close is queued: the tunnel's close state. Nothing but that Close goes out.
    closing: AtomicBool,
    role: Mutex<Role>,
    /// A copy of the role's `failed`, readable without waiting for the role.
    failure: Mutex<Option<String>>,
}

/// What the holder of the role owns: the client's write half and how far writing got.
struct Role {
    out: Box<dyn ClientSink>,
    /// How long a write may make no progress before it fails (for the reason it gives).
    stall: Duration,
    /// A frame a holder that could not wait left half-written, and how much of it went out.
    unfinished: Option<(Outgoing, usize)>,
    /// The Close went out: anything queued behind it is dropped.
    close_written: bool,
    /// The stream was ended (TLS `close_notify`, FIN).
    finished: bool,
    /// The first write error: nothing more is written.
    failed: Option<String>,
    /// A data frame was dropped because it came behind the Close (for the download pump).
    dropped_data: bool,
    /// The buffer of the last data frame written, for the download pump to build its next
    /// frame in (no round trip through the buffer pool per frame).
    written: Option<Filled>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

impl ClientWriter {
    /// A writer over `out`, whose socket's write timeout is `stall`.
    pub(super) fn new(
        id: u64,
        controls: Controls,
        out: Box<dyn ClientSink>,
        stall: Duration,
    ) -> ClientWriter {
        let (queue, waiting) = crossbeam_channel::bounded(QUEUE);
        ClientWriter {
            id,
            controls,
            queue,
            waiting,
            closing: AtomicBool::new(false),
            role: Mutex::new(Role {
                out,
                stall,
                unfinished: None,
                close_written: false,
                finished: false,
                failed: None,
                dropped_data: false,
                written: None,
            }),
            failure: Mutex::new(None),
        }
    }

    /// Sends one data frame and returns once it is written (by this thread or by the holder
    /// of the role), with the frame's buffer for the next one when it is at hand. For the
    /// download pump only: it never has two frames queued.
    pub(super) fn send_data(&self, frame: Filled) -> Result<Option<Filled>, SendError> {
        if self.closing() {
            return Err(SendError::Closing);
        }
        // There is always room (see QUEUE), so this never waits.
        let _ = self.queue.send(Outgoing::Data(frame));
        self.take_turn(Turn::Wait, true)
            .expect("waiting takes the role")
    }

    /// Sends a control frame (Pong, heartbeat Ping): written now if the role is free, else by
    /// its holder right after the frame it is writing. Dropped after our Close, or when
    /// [`QUEUED_CONTROLS`] wait already. An error only if writing has failed.
    pub(super) fn send_control(&self, frame: Vec<u8>) -> Result<(), SendError> {
        if self.closing() {
            return Ok(());
        }
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Outgoing::Control(frame)) {
            debug!(
                "[#{}] control frame dropped: the client is not reading",
                self.id
            );
        }
        let _ = self.take_turn(Turn::Try, false);
        self.failure()
    }

    /// Queues our Close, unless one was queued already (the first Close wins, and answers
    /// the client's with the same code, RFC 6455 §5.5.1), and takes a `turn` at writing.
    /// Returns whether this call queued it.
    pub(super) fn send_close(&self, close: Option<&CloseInfo>, turn: Turn) -> bool {
        if self.closing.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some(close) = close {
            debug!(
                "[#{}] proxy→client close {}",
                self.id,
                crate::logging::escape(&close.to_string())
            );
        }
        if self
            .queue
            .try_send(Outgoing::Close(self.controls.close(close)))
            .is_err()
        {
            // Cannot happen: the queue keeps room for the one Close (see QUEUE).
            error!("[#{}] no room for our Close in the queue", self.id);
        }
        let _ = self.take_turn(turn, false);
        true
    }

    /// Whether our Close is queued (nothing but it goes out any more).
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Why writing failed, if it did (never waits for the role).
    pub(super) fn failure(&self) -> Result<(), SendError> {
        match &*lock(&self.failure) {
            Some(why) => Err(SendError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Drains as the holder of `role`, and publishes a failure for [`Self::failure`].
    fn drain(&self, role: &mut Role, no_wait: bool) -> bool {
        let all_out = role.drain(&self.waiting, no_wait);
        if let Some(why) = &role.failed {
            lock(&self.failure).get_or_insert_with(|| why.clone());
        }
        all_out
    }

    /// Nothing more will be sent: waits for the role, writes what is queued (our Close,
    /// if there is one), and ends the stream (TLS `close_notify`, then FIN).
    pub(super) fn finish(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let mut role = lock(&self.role);
        self.drain(&mut role, false);
        role.end_stream(false);
    }

    /// Writes what the socket takes now of what is waiting, without waiting for anything
    /// (the shutdown path, again and again while it drains). Whether everything is out.
    pub(super) fn push_now(&self) -> bool {
        match try_lock(&self.role) {
            Some(mut role) => self.drain(&mut role, true),
            None => false,
        }
    }

    /// Takes a turn at the role after sending a frame. Returns `None` if the role was busy
    /// (its holder writes our frame), else how writing stands after this thread's drain (for
    /// the download pump, `for_data`: whether its frame came behind the Close, or else the
    /// written frame's buffer).
    fn take_turn(&self, turn: Turn, for_data: bool) -> Option<Result<Option<Filled>, SendError>> {
        let no_wait = turn == Turn::NoWait;
        // See the module doc: send; fence; try to take the role.
        fence(Ordering::SeqCst);
        let mut role = match turn {
            Turn::Wait => lock(&self.role),
            Turn::Try | Turn::NoWait => try_lock(&self.role)?,
        };
        let mut all_out = self.drain(&mut role, no_wait);
        let status = role.status(for_data);
        loop {
            drop(role);
            if !all_out {
                // The socket is full and we may not wait: the next holder (or the shutdown's
                // next round) goes on from here.
                return Some(status);
            }
            // Release; fence; look at the queue once more.
            fence(Ordering::SeqCst);
            if self.waiting.is_empty() {
                return Some(status);
            }
            role = match try_lock(&self.role) {
                Some(role) => role,
                None => return Some(status),
            };
            all_out = self.drain(&mut role, no_wait);
        }
    }
}

impl Role {
    /// Writes what is waiting, in order: the unfinished frame, then the queue; ends the
    /// stream after the Close. Returns false if it stopped with something left (`no_wait`
    /// and the socket is full).
    fn drain(&mut self, waiting: &Receiver<Outgoing>, no_wait: bool) -> bool {
        if let Some((frame, written)) = self.unfinished.take()
            && !self.write(frame, written, no_wait)
        {
            return false;
        }
        while let Ok(frame) = waiting.try_recv() {
            if !self.write(frame, 0, no_wait) {
                return false;
            }
        }
        if self.close_written {
            return self.end_stream(no_wait);
        }
        if no_wait {
            // TLS may hold records back; they count as waiting.
            return self.out.flush_now().unwrap_or(true);
        }
        true
    }

    /// Writes `frame` from byte `written` on. Returns false if it had to stop (`no_wait`
    /// and the socket is full): the rest is kept as unfinished.
    fn write(&mut self, frame: Outgoing, mut written: usize, no_wait: bool) -> bool {
        if self.failed.is_some() || self.close_written {
            // Behind the Close, or after a failure: dropped.
            self.dropped_data |= matches!(frame, Outgoing::Data(_));
            return true;
        }
        let bytes = frame.bytes();
        let result = if no_wait {
            loop {
                if written == bytes.len() {
                    break Ok(());
                }
                match self.out.write_now(&bytes[written..]) {
                    Ok(0) => {
                        self.unfinished = Some((frame, written));
                        return false;
                    }
                    Ok(n) => written += n,
                    Err(e) => break Err(e),
                }
            }
        } else {
            self.out.write_all(&bytes[written..])
        };
        match (result, frame) {
            (Ok(()), Outgoing::Data(buffer)) => self.written = Some(buffer),
            (Ok(()), Outgoing::Close(_)) => self.close_written = true,
            (Ok(()), Outgoing::Control(_)) => {}
            (Err(e), _) => self.failed = Some(describe_write_error(&e, self.stall)),
        }
        true
    }

    /// Ends the stream once (TLS `close_notify`, FIN); whether that is done.
    fn end_stream(&mut self, no_wait: bool) -> bool {
        if self.finished {
            return true;
        }
        if self.failed.is_some() {
            // Nothing more can go out; the tunnel shuts the socket down.
            self.finished = true;
            return true;
        }
        if no_wait {
            self.finished = self.out.finish_now();
        } else {
            self.out.finish();
            self.finished = true;
        }
        self.finished
    }

    /// How writing stands: failed, or (for the download pump) whether its frame was dropped
    /// behind the Close, or else its buffer.
    fn status(&mut self, for_data: bool) -> Result<Option<Filled>, SendError> {
        if let Some(why) = &self.failed {
            return Err(SendError::Failed(why.clone()));
        }
        if !for_data {
            return Ok(None);
        }
        if std::mem::take(&mut self.dropped_data) {
            return Err(SendError::Closing);
        }
        Ok(self.written.take())
    }
}

/// The reason a write to the client failed, for the log and the tunnel's ending.
fn describe_write_error(e: &io::Error, stall: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "client stopped reading: no write progress for {} s (the stall limit)",
            stall.as_secs_f64()
        ),
        _ => format!("client write failed: {}", crate::target::describe(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;

    use super::*;
    use crate::buffers::Buffer;
    use crate::framing::Wire;

    /// What a [`Recorder`] saw: the bytes written, and whether the stream was ended.
    #[derive(Default)]
    struct Seen {
        written: Vec<u8>,
        finished: bool,
    }

    /// An in-memory client. With `held`, the first write signals that it started and then
    /// waits until the test lets it finish, like a socket write blocked on a slow client.
    /// `room` is how many more bytes a write that may not wait can place (None: any).
    struct Recorder {
        seen: Arc<Mutex<Seen>>,
        held: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
        room: Arc<Mutex<Option<usize>>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some((started, release)) = self.held.take() {
                started.send(()).unwrap();
                release.recv().unwrap();
            }
            lock(&self.seen).written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ClientSink for Recorder {
        fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut room = lock(&self.room);
            let n = room.map_or(bytes.len(), |room| room.min(bytes.len()));
            if let Some(room) = room.as_mut() {
                *room -= n;
            }
            lock(&self.seen).written.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn finish(&mut self) {
            lock(&self.seen).finished = true;
        }
        fn finish_now(&mut self) -> bool {
            self.finish();
            true
        }
    }

    struct Setup {
        writer: Arc<ClientWriter>,
        seen: Arc<Mutex<Seen>>,
        room: Arc<Mutex<Option<usize>>>,
    }

    fn setup(held: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>) -> Setup {
        let seen = Arc::new(Mutex::default());
        let room = Arc::new(Mutex::new(None));
        let out = Recorder {
            seen: Arc::clone(&seen),
            held,
            room: Arc::clone(&room),
        };
        let controls = Controls {
            wire: Wire::Rfc6455,
        };
        let writer = ClientWriter::new(1, controls, Box::new(out), Duration::from_secs(1));
        Setup {
            writer: Arc::new(writer),
            seen,
            room,
        }
    }

    /// A data frame in a pool buffer, as the encoders make them.
    fn data(bytes: &[u8]) -> Filled {
        let mut slot = Buffer::default();
        slot.get()[..bytes.len()].copy_from_slice(bytes);
        slot.take_filled(0..bytes.len())
    }

    fn close_frame() -> Vec<u8> {
        Controls {
            wire: Wire::Rfc6455,
        }
        .close(None)
    }

    #[test]
    fn control_frame_queued_during_a_data_frame_goes_out_before_the_next_one() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let Setup { writer, seen, .. } = setup(Some((started_tx, release_rx)));
        // The download pump is in the middle of a frame (its write is blocked)...
        let download = {
            let writer = Arc::clone(&writer);
            thread::spawn(move || assert!(writer.send_data(data(b"<frame 1>")).is_ok()))
        };
        started.recv().unwrap();
        // ...when the upload pump sends a Pong: it does not wait for the role.
        assert!(writer.send_control(b"<pong>".to_vec()).is_ok());
        release.send(()).unwrap();
        download.join().unwrap();
        // The holder wrote the Pong right after its frame, before the next data frame.
        assert!(writer.send_data(data(b"<frame 2>")).is_ok());
        assert_eq!(lock(&seen).written, b"<frame 1><pong><frame 2>");
    }

    #[test]
    fn after_the_close_data_is_refused_and_controls_are_dropped() {
        let Setup { writer, seen, .. } = setup(None);
        writer.send_control(b"<pong>".to_vec()).unwrap();
        assert!(writer.send_close(None, Turn::Try));
        assert!(!writer.send_close(None, Turn::Try), "only one Close");
        assert!(matches!(
            writer.send_data(data(b"late")),
            Err(SendError::Closing)
        ));
        writer.send_control(b"<late pong>".to_vec()).unwrap();
        let seen = lock(&seen);
        assert_eq!(seen.written, [&b"<pong>"[..], &close_frame()].concat());
        assert!(seen.finished, "the stream ends after the Close");
    }

    #[test]
    fn the_download_pump_gets_its_frame_buffer_back_once_written() {
        let Setup { writer, seen, .. } = setup(None);
        let frame = data(b"<frame>");
        let start = frame.as_ptr();
        let back = writer
            .send_data(frame)
            .unwrap()
            .expect("the buffer comes back");
        assert_eq!(back.as_ptr(), start, "the same buffer, no copy");
        assert_eq!(lock(&seen).written, b"<frame>");
    }

    #[test]
    fn a_data_frame_that_raced_in_behind_the_close_is_dropped() {
        let Setup { writer, seen, .. } = setup(None);
        // The download pump checked the close state before the Close was queued, then sent.
        writer.closing.store(true, Ordering::SeqCst);
        writer.queue.send(Outgoing::Close(close_frame())).unwrap();
        writer.queue.send(Outgoing::Data(data(b"raced"))).unwrap();
        assert!(matches!(
            writer.take_turn(Turn::Wait, true),
            Some(Err(SendError::Closing))
        ));
        assert_eq!(lock(&seen).written, close_frame());
    }

    #[test]
    fn a_frame_the_shutdown_could_not_finish_is_finished_first_by_the_next_holder() {
        let Setup {
            writer, seen, room, ..
        } = setup(None);
        // The client's socket takes 3 more bytes only.
        *lock(&room) = Some(3);
        let shutting_down = CloseInfo {
            code: 1001,
            reason: "server shutting down".into(),
        };
        assert!(writer.send_close(Some(&shutting_down), Turn::NoWait));
        let close = Controls {
            wire: Wire::Rfc6455,
        }
        .close(Some(&shutting_down));
        assert_eq!(lock(&seen).written, close[..3]);
        assert!(!writer.push_now(), "the rest is still waiting");
        // The client reads again: the next round writes the rest, then ends the stream.
        *lock(&room) = None;
        assert!(writer.push_now());
        let seen = lock(&seen);
        assert_eq!(seen.written, close);
        assert!(seen.finished);
    }

    #[test]
    fn controls_queued_before_the_close_go_out_first() {
        let Setup { writer, seen, .. } = setup(None);
        writer
            .queue
            .send(Outgoing::Control(b"<pong>".to_vec()))
            .unwrap();
        assert!(writer.send_close(None, Turn::Wait));
        assert!(lock(&seen).written.starts_with(b"<pong>"));
        assert!(writer.closing());
    }

    #[test]
    fn a_failed_write_is_reported_and_ends_all_writing() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl ClientSink for Broken {
            fn write_now(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn finish(&mut self) {}
            fn finish_now(&mut self) -> bool {
                true
            }
        }
        let controls = Controls {
            wire: Wire::Rfc6455,
        };
        let writer = ClientWriter::new(1, controls, Box::new(Broken), Duration::from_secs(7));
        let Err(SendError::Failed(why)) = writer.send_data(data(b"x")) else {
            panic!("a stalled write fails");
        };
        assert!(why.contains("no write progress for 7 s"), "{why}");
        assert!(writer.send_control(b"<pong>".to_vec()).is_err());
    }
}

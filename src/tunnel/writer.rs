//! The frame-atomic writer: the only way a tunnel writes to its client.
//!
//! Both pumps write to the client: the download pump its data frames, the upload pump Pongs,
//! heartbeat Pings and Closes. [`ClientWriter`] makes that safe:
//!
//! - **Whole frames.** Every frame is written under one mutex, a whole frame per lock, so the
//!   bytes of two frames never interleave. (Control frames may come between the frames of a
//!   fragmented message, RFC 6455 §5.4, but never inside a frame.)
//! - **Controls jump the queue.** A control frame is first put in a small outbox; whichever
//!   pump takes the lock next writes the outbox before anything else. So a Pong waits for at
//!   most the one data frame being written, however the threads are scheduled, even if the
//!   download pump wins the (unfair) mutex again and again.
//! - **One close state.** The writer holds the single "Close sent" flag (RFC 6455 §5.5.1:
//!   after sending a Close, an endpoint sends nothing more). Data frames after it are refused
//!   with [`SendError::Closing`]; control frames after it are dropped; controls queued before
//!   it go out first.

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};

use log::debug;

use crate::framing::{CloseInfo, Controls};

/// Why a data frame was not sent.
pub(super) enum SendError {
    /// A Close was already sent; no more data may follow (RFC 6455 §5.5.1).
    Closing,
    Io(io::Error),
}

/// Writes frames to one client, whole frames at a time, from either pump.
pub(super) struct ClientWriter {
    /// For log lines.
    id: u64,
    controls: Controls,
    state: Mutex<WriterState>,
    /// Control frames waiting for the writer; written before the next data frame.
    outbox: Mutex<Vec<u8>>,
}

/// What the writer's mutex guards: the client's write half, and whether our Close went out.
struct WriterState {
    out: Box<dyn Write + Send>,
    close_sent: bool,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientWriter {
    pub(super) fn new(id: u64, controls: Controls, out: Box<dyn Write + Send>) -> ClientWriter {
        ClientWriter {
            id,
            controls,
            state: Mutex::new(WriterState {
                out,
                close_sent: false,
            }),
            outbox: Mutex::default(),
        }
    }

    /// Sends one data frame, after any control frames waiting in the outbox.
    pub(super) fn send_data(&self, frame: &[u8]) -> Result<(), SendError> {
        let mut state = lock(&self.state);
        if state.close_sent {
            return Err(SendError::Closing);
        }
        state.write_outbox(&self.outbox).map_err(SendError::Io)?;
        state.out.write_all(frame).map_err(SendError::Io)
    }

    /// Sends a control frame ahead of any data frame not yet started.
    pub(super) fn send_control(&self, frame: &[u8]) {
        lock(&self.outbox).extend_from_slice(frame);
        // If the download pump takes the lock first, it writes our frame for us.
        if let Err(e) = lock(&self.state).write_outbox(&self.outbox) {
            debug!("[#{}] control frame not sent: {e}", self.id);
        }
    }

    /// Sends our Close unless one was sent already. Returns whether this call sent it.
    pub(super) fn send_close(&self, close: Option<CloseInfo>) -> bool {
        let mut state = lock(&self.state);
        if state.close_sent {
            return false;
        }
        // Pongs queued before our Close still go out (after it, nothing may).
        let frame = self.controls.close(close.as_ref());
        if let Err(e) = state
            .write_outbox(&self.outbox)
            .and_then(|()| state.out.write_all(&frame))
        {
            debug!("[#{}] close frame not sent: {e}", self.id);
        }
        state.close_sent = true;
        if let Some(close) = &close {
            debug!(
                "[#{}] proxy→client close {}",
                self.id,
                crate::logging::escape(&close.to_string())
            );
        }
        true
    }

    pub(super) fn close_sent(&self) -> bool {
        lock(&self.state).close_sent
    }

    /// Nothing more may go to the client: drops the write half (for TLS, that sends
    /// close_notify) and refuses every later frame.
    pub(super) fn finish(&self) {
        let mut state = lock(&self.state);
        state.close_sent = true;
        drop(std::mem::replace(&mut state.out, Box::new(io::sink())));
    }
}

impl WriterState {
    /// Writes the control frames waiting in `outbox` (in the order they were queued), unless
    /// our Close has gone out.
    fn write_outbox(&mut self, outbox: &Mutex<Vec<u8>>) -> io::Result<()> {
        let waiting = std::mem::take(&mut *lock(outbox));
        if waiting.is_empty() || self.close_sent {
            return Ok(());
        }
        self.out.write_all(&waiting)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::framing::Wire;

    /// An in-memory client: records what is written; with `held`, the first write signals
    /// that it started and then waits until the test lets it finish, like a socket write
    /// blocked on a slow client.
    struct Recorder {
        written: Arc<Mutex<Vec<u8>>>,
        held: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some((started, release)) = self.held.take() {
                started.send(()).unwrap();
                release.recv().unwrap();
            }
            lock(&self.written).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn writer(
        held: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    ) -> (Arc<ClientWriter>, Arc<Mutex<Vec<u8>>>) {
        let written = Arc::new(Mutex::default());
        let out = Recorder {
            written: Arc::clone(&written),
            held,
        };
        let controls = Controls {
            wire: Wire::Rfc6455,
        };
        (
            Arc::new(ClientWriter::new(1, controls, Box::new(out))),
            written,
        )
    }

    #[test]
    fn control_frame_queued_during_a_data_frame_goes_out_before_the_next_one() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let (writer, written) = writer(Some((started_tx, release_rx)));
        // The download pump is in the middle of a frame (its write is blocked)...
        let download = {
            let writer = Arc::clone(&writer);
            thread::spawn(move || assert!(writer.send_data(b"<frame 1>").is_ok()))
        };
        started.recv().unwrap();
        // ...when the upload pump queues a Pong and waits for the lock.
        let upload = {
            let writer = Arc::clone(&writer);
            thread::spawn(move || writer.send_control(b"<pong>"))
        };
        while lock(&writer.outbox).is_empty() {
            thread::sleep(Duration::from_millis(1));
        }
        release.send(()).unwrap();
        download.join().unwrap();
        // Whichever thread takes the lock next, the Pong precedes the next data frame.
        assert!(writer.send_data(b"<frame 2>").is_ok());
        upload.join().unwrap();
        assert_eq!(lock(&written).as_slice(), b"<frame 1><pong><frame 2>");
    }

    #[test]
    fn after_the_close_data_is_refused_and_controls_are_dropped() {
        let (writer, written) = writer(None);
        writer.send_control(b"<pong>");
        assert!(writer.send_close(None));
        assert!(!writer.send_close(None), "only one Close");
        assert!(matches!(writer.send_data(b"late"), Err(SendError::Closing)));
        writer.send_control(b"<late pong>");
        let close = Controls {
            wire: Wire::Rfc6455,
        }
        .close(None);
        assert_eq!(*lock(&written), [&b"<pong>"[..], &close].concat());
    }

    #[test]
    fn controls_queued_before_the_close_go_out_first() {
        let (writer, written) = writer(None);
        lock(&writer.outbox).extend_from_slice(b"<pong>");
        assert!(writer.send_close(None));
        assert!(lock(&written).starts_with(b"<pong>"));
        assert!(writer.close_sent());
    }
}

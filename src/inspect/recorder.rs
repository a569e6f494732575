//! `--record DIR`: every tunnel recorded as its own pcapng file, written by a background thread
//! so that the pumps never wait on the disk.
//!
//! A [`Recording`] is an [`Observer`] on a connection's taps. For each chunk it is shown, it
//! takes the time, copies the bytes once into a message and offers it to a bounded
//! `crossbeam-channel`; the tunnel's writer thread turns the messages into packets
//! ([`super::pcapng`]) in a buffered file. Offering never blocks: if the channel is full or the
//! bytes queued exceed [`QUEUE_BYTES`] (the disk fell behind), if the file cannot be written
//! (full disk, I/O error), or once `--record-max-bytes` bytes were recorded, recording of that
//! tunnel stops, with one log line, and the tunnel goes on untouched.
//!
//! A connection is recorded from its first byte, so the file shows the whole WebSocket
//! handshake. Until the connection turns out to be a tunnel, what the taps see waits in memory
//! (at most [`PENDING_BYTES`]); [`Recording::start`] then creates the file, named
//! `<UTC time>-c<id>-<peer>-to-<target>.pcapng` with every character that is not safe in a
//! file name replaced. A connection that never becomes a tunnel (plain HTTP, a refusal) leaves
//! no file.
//!
//! `DIR` is checked when the proxy starts ([`RecordDir::open`]): a missing directory, or one
//! where no file can be created (read-only, no permission), is refused with one line, like
//! every bad option value, instead of failing later for every tunnel. A directory that becomes
//! unusable later stops recording per tunnel, with a log line each.
//!
//! ## How the proxy uses this
//!
//! `cli` parses `--record DIR` and `--record-max-bytes N` (default [`DEFAULT_MAX_BYTES`]) into
//! a [`RecordDir`] (exit 2 on error). Per connection, `connection` calls
//! [`RecordDir::begin`] right after accepting (peer and local address of the client socket),
//! and taps the client's reader and writer with it once the transport is known (after TLS: the
//! decrypted bytes are recorded). Once the target is connected it calls [`Recording::start`]
//! with the target's name and the target socket's addresses and connect time, then taps the
//! target's reader and writer. The [`Recording`]'s path goes to the live table for the
//! inspector's download. When the last tap is dropped the channel closes and the writer thread
//! writes what is queued, closes the file and ends. Off: no `RecordDir`, so no `Recording`, no
//! tap and no cost. On: per chunk one clock read, one copy and one channel send.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::warn;

use super::Flow;
use super::pcapng::{Capture, End, TcpConnection};
use super::tap::Observer;

/// `--record-max-bytes` when not given: 64 MiB of recorded bytes per tunnel.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The most bytes waiting for the disk per tunnel before recording it stops.
pub const QUEUE_BYTES: usize = 32 << 20;
/// The most messages waiting per tunnel (each carries one read or write).
const QUEUE_MESSAGES: usize = 4096;
/// What a connection may hold in memory before it is known to be a tunnel (the request head
/// is at most 16 KiB).
pub const PENDING_BYTES: usize = 64 << 10;
/// The file's write buffer.
const FILE_BUFFER: usize = 256 << 10;

/// The directory recordings go to, checked at start, and the per-tunnel cap.
#[derive(Debug, Clone)]
pub struct RecordDir {
    path: PathBuf,
    max_bytes: u64,
}

impl RecordDir {
    /// Checks that `path` is a directory in which files can be created (by creating and
    /// removing one). The error is one line for the operator.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> Result<RecordDir, String> {
        let path = path.into();
        let shown = path.display();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("--record {shown}: no such directory"));
            }
            Err(e) => return Err(format!("--record {shown}: {e}")),
            Ok(meta) if !meta.is_dir() => {
                return Err(format!("--record {shown}: not a directory"));
            }
            Ok(_) => {}
        }
        let probe = path.join(format!(".wsproxy-probe-{}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => return Err(format!("--record {shown}: cannot create files there: {e}")),
        }
        if max_bytes == 0 {
            return Err("--record-max-bytes must be at least 1".into());
        }
        Ok(RecordDir { path, max_bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Starts recording connection `id` (not yet a file: see [`Recording::start`]).
    /// `client` is the peer's address, `proxy` the local address it connected to.
    pub fn begin(&self, id: u64, client: SocketAddr, proxy: SocketAddr) -> Arc<Recording> {
        Arc::new(Recording {
            dir: self.clone(),
            id,
            client,
            proxy,
            accepted_at: SystemTime::now(),
            pending: Mutex::new(Pending::default()),
            channel: OnceLock::new(),
            status: Arc::new(Status::new(id)),
            path: OnceLock::new(),
            writer: Mutex::new(None),
        })
    }
}

/// The proxy's connection to the target, for the second TCP stream of the recording.
#[derive(Debug, Clone, Copy)]
pub struct TargetLeg {
    /// The local address of the proxy's socket to the target.
    pub proxy: SocketAddr,
    /// The target's address.
    pub target: SocketAddr,
    /// When the connection was established.
    pub connected_at: SystemTime,
}

/// What the taps saw, on its way to the writer thread.
#[derive(Debug)]
enum Event {
    Bytes(Flow, SystemTime, Vec<u8>),
    Finished(Flow, SystemTime),
}

/// Events seen before the file exists.
#[derive(Debug, Default)]
struct Pending {
    events: Vec<Event>,
    bytes: usize,
}

/// The producer's end of the channel.
struct Channel {
    sender: Sender<Event>,
}

/// What the pumps and the writer thread share: whether recording goes on, and the counts.
struct Status {
    id: u64,
    stopped: AtomicBool,
    /// Bytes accepted for recording (payload bytes, all flows).
    recorded: AtomicU64,
    /// Bytes sent to the writer thread and not yet written.
    queued: AtomicUsize,
    /// The writer thread has closed the file.
    done: AtomicBool,
    /// Why recording stopped, if it did.
    why: Mutex<Option<String>>,
}

impl Status {
    fn new(id: u64) -> Status {
        Status {
            id,
            stopped: AtomicBool::new(false),
            recorded: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            why: Mutex::new(None),
        }
    }

    /// Stops recording; the first caller logs why.
    fn stop(&self, why: String) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        warn!(
            "[#{}] recording stopped after {} bytes: {why}; the tunnel goes on",
            self.id,
            self.recorded.load(Ordering::Relaxed)
        );
        *lock(&self.why) = Some(why);
    }
}

/// The recording of one connection.
pub struct Recording {
    dir: RecordDir,
    id: u64,
    client: SocketAddr,
    proxy: SocketAddr,
    accepted_at: SystemTime,
    pending: Mutex<Pending>,
    /// Set by [`Recording::start`]; from then on events go to the writer thread.
    channel: OnceLock<Channel>,
    status: Arc<Status>,
    path: OnceLock<PathBuf>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Recording {
    /// The connection is a tunnel: creates its file and the writer thread, and hands them what
    /// was seen so far. `target_name` is the target as the client named it (for the file
    /// name); `target` is `None` if the connect failed (the file then has the client's side
    /// only). Returns the file's path, or `None` (logged) if it could not be created.
    pub fn start(&self, target_name: &str, target: Option<TargetLeg>) -> Option<PathBuf> {
        if let Some(path) = self.path.get() {
            return Some(path.clone());
        }
        if !self.is_recording() {
            return None;
        }
        let name = file_name(self.accepted_at, self.id, self.client, target_name);
        let path = self.dir.path.join(name);
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) => {
                self.status
                    .stop(format!("cannot create {}: {e}", path.display()));
                return None;
            }
        };
        let comment = format!(
            "wsproxy tunnel #{}: {} → {target_name}",
            self.id, self.client
        );
        self.start_into(Box::new(file), &comment, target)?;
        let _ = self.path.set(path.clone());
        Some(path)
    }

    /// Starts the writer thread on `sink` and moves the pending events to it.
    fn start_into(
        &self,
        sink: Box<dyn Write + Send>,
        comment: &str,
        target: Option<TargetLeg>,
    ) -> Option<()> {
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_MESSAGES);
        let job = WriterJob {
            sink,
            comment: comment.to_string(),
            client: (self.client, self.proxy, self.accepted_at),
            target,
            receiver,
            status: Arc::clone(&self.status),
        };
        let spawned = thread::Builder::new()
            .name(format!("record-{}", self.id))
            .stack_size(256 << 10)
            .spawn(move || job.run());
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                self.status
                    .stop(format!("cannot start the writer thread: {e}"));
                return None;
            }
        };
        *lock(&self.writer) = Some(handle);
        let mut pending = lock(&self.pending);
        let channel = self.channel.get_or_init(|| Channel { sender });
        for event in pending.events.drain(..) {
            self.offer(channel, event);
        }
        pending.bytes = 0;
        Some(())
    }

    /// The file, once [`Recording::start`] created it.
    pub fn path(&self) -> Option<&Path> {
        self.path.get().map(PathBuf::as_path)
    }

    /// Whether bytes are still being recorded.
    pub fn is_recording(&self) -> bool {
        !self.status.stopped.load(Ordering::Acquire)
    }

    /// Why recording stopped, if it did.
    pub fn stopped_because(&self) -> Option<String> {
        lock(&self.status.why).clone()
    }

    /// Whether the file is complete (the writer thread has closed it).
    pub fn is_complete(&self) -> bool {
        self.status.done.load(Ordering::Acquire)
    }

    /// Payload bytes recorded so far.
    pub fn recorded_bytes(&self) -> u64 {
        self.status.recorded.load(Ordering::Relaxed)
    }

    /// Takes what fits under the cap; stops recording at the cap.
    fn admit<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let max = self.dir.max_bytes;
        let before = self
            .status
            .recorded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let room = max.saturating_sub(before);
        if (bytes.len() as u64) < room {
            return bytes;
        }
        self.status.recorded.store(max, Ordering::Relaxed);
        self.status
            .stop(format!("reached --record-max-bytes ({max} bytes)"));
        &bytes[..room as usize]
    }

    /// Hands an event to the writer thread without waiting; stops recording if it cannot.
    fn offer(&self, channel: &Channel, event: Event) {
        let size = match &event {
            Event::Bytes(_, _, bytes) => bytes.len(),
            Event::Finished(..) => 0,
        };
        let queued = self.status.queued.fetch_add(size, Ordering::Relaxed) + size;
        if queued > QUEUE_BYTES {
            self.status.queued.fetch_sub(size, Ordering::Relaxed);
            return self.status.stop(format!(
                "the disk fell behind ({} MiB waiting)",
                QUEUE_BYTES >> 20
            ));
        }
        match channel.sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.status.queued.fetch_sub(size, Ordering::Relaxed);
                self.status.stop(format!(
                    "the disk fell behind ({QUEUE_MESSAGES} writes waiting)"
                ));
            }
            // The writer thread ended (a write error it has reported).
            Err(TrySendError::Disconnected(_)) => {
                self.status.stop("the writer thread ended".into())
            }
        }
    }

    /// Routes an event: to the writer thread once started, else to the pending list.
    fn push(&self, event: Event) {
        if let Some(channel) = self.channel.get() {
            return self.offer(channel, event);
        }
        let mut pending = lock(&self.pending);
        // `start_into` may have set the channel while we waited for the lock.
        if let Some(channel) = self.channel.get() {
            drop(pending);
            return self.offer(channel, event);
        }
        if let Event::Bytes(_, _, bytes) = &event {
            pending.bytes += bytes.len();
            if pending.bytes > PENDING_BYTES {
                drop(pending);
                return self.status.stop(format!(
                    "more than {PENDING_BYTES} bytes before the tunnel opened"
                ));
            }
        }
        pending.events.push(event);
    }

    /// Ends the recording and waits until the file is complete (tests only: the proxy never
    /// waits on the disk). Returns the path.
    #[cfg(test)]
    pub(crate) fn finish(self: Arc<Self>) -> Option<PathBuf> {
        let handle = lock(&self.writer).take();
        let path = self.path.get().cloned();
        let only = Arc::into_inner(self).expect("the last reference to the recording");
        drop(only);
        if let Some(handle) = handle {
            handle.join().expect("the writer thread ended normally");
        }
        path
    }
}

impl Observer for Recording {
    fn bytes(&self, flow: Flow, bytes: &[u8]) {
        if !self.is_recording() {
            return;
        }
        let bytes = self.admit(bytes);
        if !bytes.is_empty() {
            self.push(Event::Bytes(flow, SystemTime::now(), bytes.to_vec()));
        }
    }

    fn finished(&self, flow: Flow) {
        if self.is_recording() {
            self.push(Event::Finished(flow, SystemTime::now()));
        }
    }
}

/// Everything the writer thread owns.
struct WriterJob {
    sink: Box<dyn Write + Send>,
    comment: String,
    /// Client address, proxy address, accept time.
    client: (SocketAddr, SocketAddr, SystemTime),
    target: Option<TargetLeg>,
    receiver: Receiver<Event>,
    status: Arc<Status>,
}

/// The two synthesized connections of a recording.
struct Streams {
    client: TcpConnection,
    target: Option<TcpConnection>,
}

impl WriterJob {
    fn run(self) {
        let WriterJob {
            sink,
            comment,
            client,
            target,
            receiver,
            status,
        } = self;
        let result = (|| -> io::Result<()> {
            let out = BufWriter::with_capacity(FILE_BUFFER, sink);
            let mut capture = Capture::new(out, &comment)?;
            let mut streams = open_streams(&mut capture, client, target)?;
            write_events(&mut capture, &mut streams, &receiver, &status)?;
            capture.flush()
        })();
        if let Err(e) = result {
            status.stop(format!("write error: {e}"));
        }
        status.done.store(true, Ordering::Release);
    }
}

/// Declares the interfaces and writes the TCP handshakes.
fn open_streams<W: Write>(
    capture: &mut Capture<W>,
    (client, proxy, accepted_at): (SocketAddr, SocketAddr, SystemTime),
    target: Option<TargetLeg>,
) -> io::Result<Streams> {
    let client_if = capture.add_interface("client", "client ↔ proxy: WebSocket")?;
    let client = capture.open(client_if, client, proxy, accepted_at)?;
    let target = match target {
        Some(leg) => {
            let target_if = capture.add_interface("target", "proxy ↔ target: tunnelled bytes")?;
            Some(capture.open(target_if, leg.proxy, leg.target, leg.connected_at)?)
        }
        None => None,
    };
    Ok(Streams { client, target })
}

/// Writes events until every sender is gone; flushes whenever the queue runs dry, so the file
/// on disk is current while the tunnel idles (the inspector may download it).
fn write_events<W: Write>(
    capture: &mut Capture<W>,
    streams: &mut Streams,
    receiver: &Receiver<Event>,
    status: &Status,
) -> io::Result<()> {
    loop {
        let event = match receiver.try_recv() {
            Ok(event) => event,
            Err(_) => {
                capture.flush()?;
                match receiver.recv() {
                    Ok(event) => event,
                    Err(_) => return Ok(()),
                }
            }
        };
        let (flow, at) = match &event {
            Event::Bytes(flow, at, _) | Event::Finished(flow, at) => (*flow, *at),
        };
        let (connection, end) = match flow {
            Flow::ClientToProxy => (Some(&mut streams.client), End::Initiator),
            Flow::ProxyToClient => (Some(&mut streams.client), End::Responder),
            Flow::ProxyToTarget => (streams.target.as_mut(), End::Initiator),
            Flow::TargetToProxy => (streams.target.as_mut(), End::Responder),
        };
        match (event, connection) {
            (Event::Bytes(_, _, bytes), Some(connection)) => {
                status.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                capture.data(connection, end, at, &bytes)?;
            }
            (Event::Bytes(_, _, bytes), None) => {
                status.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
            }
            (Event::Finished(..), Some(connection)) => capture.finish(connection, end, at)?,
            (Event::Finished(..), None) => {}
        }
    }
}

/// `20240619T152245.123Z-c42-127.0.0.1_52840-to-example.com_80.pcapng`: sorts by time, and
/// holds only characters that are safe in file names everywhere.
fn file_name(at: SystemTime, id: u64, peer: SocketAddr, target: &str) -> String {
    let time = match jiff::Timestamp::try_from(at) {
        Ok(ts) => ts.strftime("%Y%m%dT%H%M%S%.3fZ").to_string(),
        Err(_) => "unknown-time".into(),
    };
    let peer = format!("{}_{}", peer.ip().to_canonical(), peer.port());
    format!(
        "{time}-c{id}-{}-to-{}.pcapng",
        safe(&peer, 64),
        safe(target, 96)
    )
}

/// Keeps ASCII letters, digits, `.` and `-`, drops IPv6 brackets, and turns everything else
/// (`:`, `/`, spaces, control characters, non-ASCII) into `_`. At most `max` characters, and
/// never a name made of dots only (`.`, `..`).
fn safe(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| *c != '[' && *c != ']')
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if cleaned.trim_matches('.').is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;

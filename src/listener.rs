//! The listener: blocking `std::net` accepts, and every client served by its own thread.
//!
//! Thread-per-connection keeps each connection's code a straight line of blocking calls
//! (see [`crate::connection`]); the kernel's scheduler does the multiplexing. Two threads
//! wait in `accept` on the one listening socket; the kernel wakes one of them per connection,
//! and that thread becomes the client's connection thread (before serving, the last thread
//! waiting starts another, so someone is always accepting). The thread the kernel woke goes
//! straight on to read the request: a new client waits for no hand-off between threads. The
//! connection thread later becomes the tunnel's upload pump and starts one more thread for the
//! download pump: two threads per client. Threads come from [`crate::workers`], which keeps
//! finished ones briefly for the next client, and have small stacks, since thousands may be
//! alive at once.
//!
//! Limits live here: at most `--max-connections` clients at once (beyond it, 503 and close,
//! written without ever blocking the accepting thread), a 503 when no thread can be created,
//! and at start the open-files limit raised as far as the system allows (each tunnel needs two).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use log::{error, info, warn};

use crate::config::Config;
use crate::connection;
use crate::http::{Refusal, refusal_response};
use crate::shutdown;
use crate::socket::SharedSocket;
use crate::workers;

/// Binds the listening socket and prints where it listens.
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(config.listen).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    eprintln!("wsproxy: listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Memory maps one tunnel costs: each of its two threads has a stack and a guard page, and
/// Rust gives every thread a signal stack (for stack-overflow reports) with its own guard page.
const MAPS_PER_TUNNEL: u64 = 8;
/// Maps kept free for the process itself (binary, libraries, allocator arenas).
const MAP_RESERVE: u64 = 1024;

/// How many tunnels this system can hold at once, at most `max_connections`.
///
/// Raises the soft open-files limit to the hard limit (each tunnel needs two descriptors), and
/// reads `vm.max_map_count` (each tunnel needs [`MAPS_PER_TUNNEL`] memory maps). Past either
/// limit, creating a thread or allocating memory would fail — and a failed allocation aborts
/// the process — so the proxy caps itself below them, says so, and answers 503 beyond.
pub fn tunnel_capacity(max_connections: usize) -> usize {
    let mut capacity = max_connections as u64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let fits = limit.saturating_sub(64) / 2;
            if fits < capacity {
                warn!(
                    "the open-files limit is {limit}, enough for about {fits} tunnels, not --max-connections {max_connections}; raise the hard limit (ulimit -Hn) or lower --max-connections"
                );
            } else {
                info!("open-files limit: {limit}");
            }
            capacity = capacity.min(fits);
        }
        Err(e) => warn!("cannot read or raise the open-files limit: {e}"),
    }
    if let Some(maps) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    {
        let fits = maps.saturating_sub(MAP_RESERVE) / MAPS_PER_TUNNEL;
        if fits < capacity {
            warn!(
                "vm.max_map_count is {maps}: each tunnel's two threads use {MAPS_PER_TUNNEL} memory maps, so about {fits} tunnels fit; clients beyond that get 503. To hold more, raise it: sysctl -w vm.max_map_count={}",
                (max_connections as u64 * MAPS_PER_TUNNEL + MAP_RESERVE).max(262_144)
            );
        }
        capacity = capacity.min(fits);
    }
    capacity as usize
}

/// Counts a connection while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listening socket, and what every accepting thread needs.
struct Acceptor {
    listener: TcpListener,
    config: Arc<Config>,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
    /// How many threads are blocked in `accept` right now.
    waiting: AtomicUsize,
}

/// Threads kept blocked in `accept`: a thread done with its client goes back to waiting there
/// if fewer than this many do (else it becomes a spare, see [`crate::workers`]).
const WAITING_THREADS: usize = 2;

/// Accepts clients until the process exits (see [`shutdown`]).
///
/// A few threads wait in `accept` at once; the kernel wakes one of them per new connection,
/// and that thread serves the client itself, straight away: no hand-off between threads on a
/// new client's path. Only if it was the last one waiting does it first start another.
pub fn run(listener: TcpListener, config: Config, active: Arc<AtomicUsize>) -> io::Result<()> {
    let acceptor = Arc::new(Acceptor {
        listener,
        config: Arc::new(config),
        active,
        next_id: AtomicU64::new(1),
        waiting: AtomicUsize::new(0),
    });
    workers::run(move || acceptor.accept_and_serve())?;
    // The main thread has nothing more to do; signals end the process (see `shutdown`).
    loop {
        thread::park();
    }
}

impl Acceptor {
    /// An accepting thread's job: wait for a client, serve it, and wait again while wanted.
    fn accept_and_serve(self: Arc<Self>) {
        if !self.take_a_place_in_accept() {
            return;
        }
        loop {
            let Some((id, client, peer, slot)) = self.accept_one() else {
                continue; // (refused or failed: this thread goes on waiting)
            };
            let others_waiting = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
            if others_waiting == 0 {
                // Nobody would be accepting while this thread serves: start another first.
                let next = Arc::clone(&self);
                if let Err(e) = workers::run(move || next.accept_and_serve()) {
                    warn!("[#{id}] {peer}: cannot start a thread ({e}); refusing with 503");
                    refuse_without_blocking(
                        &client,
                        &Refusal::new(503, "server overloaded, try again later"),
                    );
                    self.waiting.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
            }
            {
                let _slot = slot;
                connection::serve(id, client, peer, &self.config);
            }
            if !self.take_a_place_in_accept() {
                return;
            }
        }
    }

    /// Counts this thread as waiting in `accept` if fewer than [`WAITING_THREADS`] do. The
    /// check and the count are one atomic step: threads whose clients leave at the same moment
    /// cannot all decide to go back.
    fn take_a_place_in_accept(&self) -> bool {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < WAITING_THREADS).then_some(n + 1)
            })
            .is_ok()
    }

    /// Waits for the next client and admits it, or refuses it (503) without blocking.
    fn accept_one(&self) -> Option<(u64, SharedSocket, SocketAddr, Slot)> {
        let (stream, peer) = match self.listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: the loop
                // goes on; pause briefly so a descriptor shortage does not spin.
                error!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                return None;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client = SharedSocket::new(stream);
        if shutdown::stopping() {
            refuse_without_blocking(&client, &Refusal::new(503, "server shutting down"));
            return None;
        }
        let max = self.config.max_connections;
        if self.active.fetch_add(1, Ordering::Relaxed) >= max {
            self.active.fetch_sub(1, Ordering::Relaxed);
            warn!("[#{id}] {peer}: {max} connections open already; refusing with 503");
            refuse_without_blocking(
                &client,
                &Refusal::new(503, "too many connections, try again later"),
            );
            return None;
        }
        Some((id, client, peer, Slot(Arc::clone(&self.active))))
    }
}

/// Sends an error response from the accept loop itself, never blocking it: one non-blocking
/// write, FIN, and a non-blocking read of whatever request bytes already arrived (closing a
/// socket with unread input would reset the connection and could destroy the response).
fn refuse_without_blocking(client: &SharedSocket, refusal: &Refusal) {
    if client.0.set_nonblocking(true).is_ok() {
        let _ = (&*client.0).write(&refusal_response(refusal));
        let _ = client.0.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match (&*client.0).read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

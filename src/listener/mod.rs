//! The listener: one blocking `std::net` accept loop, and every client served by threads of
//! its own.
//!
//! Thread-per-connection keeps each connection's code a straight line of blocking calls
//! (see [`crate::connection`]); the kernel's scheduler does the multiplexing. The main thread
//! runs the accept loop ([`run`]): for each client it takes a [`Permit`] and starts the
//! client's connection thread with [`threads::spawn`]. That thread reads the request, does
//! the handshake, connects to the target and becomes the tunnel's upload pump; it starts one
//! more thread for the download pump: two threads per client.
//!
//! Limits live here: at most `--max-connections` clients at once ([`permit`]; beyond it, 503
//! and close, written without ever blocking the accept loop), a 503 when no thread can be
//! created, and at start the open-files limit raised as far as the system allows (each
//! tunnel needs two descriptors) and the tunnel count capped below `vm.max_map_count`.

pub mod permit;
pub mod threads;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{error, info, warn};

use crate::config::Config;
use crate::connection;
use crate::http::{Refusal, refusal_response};
use crate::shutdown;
use crate::socket::SharedSocket;
pub use permit::{Permit, Permits};

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

/// Accepts clients until the process exits (see [`shutdown`]): the one accept loop.
///
/// For each client: an id, the shutdown check, a [`Permit`] (503 beyond `--max-connections`),
/// then [`threads::spawn`] starts its connection thread. Nothing here waits on a client: a
/// refusal is written without blocking.
pub fn run(listener: TcpListener, config: Config, permits: Permits) -> io::Result<()> {
    let config = Arc::new(config);
    let mut id = 0u64;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                id += 1;
                admit(id, SharedSocket::new(stream), peer, &config, &permits);
            }
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: the loop
                // goes on; pause briefly so a descriptor shortage does not spin.
                error!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Starts a thread for the client, or refuses it with 503.
fn admit(id: u64, client: SharedSocket, peer: SocketAddr, config: &Arc<Config>, permits: &Permits) {
    if shutdown::stopping() {
        refuse_without_blocking(&client, &Refusal::new(503, "server shutting down"));
        return;
    }
    let Some(permit) = permits.try_take() else {
        let max = permits.max();
        warn!("[#{id}] {peer}: {max} connections open already; refusing with 503");
        refuse_without_blocking(
            &client,
            &Refusal::new(503, "too many connections, try again later"),
        );
        return;
    };
    let job = {
        let (client, config) = (client.clone(), Arc::clone(config));
        move || {
            let _permit = permit;
            connection::serve(id, client, peer, &config);
        }
    };
    if let Err(e) = threads::spawn(job) {
        warn!("[#{id}] {peer}: cannot start a thread ({e}); refusing with 503");
        refuse_without_blocking(
            &client,
            &Refusal::new(503, "server overloaded, try again later"),
        );
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

//! The listener: a blocking `std::net` accept loop that gives every client its own thread.
//!
//! Thread-per-connection keeps each connection's code a straight line of blocking calls
//! (see [`crate::connection`]); the kernel's scheduler does the multiplexing. The connection
//! thread becomes the tunnel's upload pump and starts one more thread for the download pump:
//! two threads per client. Threads get small stacks, since thousands may be alive at once.

use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{error, warn};

use crate::config::Config;
use crate::connection;
use crate::http::{Refusal, refusal_response};
use crate::socket::SharedSocket;

/// Stack size of a connection thread: the handshake, a DNS lookup, then the upload pump.
const CONNECTION_STACK: usize = 256 * 1024;

/// Binds the listening socket and prints where it listens.
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(config.listen).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    eprintln!("wsproxy: listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Accepts clients forever.
pub fn run(listener: TcpListener, config: Config) -> io::Result<()> {
    let config = Arc::new(config);
    let mut next_id: u64 = 1;
    for incoming in listener.incoming() {
        let stream = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: the loop
                // goes on; pause briefly so a descriptor shortage does not spin.
                error!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let client = SharedSocket::new(stream);
        let ours = client.clone();
        let config = Arc::clone(&config);
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(CONNECTION_STACK)
            .spawn(move || connection::serve(id, client, peer, &config));
        if let Err(e) = spawned {
            warn!("[#{id}] {peer}: cannot start a thread ({e}); refusing with 503");
            refuse_without_blocking(
                &ours,
                &Refusal::new(503, "server overloaded, try again later"),
            );
        }
    }
    Ok(())
}

/// Sends an error response from the accept loop itself, never blocking it.
fn refuse_without_blocking(client: &SharedSocket, refusal: &Refusal) {
    if client.0.set_nonblocking(true).is_ok() {
        let _ = (&*client.0).write(&refusal_response(refusal));
    }
}

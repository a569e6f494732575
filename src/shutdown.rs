//! Graceful shutdown on SIGINT/SIGTERM (and certificate reload on SIGHUP, when TLS is on).
//!
//! The first SIGINT or SIGTERM stops new connections (they get 503) and queues a Close 1001
//! `server shutting down` for every tunnel (hixie-76: `0xFF 0x00`; hixie-75: the end of the
//! stream), without waiting on any of them: each Close is written without blocking, and what
//! a client that is not reading could not take yet is pushed again every few milliseconds.
//! In-flight bytes drain for up to `--shutdown-grace`; then every remaining socket is shut
//! down and the process exits 0. A second signal exits at once (130). Signals are received on
//! an ordinary thread through `signal-hook`'s iterator, so no code runs in a signal handler,
//! and that thread never waits on a client: it stays free for the second signal.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::listener::Permits;
use crate::tunnel;

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether a shutdown has begun (the listener then refuses new clients).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// Starts the signal thread. `permits` counts open connections; `on_hangup` runs on SIGHUP.
pub fn install(
    permits: Permits,
    grace: Duration,
    on_hangup: Box<dyn Fn() + Send>,
) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    on_hangup();
                    continue;
                }
                if STOPPING.swap(true, Ordering::Relaxed) {
                    warn!("second signal: exiting at once");
                    std::process::exit(130);
                }
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                let closed = tunnel::close_all("server shutting down");
                info!(
                    "{name}: shutting down; sent Close 1001 to {closed} tunnels, draining for up to {:.1} s (signal again to exit now)",
                    grace.as_secs_f64()
                );
                let permits = permits.clone();
                thread::spawn(move || drain_then_exit(&permits, grace));
            }
        })?;
    Ok(())
}

/// How often the drain pushes Closes that clients could not take yet, and checks whether
/// every connection has ended.
const DRAIN_TICK: Duration = Duration::from_millis(20);

fn drain_then_exit(permits: &Permits, grace: Duration) {
    let deadline = Instant::now() + grace;
    while permits.out() > 0 && Instant::now() < deadline {
        tunnel::push_all();
        thread::sleep(DRAIN_TICK.min(deadline.saturating_duration_since(Instant::now())));
    }
    let left = permits.out();
    if left == 0 {
        info!("all connections closed; exiting");
    } else {
        info!(
            "grace period over with {left} connections still open; shutting them down and exiting"
        );
        tunnel::shut_down_all();
    }
    std::process::exit(0);
}

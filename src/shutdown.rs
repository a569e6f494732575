//! Graceful shutdown on SIGINT/SIGTERM (and certificate reload on SIGHUP, when TLS is on).
//!
//! The first SIGINT or SIGTERM stops new connections (they get 503), sends every tunnel a
//! Close 1001 `server shutting down` (hixie-76: `0xFF 0x00`; hixie-75: the TCP close), lets
//! in-flight bytes drain for up to `--shutdown-grace`, and exits 0. A second signal exits at
//! once. Signals are received on an ordinary thread through `signal-hook`'s iterator, so no
//! code runs in a signal handler.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::tunnel;

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether a shutdown has begun (the listener then refuses new clients).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// Starts the signal thread. `active` counts open connections; `on_hangup` runs on SIGHUP.
pub fn install(
    active: Arc<AtomicUsize>,
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
                let waiting = Arc::clone(&active);
                thread::spawn(move || drain_then_exit(&waiting, grace));
            }
        })?;
    Ok(())
}

fn drain_then_exit(active: &AtomicUsize, grace: Duration) {
    let deadline = Instant::now() + grace;
    while active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let left = active.load(Ordering::Relaxed);
    if left == 0 {
        info!("all connections closed; exiting");
    } else {
        info!("grace period over with {left} connections still open; exiting");
    }
    std::process::exit(0);
}

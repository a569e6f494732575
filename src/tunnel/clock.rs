//! The idle and heartbeat clocks, kept by the upload pump without a timer thread.
//!
//! With `--idle-timeout` or `--heartbeat`, the client socket gets a short read timeout, so the
//! upload pump wakes up now and then even when the client is silent, and calls
//! [`Clock::check`]. A heartbeat is an RFC 6455 Ping (§5.5.2) sent after an interval without
//! anything from the client; a client that stays silent for two more intervals is closed with
//! 1001. hixie connections have no Pings, so only the idle timeout applies to them.

use std::time::{Duration, Instant};

use log::debug;

use super::{Shared, Timers};
use crate::framing::{CloseInfo, Inbound, ReadError, close_code};

/// The idle and heartbeat clocks, kept by the upload pump.
pub(super) struct Clock {
    timers: Timers,
    /// When the client last sent anything (a frame of any kind).
    client_heard: Instant,
    /// When our unanswered heartbeat Ping went out.
    ping_sent: Option<Instant>,
    pings: u64,
}

impl Clock {
    /// Arms the client socket's read timeout so the pump wakes up to check the clocks.
    pub(super) fn new(shared: &Shared, timers: Timers) -> Clock {
        let heartbeat = timers
            .heartbeat
            .filter(|_| shared.controls.ping(b"").is_some());
        let timers = Timers {
            heartbeat,
            ..timers
        };
        let shortest = [timers.idle_timeout, timers.heartbeat]
            .into_iter()
            .flatten()
            .min();
        if let Some(shortest) = shortest {
            let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            let _ = shared.client.0.set_read_timeout(Some(tick));
        }
        Clock {
            timers,
            client_heard: Instant::now(),
            ping_sent: None,
            pings: 0,
        }
    }

    /// Any frame from the client proves it is alive.
    pub(super) fn client_spoke(&mut self, event: &Result<Inbound<'_>, ReadError>) {
        if self.timers.heartbeat.is_some() && event.is_ok() {
            self.client_heard = Instant::now();
            self.ping_sent = None;
        }
    }

    /// Sends a heartbeat if one is due; returns the Close to send if a clock ran out.
    pub(super) fn check(&mut self, shared: &Shared) -> Option<CloseInfo> {
        if let Some(idle) = self.timers.idle_timeout
            && shared.idle_for() >= idle
        {
            return Some(CloseInfo {
                code: close_code::GOING_AWAY,
                reason: format!("idle timeout ({} s without data)", idle.as_secs_f64()),
            });
        }
        let interval = self.timers.heartbeat?;
        match self.ping_sent {
            Some(sent) if sent.elapsed() >= interval * 2 => Some(CloseInfo {
                code: close_code::GOING_AWAY,
                reason: format!(
                    "no answer to a heartbeat ping within {} s",
                    (interval * 2).as_secs_f64()
                ),
            }),
            None if self.client_heard.elapsed() >= interval => {
                self.pings += 1;
                if let Some(ping) = shared
                    .controls
                    .ping(format!("wsproxy {}", self.pings).as_bytes())
                {
                    debug!(
                        "[#{}] proxy→client heartbeat ping {}",
                        shared.id, self.pings
                    );
                    // A failed write shows in the writer's state; the upload pump checks it.
                    let _ = shared.writer.send_control(ping);
                }
                self.ping_sent = Some(Instant::now());
                None
            }
            _ => None,
        }
    }
}

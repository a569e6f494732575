//! Worker threads: each client still gets its own OS threads, but a thread that has finished
//! with one client waits a moment for the next instead of exiting.
//!
//! Creating a thread is not free: `clone3`, a stack `mmap` with its guard page, Rust's signal
//! stack, and on exit the `munmap`s — measured at about a fifth of the proxy's CPU time when
//! clients open and close tunnels back to back. So a thread whose job is done *parks* as a
//! spare (at most `--spare-threads` of them) for [`KEEP_ALIVE`]; the next job is handed
//! to a parked spare if there is one, else a new thread is started. A spare that gets no job
//! in time exits, so an idle proxy shrinks back to its one accepting thread.
//!
//! This changes nothing in the design: a job (a connection, or a tunnel's download pump) runs
//! alone on its thread from start to end, with blocking I/O; only the thread's *birth* is
//! shared. The hand-off is a zero-capacity channel: `try_send` succeeds only when a spare
//! is blocked in `recv` at that moment, so a job is never queued behind another one.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

/// How long a spare thread waits for a job before it exits.
pub const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Default for `--spare-threads`.
pub const DEFAULT_SPARES: usize = 32;
/// Stack size of every worker: the handshake (a DNS lookup, TLS), then one pump.
pub const STACK_SIZE: usize = 256 * 1024;

/// One piece of work that runs on its own thread until it is done.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads that run jobs, and the spares among them waiting for the next one.
pub struct Workers {
    name: &'static str,
    stack_size: usize,
    max_spares: usize,
    keep_alive: Duration,
    /// Jobs go to a parked spare through this zero-capacity channel.
    hand_off: Sender<Job>,
    parked: Receiver<Job>,
    /// How many threads are parked (or about to park) right now.
    spares: AtomicUsize,
}

impl Workers {
    pub fn new(
        name: &'static str,
        stack_size: usize,
        max_spares: usize,
        keep_alive: Duration,
    ) -> Self {
        let (hand_off, parked) = bounded(0);
        Workers {
            name,
            stack_size,
            max_spares,
            keep_alive,
            hand_off,
            parked,
            spares: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on a spare thread, or on a new one. Fails only if no thread can be created.
    pub fn run(&'static self, job: Job) -> io::Result<()> {
        let job = match self.hand_off.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
        };
        thread::Builder::new()
            .name(self.name.into())
            .stack_size(self.stack_size)
            .spawn(move || self.work(job))
            .map(drop)
    }

    /// The life of one worker thread: its first job, then more while it is wanted.
    fn work(&self, mut job: Job) {
        loop {
            job();
            if self.spares.fetch_add(1, Ordering::AcqRel) >= self.max_spares {
                // Enough threads are waiting already.
                self.spares.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let next = self.parked.recv_timeout(self.keep_alive);
            self.spares.fetch_sub(1, Ordering::AcqRel);
            match next {
                Ok(next) => job = next,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

/// Sets how many spare threads may wait for work (`--spare-threads`); call before [`run`].
pub fn configure(max_spares: usize) {
    let _ = WORKERS.set(Workers::new(
        "wsproxy-worker",
        STACK_SIZE,
        max_spares,
        KEEP_ALIVE,
    ));
}

/// Runs `job` on a thread of the process-wide pool (see [`Workers::run`]).
pub fn run(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    WORKERS
        .get_or_init(|| Workers::new("wsproxy-worker", STACK_SIZE, DEFAULT_SPARES, KEEP_ALIVE))
        .run(Box::new(job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn pool(max_spares: usize, keep_alive_ms: u64) -> &'static Workers {
        Box::leak(Box::new(Workers::new(
            "test-worker",
            64 * 1024,
            max_spares,
            Duration::from_millis(keep_alive_ms),
        )))
    }

    /// Runs a job that reports its thread's id, and waits for it.
    fn thread_of(workers: &'static Workers) -> thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        workers
            .run(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        rx.recv().unwrap()
    }

    fn wait_for_spares(workers: &Workers, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while workers.spares.load(Ordering::Acquire) != n {
            assert!(Instant::now() < deadline, "spares never became {n}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let workers = pool(4, 10_000);
        let first = thread_of(workers);
        wait_for_spares(workers, 1);
        assert_eq!(thread_of(workers), first);
    }

    #[test]
    fn jobs_running_at_once_get_threads_of_their_own() {
        let workers = pool(4, 10_000);
        let (release, blocked) = crossbeam_channel::bounded::<()>(0);
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let (blocked, tx) = (blocked.clone(), tx.clone());
            workers
                .run(Box::new(move || {
                    tx.send(thread::current().id()).unwrap();
                    let _ = blocked.recv();
                }))
                .unwrap();
        }
        let ids: std::collections::HashSet<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(ids.len(), 3);
        drop(release);
    }

    #[test]
    fn spares_are_capped_and_exit_after_the_keep_alive() {
        let workers = pool(1, 100);
        let (release, blocked) = crossbeam_channel::bounded::<()>(0);
        let (started, running) = mpsc::channel();
        for _ in 0..3 {
            let (blocked, started) = (blocked.clone(), started.clone());
            workers
                .run(Box::new(move || {
                    started.send(()).unwrap();
                    let _ = blocked.recv();
                }))
                .unwrap();
        }
        for _ in 0..3 {
            running.recv().unwrap();
        }
        drop(release);
        // Three jobs ended, but only one thread stays as a spare ...
        wait_for_spares(workers, 1);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(workers.spares.load(Ordering::Acquire), 1);
        // ... and it leaves when no job comes within the keep-alive.
        wait_for_spares(workers, 0);
    }

    #[test]
    fn with_no_spares_every_job_gets_a_new_thread() {
        let workers = pool(0, 10_000);
        let first = thread_of(workers);
        thread::sleep(Duration::from_millis(20));
        assert_ne!(thread_of(workers), first);
    }
}

//! Starting threads: every client's connection thread and every tunnel's download pump is
//! started by [`spawn`], the one place that knows how threads are made.
//!
//! Each job (a connection, or a download pump) runs alone on its thread from start to end,
//! with blocking I/O. Threads have small stacks ([`STACK_SIZE`]), since thousands may be alive
//! at once.
//!
//! Creating a thread is not free (`clone3`, a stack `mmap` with its guard page, Rust's signal
//! stack, and on exit the `munmap`s), so a thread whose job is done may wait a moment for the
//! next one: with `--spare-threads N` (N > 0), up to N finished threads park for
//! [`KEEP_ALIVE`] on a zero-capacity `crossbeam-channel`. A send on such a channel succeeds
//! only if a parked thread is waiting at that moment, so [`spawn`] hands the job to a parked
//! thread if there is one, and otherwise starts a new thread: a job is never queued behind
//! another. A parked thread that gets no job in time exits, so an idle proxy shrinks back.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// Stack size of every thread: the handshake (a DNS lookup, TLS), then one pump.
pub const STACK_SIZE: usize = 256 * 1024;
/// How long a finished thread waits for its next job before it exits.
pub const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Default for `--spare-threads`.
pub const DEFAULT_SPARES: usize = 32;

/// One piece of work that runs on its own thread until it is done.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The threads that run jobs, and the finished ones waiting for another.
struct Threads {
    /// At most this many finished threads wait for a job.
    max_spares: usize,
    /// Zero capacity: a job sent here goes straight to a parked thread, or not at all.
    jobs: Sender<Job>,
    parked: Receiver<Job>,
    /// Finished threads waiting for a job right now.
    spares: AtomicUsize,
}

static THREADS: OnceLock<Threads> = OnceLock::new();

/// Sets how many finished threads may wait for work (`--spare-threads`); call before the
/// first [`spawn`].
pub fn configure(max_spares: usize) {
    let _ = THREADS.set(Threads::new(max_spares));
}

fn threads() -> &'static Threads {
    THREADS.get_or_init(|| Threads::new(DEFAULT_SPARES))
}

/// Runs `job` on a thread of its own: a parked one if one waits, else a new one. Fails only
/// if no thread can be created (the job is then dropped).
pub fn spawn(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    threads().spawn(Box::new(job))
}

impl Threads {
    fn new(max_spares: usize) -> Threads {
        let (jobs, parked) = crossbeam_channel::bounded(0);
        Threads {
            max_spares,
            jobs,
            parked,
            spares: AtomicUsize::new(0),
        }
    }

    fn spawn(&'static self, job: Job) -> io::Result<()> {
        let job = match self.jobs.try_send(job) {
            Ok(()) => return Ok(()),
            Err(unsent) => unsent.into_inner(),
        };
        thread::Builder::new()
            .name("wsproxy-worker".into())
            .stack_size(STACK_SIZE)
            .spawn(move || self.work(job))
            .map(drop)
    }

    /// The life of one thread: its first job, then more while it is wanted.
    fn work(&self, mut job: Job) {
        loop {
            job();
            match self.next_job() {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Parks for a job; `None` if enough threads wait already or none came in time.
    fn next_job(&self) -> Option<Job> {
        let waiting = self.spares.fetch_add(1, Ordering::AcqRel);
        let job = if waiting < self.max_spares {
            self.parked.recv_timeout(KEEP_ALIVE).ok()
        } else {
            None
        };
        self.spares.fetch_sub(1, Ordering::AcqRel);
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn pool(max_spares: usize) -> &'static Threads {
        Box::leak(Box::new(Threads::new(max_spares)))
    }

    /// Runs a job that reports its thread's id, and waits for it.
    fn thread_of(threads: &'static Threads) -> thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        threads
            .spawn(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        rx.recv().unwrap()
    }

    fn wait_for_spares(threads: &Threads, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads.spares.load(Ordering::Acquire) != n {
            assert!(Instant::now() < deadline, "spares never became {n}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let threads = pool(4);
        let first = thread_of(threads);
        wait_for_spares(threads, 1);
        assert_eq!(thread_of(threads), first);
    }

    #[test]
    fn jobs_running_at_once_get_threads_of_their_own() {
        let threads = pool(4);
        let (release, blocked) = crossbeam_channel::bounded::<()>(0);
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let (blocked, tx) = (blocked.clone(), tx.clone());
            threads
                .spawn(Box::new(move || {
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
    fn spares_are_capped() {
        let threads = pool(1);
        let (release, blocked) = crossbeam_channel::bounded::<()>(0);
        let (started, running) = mpsc::channel();
        for _ in 0..3 {
            let (blocked, started) = (blocked.clone(), started.clone());
            threads
                .spawn(Box::new(move || {
                    started.send(()).unwrap();
                    let _ = blocked.recv();
                }))
                .unwrap();
        }
        for _ in 0..3 {
            running.recv().unwrap();
        }
        drop(release);
        // Three jobs ended, but only one thread stays as a spare.
        wait_for_spares(threads, 1);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(threads.spares.load(Ordering::Acquire), 1);
    }

    #[test]
    fn with_no_spares_every_job_gets_a_new_thread() {
        let threads = pool(0);
        let first = thread_of(threads);
        thread::sleep(Duration::from_millis(20));
        assert_ne!(thread_of(threads), first);
    }
}

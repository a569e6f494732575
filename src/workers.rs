//! Worker threads: each client still gets its own OS threads, but a thread that has finished
//! with one client waits a moment for the next instead of exiting.
//!
//! Creating a thread is not free: `clone3`, a stack `mmap` with its guard page, Rust's signal
//! stack, and on exit the `munmap`s — measured at about a fifth of the proxy's CPU time when
//! clients open and close tunnels back to back. So a thread whose job is done *parks* as a
//! spare (at most `--spare-threads` of them) for [`KEEP_ALIVE`]; the next job is handed
//! to a parked spare if there is one, else a new thread is started. A spare that gets no job
//! in time exits, so an idle proxy shrinks back.
//!
//! This changes nothing in the design: a job (a connection, or a tunnel's download pump) runs
//! alone on its thread from start to end, with blocking I/O; only the thread's *birth* is
//! shared. A job is never queued behind another: it goes to a spare that is waiting, or to a
//! new thread.
//!
//! Waiting is done with a mutex and a condition variable (a futex on Linux), not a channel:
//! a channel's receiver spins and calls `sched_yield` a few times before it sleeps, which on
//! a busy 2-core machine measured about three extra yields per tunnel.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a spare thread waits for a job before it exits.
pub const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Default for `--spare-threads`.
pub const DEFAULT_SPARES: usize = 32;
/// Stack size of every worker: the handshake (a DNS lookup, TLS), then one pump.
pub const STACK_SIZE: usize = 256 * 1024;

/// One piece of work that runs on its own thread until it is done.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A value one thread sets once and another waits for.
pub struct Outcome<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Outcome<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Outcome {
            value: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    pub fn set(&self, value: T) {
        *lock(&self.value) = Some(value);
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for the value and takes it; `None` if it did not come in time.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut value = lock(&self.value);
        loop {
            if let Some(v) = value.take() {
                return Some(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            value = self
                .ready
                .wait_timeout(value, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for the value as long as it takes.
    pub fn wait(&self) -> T {
        let mut value = lock(&self.value);
        loop {
            if let Some(v) = value.take() {
                return v;
            }
            value = self.ready.wait(value).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Sets an [`Outcome`] to `value` when dropped: at the end of a scope, or while unwinding
/// from a panic (so the waiting thread always learns that this one ended).
pub struct SetOnDrop<T> {
    outcome: Arc<Outcome<T>>,
    pub value: Option<T>,
}

impl<T> SetOnDrop<T> {
    pub fn new(outcome: Arc<Outcome<T>>, value: T) -> Self {
        SetOnDrop {
            outcome,
            value: Some(value),
        }
    }
}

impl<T> Drop for SetOnDrop<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            self.outcome.set(value);
        }
    }
}

/// A parked spare thread waits for its next job as an [`Outcome`] of its own.
type Spare = Outcome<Job>;

/// Threads that run jobs, and the spares among them waiting for the next one.
pub struct Workers {
    name: &'static str,
    stack_size: usize,
    max_spares: usize,
    keep_alive: Duration,
    /// The spares waiting for a job, most recently parked last.
    parked: Mutex<Vec<Arc<Spare>>>,
}

impl Workers {
    pub fn new(
        name: &'static str,
        stack_size: usize,
        max_spares: usize,
        keep_alive: Duration,
    ) -> Self {
        Workers {
            name,
            stack_size,
            max_spares,
            keep_alive,
            parked: Mutex::new(Vec::new()),
        }
    }

    /// Runs `job` on a spare thread, or on a new one. Fails only if no thread can be created.
    pub fn run(&'static self, job: Job) -> io::Result<()> {
        let spare = lock(&self.parked).pop();
        if let Some(spare) = spare {
            spare.set(job);
            return Ok(());
        }
        thread::Builder::new()
            .name(self.name.into())
            .stack_size(self.stack_size)
            .spawn(move || self.work(job))
            .map(drop)
    }

    /// The life of one worker thread: its first job, then more while it is wanted.
    fn work(&self, mut job: Job) {
        let me: Arc<Spare> = Outcome::new();
        loop {
            job();
            {
                let mut parked = lock(&self.parked);
                if parked.len() >= self.max_spares {
                    return; // Enough threads are waiting already.
                }
                parked.push(Arc::clone(&me));
            }
            match self.next_job(&me) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Waits, parked, for a job; `None` when the keep-alive ran out first.
    fn next_job(&self, me: &Arc<Spare>) -> Option<Job> {
        if let Some(job) = me.wait_timeout(self.keep_alive) {
            return Some(job);
        }
        let mut parked = lock(&self.parked);
        if let Some(at) = parked.iter().position(|s| Arc::ptr_eq(s, me)) {
            parked.remove(at);
            return None;
        }
        // Taken off the list just now: a job is on its way.
        drop(parked);
        Some(me.wait())
    }

    /// How many spares are parked right now.
    pub fn parked(&self) -> usize {
        lock(&self.parked).len()
    }
}

/// A job running on a worker thread, whose result can be waited for.
pub struct Handle<T>(Arc<Outcome<Option<T>>>);

impl<T> Handle<T> {
    /// Waits up to `timeout` for the job to end: `Some(its result)`, with `None` inside if
    /// it panicked; `None` if it is still running.
    pub fn join_timeout(&self, timeout: Duration) -> Option<Option<T>> {
        self.0.wait_timeout(timeout)
    }

    /// Waits for the job to end; `None` if it panicked.
    pub fn join(&self) -> Option<T> {
        self.0.wait()
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

fn pool() -> &'static Workers {
    WORKERS.get_or_init(|| Workers::new("wsproxy-worker", STACK_SIZE, DEFAULT_SPARES, KEEP_ALIVE))
}

/// Runs `job` on a thread of the process-wide pool (see [`Workers::run`]).
pub fn run(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    pool().run(Box::new(job))
}

/// Like [`run`], for a job whose result the caller waits for (like `thread::spawn`).
pub fn spawn<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<Handle<T>> {
    let outcome = Outcome::new();
    let result = Arc::clone(&outcome);
    pool().run(Box::new(move || {
        // `None` unless the job returns: a panic reports `None` while unwinding.
        let mut report = SetOnDrop::new(result, None);
        report.value = Some(Some(job()));
    }))?;
    Ok(Handle(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

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
        while workers.parked() != n {
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
        assert_eq!(workers.parked(), 1);
        // ... and it leaves when no job comes within the keep-alive.
        wait_for_spares(workers, 0);
    }

    #[test]
    fn spawn_returns_the_result_or_reports_a_panic() {
        let done = spawn(|| 6 * 7).unwrap();
        assert_eq!(done.join(), Some(42));
        let slow = spawn(|| {
            thread::sleep(Duration::from_millis(300));
            1
        })
        .unwrap();
        assert_eq!(slow.join_timeout(Duration::from_millis(10)), None);
        assert_eq!(slow.join_timeout(Duration::from_secs(5)), Some(Some(1)));
        let panicked = spawn(|| -> u8 { panic!("on purpose") }).unwrap();
        assert_eq!(panicked.join(), None);
    }

    #[test]
    fn with_no_spares_every_job_gets_a_new_thread() {
        let workers = pool(0, 10_000);
        let first = thread_of(workers);
        thread::sleep(Duration::from_millis(20));
        assert_ne!(thread_of(workers), first);
    }
}

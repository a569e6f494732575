//! The measurements. Each function runs one test once against one endpoint and returns
//! its figures; the caller repeats runs and takes medians.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{BIG_BUF, Proto, Reader, Tunnel};
use crate::procs::{self, CpuTime, Peer, Proc, ProcStats};
use crate::targets::{IdleTarget, Request, Targets, Which, expected, verify};

/// Size of one client write (and so of one message) in the bulk tests.
pub const CHUNK: usize = 64 * 1024;
/// Size of a latency probe.
const PROBE: usize = 64;
/// Stack of the client threads (their buffers live on the heap).
const CLIENT_STACK: usize = 256 * 1024;

/// Where a measurement's tunnels go and what speaks there.
pub struct Endpoint {
    /// Column name: `direct`, `binary`, `websockets-proxy`, `base64`, `hixie76`, `websocat`, …
    pub name: String,
    pub proto: Proto,
    pub kind: EndpointKind,
    /// Set when wsbench started the proxy itself.
    pub spawner: Option<Spawner>,
}

pub enum EndpointKind {
    /// No proxy: connect to the target itself.
    Direct,
    /// A proxy that takes the target from the URL path (`/<host>:<port>`): wsproxy.
    PathRouted { addr: SocketAddr, pid: u32 },
    /// Fixed-target proxies, path `/`: one instance per busy target (echo, sink, source;
    /// the idle test always starts its own through [`Spawner`]).
    Fixed {
        instances: Vec<(Which, SocketAddr, u32)>,
    },
}

/// How to start a fresh instance of an endpoint's proxy (each idle-tunnel test gets one, so
/// that memory left over from earlier tests does not blur the per-tunnel figures).
pub enum Spawner {
    Wsproxy { program: PathBuf, args: Vec<String> },
    Peer { peer: Peer, program: PathBuf },
}

impl Spawner {
    /// Starts an instance that can hold `tunnels` tunnels and returns it with the route to
    /// `target` through it. (wsproxy gets `--max-connections`, as its default is 4096.)
    pub fn spawn(&self, target: SocketAddr, tunnels: usize) -> io::Result<(Proc, Route)> {
        let (proc_, path) = match self {
            Spawner::Wsproxy { program, args } => {
                let mut args = args.clone();
                args.extend(["--max-connections".to_string(), (tunnels + 64).to_string()]);
                (procs::spawn_wsproxy(program, &args)?, format!("/{target}"))
            }
            Spawner::Peer { peer, program } => (peer.spawn(program, target)?, "/".into()),
        };
        let route = Route {
            addr: proc_.addr,
            path,
            pid: Some(proc_.pid()),
        };
        Ok((proc_, route))
    }
}

/// Where one tunnel goes: the address to connect to, the request path, the proxy's pid.
pub struct Route {
    pub addr: SocketAddr,
    pub path: String,
    pub pid: Option<u32>,
}

impl Endpoint {
    pub fn route(&self, targets: &Targets, which: Which) -> Route {
        let target = targets.addr(which);
        match &self.kind {
            EndpointKind::Direct => Route {
                addr: target,
                path: String::new(),
                pid: None,
            },
            EndpointKind::PathRouted { addr, pid } => Route {
                addr: *addr,
                path: format!("/{target}"),
                pid: Some(*pid),
            },
            EndpointKind::Fixed { instances } => {
                let (_, addr, pid) = instances
                    .iter()
                    .find(|(w, _, _)| *w == which)
                    .expect("no instance for this target");
                Route {
                    addr: *addr,
                    path: "/".into(),
                    pid: Some(*pid),
                }
            }
        }
    }

    /// The proxy processes behind this endpoint (for memory and CPU readings).
    pub fn pids(&self) -> Vec<u32> {
        match &self.kind {
            EndpointKind::Direct => vec![],
            EndpointKind::PathRouted { pid, .. } => vec![*pid],
            EndpointKind::Fixed { instances } => instances.iter().map(|i| i.2).collect(),
        }
    }
}

/// Settings shared by all measurements.
pub struct Ctx {
    pub targets: Targets,
    /// Bound on every socket operation of a busy tunnel.
    pub timeout: Duration,
    /// Clock ticks per second of /proc CPU times.
    pub ticks: f64,
}

impl Ctx {
    fn open(&self, ep: &Endpoint, which: Which) -> io::Result<(Tunnel, Route)> {
        let route = ep.route(&self.targets, which);
        let t = Tunnel::open(route.addr, &route.path, ep.proto, BIG_BUF, self.timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("opening a tunnel to {which:?}: {e}")))?;
        Ok((t, route))
    }
}

/// A fresh place in the pattern for every transfer, so no two runs send identical streams.
fn next_offset() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(12_345);
    NEXT.fetch_add(7_777_777, Ordering::Relaxed)
}

/// The result of one single-tunnel bulk transfer.
pub struct Bulk {
    pub mbps: f64,
    /// Proxy CPU seconds per 10^9 payload bytes (None without a proxy).
    pub cpu_s_per_gb: Option<f64>,
}

/// Reads the proxy's CPU time (None for the direct path).
fn cpu_time(pid: Option<u32>) -> io::Result<Option<CpuTime>> {
    pid.map(CpuTime::read).transpose()
}

fn bulk_result(
    ctx: &Ctx,
    bytes: u64,
    secs: f64,
    cpu0: Option<CpuTime>,
    cpu1: Option<CpuTime>,
) -> Bulk {
    Bulk {
        mbps: bytes as f64 / 1e6 / secs,
        cpu_s_per_gb: cpu0
            .zip(cpu1)
            .map(|(a, b)| b.seconds_since(&a, ctx.ticks) / (bytes as f64 / 1e9)),
    }
}

/// Sends `count` pattern bytes to the sink in 64 KiB messages and waits for its verdict.
fn push(t: &mut Tunnel, count: u64) -> io::Result<()> {
    let offset = next_offset();
    t.writer.send(&Request { count, offset }.encode())?;
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(CHUNK as u64) as usize;
        t.writer
            .send_pattern(offset + done, n)
            .map_err(|e| explain(e, &format!("sending, after {done} of {count} bytes")))?;
        done += n as u64;
    }
    let mut verdict = [0u8; 1];
    t.reader
        .read_exact(&mut verdict)
        .map_err(|e| explain(e, "waiting for the sink's verdict"))?;
    match &verdict {
        b"K" => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the sink received corrupted data",
        )),
    }
}

/// Adds where it happened to an error, and says "timed out" for a socket timeout.
fn explain(e: io::Error, context: &str) -> io::Error {
    let what = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    };
    io::Error::new(e.kind(), format!("{context}: {what}"))
}

/// Asks the source for `count` pattern bytes and receives and checks all of them.
fn pull(t: &mut Tunnel, count: u64) -> io::Result<()> {
    let offset = next_offset();
    t.writer.send(&Request { count, offset }.encode())?;
    receive(&mut t.reader, offset, count)
}

/// Receives `count` bytes of the pattern stream starting at `offset`, checking every one.
fn receive(reader: &mut Reader, offset: u64, count: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < count {
        let n = reader
            .verify_next(offset + done, (count - done).min(BIG_BUF as u64) as usize)
            .map_err(|e| {
                let context = format!(
                    "receiving, after {done} of {count} bytes ({})",
                    reader.state()
                );
                explain(e, &context)
            })?;
        if n == 0 {
            let msg = format!("after {done} of {count} bytes: {}", reader.eof_message());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        done += n as u64;
    }
    Ok(())
}

/// Single-tunnel upload: client → proxy → sink.
pub fn upload(ctx: &Ctx, ep: &Endpoint, bytes: u64) -> io::Result<Bulk> {
    let (mut t, route) = ctx.open(ep, Which::Sink)?;
    let cpu0 = cpu_time(route.pid)?;
    let start = Instant::now();
    push(&mut t, bytes)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu_time(route.pid)?;
    t.close()?;
    Ok(bulk_result(ctx, bytes, secs, cpu0, cpu1))
}

/// Single-tunnel download: source → proxy → client.
pub fn download(ctx: &Ctx, ep: &Endpoint, bytes: u64) -> io::Result<Bulk> {
    let (mut t, route) = ctx.open(ep, Which::Source)?;
    let cpu0 = cpu_time(route.pid)?;
    let start = Instant::now();
    pull(&mut t, bytes)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu_time(route.pid)?;
    t.close()?;
    Ok(bulk_result(ctx, bytes, secs, cpu0, cpu1))
}

/// Echo throughput: one thread sends `bytes` while this one receives and checks them all.
/// MB/s counts the payload once (what went around the loop).
pub fn echo(ctx: &Ctx, ep: &Endpoint, bytes: u64) -> io::Result<f64> {
    let (
        Tunnel {
            mut reader,
            mut writer,
        },
        _,
    ) = ctx.open(ep, Which::Echo)?;
    let offset = next_offset();
    let start = Instant::now();
    let sender = thread::Builder::new()
        .stack_size(CLIENT_STACK)
        .spawn(move || {
            let mut done = 0u64;
            while done < bytes {
                let n = (bytes - done).min(CHUNK as u64) as usize;
                writer.send_pattern(offset + done, n)?;
                done += n as u64;
            }
            Ok::<_, io::Error>(writer)
        })?;
    let received = receive(&mut reader, offset, bytes);
    let secs = start.elapsed().as_secs_f64();
    let writer = sender.join().expect("sender thread")?;
    received?;
    Tunnel { reader, writer }.close()?;
    Ok(bytes as f64 / 1e6 / secs)
}

/// 64-byte round trips through the echo target: (p50, p99, p99.9) in microseconds.
pub fn latency(ctx: &Ctx, ep: &Endpoint, count: usize) -> io::Result<[f64; 3]> {
    let (mut t, _) = ctx.open(ep, Which::Echo)?;
    let mut reply = [0u8; PROBE];
    let mut samples = Vec::with_capacity(count);
    let warmup = 500;
    for i in 0..warmup + count {
        let offset = (i * PROBE) as u64;
        let start = Instant::now();
        t.writer.send(expected(offset, PROBE))?;
        t.reader.read_exact(&mut reply)?;
        let took = start.elapsed();
        verify(offset, &reply)?;
        if i >= warmup {
            samples.push(took.as_nanos() as u64);
        }
    }
    t.close()?;
    samples.sort_unstable();
    let pick = |per_mille: usize| {
        samples[(samples.len() * per_mille / 1000).min(samples.len() - 1)] as f64 / 1e3
    };
    Ok([pick(500), pick(990), pick(999)])
}

/// Direction of a parallel test.
#[derive(Clone, Copy, Debug)]
pub enum Dir {
    Up,
    Down,
}

/// `n` tunnels, each on its own client thread, transfer `total / n` bytes each at the same
/// time; returns the aggregate MB/s from the first start to the last finish.
pub fn parallel(ctx: &Ctx, ep: &Endpoint, n: usize, dir: Dir, total: u64) -> io::Result<f64> {
    let per = (total / n as u64).max(CHUNK as u64);
    let which = match dir {
        Dir::Up => Which::Sink,
        Dir::Down => Which::Source,
    };
    let barrier = Arc::new(Barrier::new(n));
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        // Open all tunnels first, one by one from here, so the timed part only transfers.
        let opened = ctx.open(ep, which);
        let barrier = Arc::clone(&barrier);
        let worker = thread::Builder::new()
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                barrier.wait();
                // Each worker times itself: with 64 busy threads on 2 cores, a timer read by
                // another thread could start late.
                let start = Instant::now();
                let (mut t, _) = opened?;
                match dir {
                    Dir::Up => push(&mut t, per)?,
                    Dir::Down => pull(&mut t, per)?,
                }
                let end = Instant::now();
                t.close()?;
                Ok::<_, io::Error>((start, end))
            })?;
        workers.push(worker);
    }
    let mut times = Vec::with_capacity(n);
    let mut first_error = None;
    for w in workers {
        match w.join().expect("worker thread") {
            Ok(t) => times.push(t),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let start = times.iter().map(|t| t.0).min().unwrap();
    let end = times.iter().map(|t| t.1).max().unwrap();
    Ok((per * n as u64) as f64 / 1e6 / (end - start).as_secs_f64())
}

/// Tunnels opened, used (one 64-byte round trip) and closed per second, one client thread,
/// for `duration`.
pub fn tunnel_rate(ctx: &Ctx, ep: &Endpoint, duration: Duration) -> io::Result<f64> {
    let mut reply = [0u8; PROBE];
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < duration {
        let (mut t, _) = ctx.open(ep, Which::Echo)?;
        let offset = count * PROBE as u64;
        t.writer.send(expected(offset, PROBE))?;
        t.reader.read_exact(&mut reply)?;
        verify(offset, &reply)?;
        t.close()?;
        count += 1;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Polls `value` until `done` says so, or until it has not changed for a second.
fn wait_while_changing(value: impl Fn() -> u64, done: impl Fn(u64) -> bool) {
    let mut last = value();
    let mut since = Instant::now();
    while !done(last) && since.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(20));
        let now = value();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// What the idle-tunnel test found.
pub struct Idle {
    /// Tunnels that were open end to end (handshake done, target reached) while held.
    pub held: usize,
    /// Of those, how many carried data both ways at the end.
    pub alive: usize,
    pub rss_kib_per_tunnel: f64,
    pub pss_kib_per_tunnel: f64,
    pub threads_per_tunnel: f64,
    pub maps_per_tunnel: f64,
    /// Median time to open one more tunnel through the same proxy and do one round trip
    /// while the others are held (NaN if that failed).
    pub new_tunnel_ms: f64,
    /// Why something went wrong, if it did.
    pub note: Option<String>,
}

/// Opens a tunnel to the idle target and announces its id there.
fn open_idle(route: &Route, proto: Proto, id: u64) -> io::Result<Tunnel> {
    // Idle tunnels get a small receive buffer: the client holds thousands of them.
    let mut t = Tunnel::open(route.addr, &route.path, proto, 4096, Duration::from_secs(5))?;
    t.writer.send(&id.to_le_bytes())?;
    Ok(t)
}

/// The 8 bytes sent through idle tunnel `id` towards the target, and back.
fn ping(id: u64) -> [u8; 8] {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()
}

fn pong(id: u64) -> [u8; 8] {
    (!id).to_le_bytes()
}

/// Sends 8 bytes through tunnel `id` to its parked target socket and 8 bytes back,
/// playing the target's part here; true if both arrived intact.
fn round_trip(parked: &IdleTarget, id: u64, t: &mut Tunnel) -> io::Result<bool> {
    let lost = || io::Error::other("the tunnel never reached the target");
    let mut target_side = parked.take(id, Duration::from_secs(2)).ok_or_else(lost)?;
    t.writer.send(&ping(id))?;
    let mut got = [0u8; 8];
    target_side.read_exact(&mut got)?;
    target_side.write_all(&pong(id))?;
    let mut back = [0u8; 8];
    t.reader.read_exact(&mut back)?;
    Ok(got == ping(id) && back == pong(id))
}

/// Time left until `deadline`, at least 1 ms (a zero socket timeout would mean "none").
fn left(deadline: Instant) -> Option<Duration> {
    Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    )
}

/// [`round_trip`] for all held tunnels at once, in three sweeps (pings out, target ends
/// answer, answers in), each with one shared deadline: a proxy that lost many tunnels
/// then costs seconds, not a timeout per lost tunnel. Returns how many are alive.
fn check_alive(parked: &IdleTarget, tunnels: &mut [(u64, Tunnel)]) -> usize {
    let mut ok: Vec<bool> = tunnels
        .iter_mut()
        .map(|(id, t)| t.writer.send(&ping(*id)).is_ok())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    for ((id, _), ok) in tunnels.iter().zip(&mut ok) {
        let answered = *ok
            && parked.take(*id, Duration::ZERO).is_some_and(|mut s| {
                let mut got = [0u8; 8];
                s.set_read_timeout(left(deadline)).is_ok()
                    && s.read_exact(&mut got).is_ok()
                    && got == ping(*id)
                    && s.write_all(&pong(*id)).is_ok()
            });
        *ok = answered;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for ((id, t), ok) in tunnels.iter_mut().zip(&mut ok) {
        let mut back = [0u8; 8];
        *ok = *ok
            && t.set_read_timeout(left(deadline)).is_ok()
            && t.reader.read_exact(&mut back).is_ok()
            && back == pong(*id);
    }
    ok.into_iter().filter(|&b| b).count()
}

/// The idle-tunnel test of one endpoint: [`idle`] against a freshly started instance of its
/// proxy when wsbench started the proxy (else against the running one). If the proxy dies,
/// its last words are added to the note.
pub fn idle_test(ctx: &Ctx, ep: &Endpoint, n: usize) -> io::Result<Idle> {
    let Some(spawner) = &ep.spawner else {
        return idle(ctx, ep.proto, &ep.route(&ctx.targets, Which::Idle), n);
    };
    let (mut proxy, route) = spawner.spawn(ctx.targets.idle.addr, n)?;
    let mut result = idle(ctx, ep.proto, &route, n);
    if let Some(report) = proxy.exit_report() {
        match &mut result {
            Ok(r) => {
                r.note = Some(match r.note.take() {
                    Some(note) => format!("{note}; {report}"),
                    None => report,
                })
            }
            Err(e) => *e = io::Error::other(format!("{e}; {report}")),
        }
    }
    result
}

/// Opens `n` tunnels through `route` to the idle target and holds them; reads the proxy's
/// memory and threads, times new tunnels through the same proxy, checks that every held
/// tunnel still works, then closes them all.
pub fn idle(ctx: &Ctx, proto: Proto, route: &Route, n: usize) -> io::Result<Idle> {
    let pid = route
        .pid
        .ok_or_else(|| io::Error::other("no proxy process to measure"))?;
    let parked = &ctx.targets.idle;
    parked.clear();
    let before = ProcStats::read(pid)?;

    // 1. Open the tunnels one after another; stop after 5 failures in a row.
    let mut tunnels = Vec::with_capacity(n);
    let mut notes = Vec::new();
    let mut open_error = None;
    let mut failures_in_a_row = 0;
    for id in 0..n as u64 {
        match open_idle(route, proto, id) {
            Ok(t) => {
                tunnels.push((id, t));
                failures_in_a_row = 0;
            }
            Err(e) => {
                open_error.get_or_insert_with(|| format!("opening tunnel {id}: {e}"));
                failures_in_a_row += 1;
                if failures_in_a_row == 5 {
                    break;
                }
            }
        }
    }
    notes.extend(open_error);
    wait_while_changing(
        || parked.count() as u64,
        |count| count >= tunnels.len() as u64,
    );
    thread::sleep(Duration::from_millis(300)); // let the proxy settle
    // A proxy may complete handshakes it cannot carry (websockify past ~500): count only
    // the tunnels that reached the target.
    let held = parked.count().min(tunnels.len());
    if held < tunnels.len() {
        notes.push(format!(
            "{} handshakes completed, {held} tunnels reached the target",
            tunnels.len()
        ));
    }
    let held_stats = match ProcStats::read(pid) {
        Ok(stats) => stats,
        Err(_) => {
            // The proxy died while they were opening: report how far it got.
            return Ok(Idle {
                held,
                alive: 0,
                rss_kib_per_tunnel: f64::NAN,
                pss_kib_per_tunnel: f64::NAN,
                threads_per_tunnel: f64::NAN,
                maps_per_tunnel: f64::NAN,
                new_tunnel_ms: f64::NAN,
                note: Some(format!("the proxy died after {} tunnels", tunnels.len())),
            });
        }
    };

    // 2. While they are held: how long does one more tunnel take (open + one round trip)?
    let mut opens = Vec::new();
    for k in 0..5 {
        let id = n as u64 + k;
        let start = Instant::now();
        let attempt = open_idle(route, proto, id).and_then(|mut t| {
            let ok = round_trip(parked, id, &mut t)?;
            let took = start.elapsed();
            t.close()?;
            Ok((ok, took))
        });
        match attempt {
            Ok((true, took)) => opens.push(took.as_secs_f64() * 1e3),
            Ok((false, _)) => notes.push("new tunnel while held: data corrupted".into()),
            Err(e) => notes.push(format!("new tunnel while held: {e}")),
        }
        if opens.len() as u64 <= k {
            break; // one failure is enough to know
        }
    }
    opens.sort_by(f64::total_cmp);

    // 3. Is every held tunnel still alive?
    let alive = check_alive(parked, &mut tunnels);

    // 4. Close everything and give the proxy a moment to wind down.
    drop(tunnels);
    parked.clear();
    wait_while_changing(
        || ProcStats::read(pid).map_or(0, |s| s.threads),
        |threads| threads <= before.threads + 2,
    );

    let per = |after: u64, before: u64| (after as f64 - before as f64) / held.max(1) as f64;
    Ok(Idle {
        held,
        alive,
        rss_kib_per_tunnel: per(held_stats.rss_kib, before.rss_kib),
        pss_kib_per_tunnel: per(held_stats.pss_kib, before.pss_kib),
        threads_per_tunnel: per(held_stats.threads, before.threads),
        maps_per_tunnel: per(held_stats.maps, before.maps),
        new_tunnel_ms: if opens.len() == 5 { opens[2] } else { f64::NAN },
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

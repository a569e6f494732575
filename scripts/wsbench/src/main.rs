//! `wsbench`: the load generator that measures wsproxy side by side with plain TCP and
//! with its peers (websocat, websockify), using one client for all of them.
//!
//! # What runs
//! - **Targets** (threads inside wsbench, see [`targets`]): `echo`, `sink` (reads and
//!   verifies), `source` (sends a deterministic pseudo-random stream) and `idle` (parks
//!   connections). Every byte that arrives anywhere is compared with the expected stream.
//! - **The proxy**: wsbench spawns `wsproxy -p 0 -l 127.0.0.1` itself and reads its address
//!   from the `listening on` line; tunnels name their target in the path, `/127.0.0.1:PORT`.
//!   Peers, if installed, get one instance per target and the path `/`.
//! - **The client** (see [`client`]): hand-written framing, one `write` per message, large
//!   reads, no allocation per frame, and Base64 copied from a precomputed encoding of the
//!   test stream rather than computed, so that the client is not the bottleneck.
//!
//! # Columns (client paths)
//! `direct` (plain TCP to the target: the baseline), `binary` (RFC 6455, no subprotocol,
//! binary frames), `websockets-proxy` and `base64` (RFC 6455 with that subprotocol: Base64
//! in text frames), `hixie76` (draft-76 handshake, Base64 in `0x00…0xFF` frames), and
//! `websocat`/`websockify` (RFC 6455 binary through the peer).
//!
//! # Rows (figures)
//! - upload / download / echo MB/s over one tunnel, 64 KiB messages (MB = 10^6 bytes of
//!   payload); echo sends on one thread and receives on another;
//! - proxy CPU seconds per GB relayed, upload and download: the CPU time of the proxy
//!   process (and its children) read just before and after the timed part; utime+stime as
//!   in `/proc/PID/stat`, but taken to the nanosecond from `/proc/PID/task/*/schedstat`
//!   (see [`procs::CpuTime`]);
//! - 64-byte round-trip time p50/p99/p99.9 over ≥ 10,000 messages (after 500 warm-up ones);
//! - aggregate MB/s of 1, 8 and 64 tunnels transferring at once, each on its own thread;
//! - tunnels opened + used (one round trip) + closed per second, one client thread;
//! - idle tunnels, each count against a freshly started proxy: how many open, how many
//!   still carry data both ways at the end, the proxy's RSS and PSS
//!   (`/proc/PID/smaps_rollup`), threads and memory maps (`/proc/PID/stat`, `/proc/PID/maps`)
//!   per tunnel, and how long one more tunnel takes while they are held;
//! - how much the proxy's RSS grew over all the bulk transfers;
//! - UDP (see [`udp`]): 64-byte datagram round trips p50/p99 with the probes that got no
//!   answer, and 64-byte datagrams per second one way with the datagrams lost on the way,
//!   for plain UDP (`direct`), wsproxy (`binary`: RFC 6455 binary, path
//!   `/udp/127.0.0.1:PORT`) and websocat's UDP mode (`ws-l:` → `udp:`).
//!
//! Each figure is the median of several runs; the runs of the different columns are
//! interleaved so that a noisy moment on the shared machine hits them all alike. Every
//! figure is also given as a ratio to the direct-TCP figure of the same run, and the end
//! of the output checks the figures against the targets of the performance issue.

mod client;
mod measure;
mod procs;
mod report;
mod targets;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use client::Proto;
use measure::{Ctx, Dir, Endpoint, EndpointKind, Spawner};
use procs::{Peer, Proc, ProcStats};
use report::{Metric, Report};
use targets::{Targets, Which};
use udp::{UdpEndpoint, UdpTargets, Via};

const USAGE: &str = "\
wsbench: measure wsproxy (and websocat/websockify if present) against plain TCP

USAGE:
  wsbench [OPTIONS]          run the benchmark, print a table and BENCH lines
  wsbench serve              only start the targets, print their addresses, run until killed

OPTIONS:
  --quick                    short run (< 1 minute): small sizes, 1,000 idle tunnels
  --runs N                   runs per figure (default 5; quick: 3 for the single-tunnel
                             throughput, 1 for the other tests)
  --size MIB                 bytes per single-tunnel transfer (default 1024, quick 48)
  --par-size MIB             total bytes of a parallel transfer (default 256, quick 32)
  --rtt-count N              round trips per latency run (default 20000, quick 10000)
  --rate-secs S              duration of a tunnels-per-second run (default 1, quick 0.3)
  --idle LIST                idle tunnel counts, e.g. 1000,5000,9000 (default 1000,5000,
                             quick 1000; 0 skips the test)
  --udp-count N              datagrams per one-way UDP run (default 200000, quick 50000)
  --only LIST                groups to run: bulk,latency,parallel,rate,idle,udp (default all)
  --modes LIST               columns: direct,binary,websockets-proxy,base64,hixie76,
                             websocat,websockify (default all that are available)
  --proxy PATH               wsproxy binary to spawn (default: next to wsbench)
  --proxy-arg ARG            extra argument for wsproxy (repeatable)
  --proxy-addr ADDR --proxy-pid PID
                             measure an already running wsproxy instead
  --peer-dir DIR             look for websocat/websockify here before PATH
  --no-peers                 do not measure websocat/websockify
  -h, --help                 this text
";

/// Parsed command line.
struct Options {
    /// Runs per figure of the bulk tests, and of the others (latency, parallel, rate).
    runs: usize,
    other_runs: usize,
    bulk_bytes: u64,
    par_bytes: u64,
    par_counts: Vec<usize>,
    rtt_count: usize,
    rate_secs: f64,
    udp_count: u64,
    idle_counts: Vec<usize>,
    only: Vec<String>,
    modes: Option<Vec<String>>,
    proxy: Option<PathBuf>,
    proxy_args: Vec<String>,
    proxy_addr: Option<SocketAddr>,
    proxy_pid: Option<u32>,
    peer_dir: Option<PathBuf>,
    no_peers: bool,
}

fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse().map_err(|_| format!("bad list item {p:?}")))
        .collect()
}

fn parse_options(mut args: pico_args::Arguments) -> Result<Options, pico_args::Error> {
    let quick = args.contains("--quick");
    let mib = 1024 * 1024;
    let runs: Option<usize> = args.opt_value_from_str("--runs")?;
    let mut opts = Options {
        runs: 0,
        other_runs: 0,
        bulk_bytes: args
            .opt_value_from_str::<_, u64>("--size")?
            .unwrap_or(if quick { 48 } else { 1024 })
            * mib,
        par_bytes: args
            .opt_value_from_str::<_, u64>("--par-size")?
            .unwrap_or(if quick { 32 } else { 256 })
            * mib,
        par_counts: vec![1, 8, 64],
        rtt_count: args.opt_value_from_str("--rtt-count")?.unwrap_or(if quick {
            10_000
        } else {
            20_000
        }),
        rate_secs: args
            .opt_value_from_str("--rate-secs")?
            .unwrap_or(if quick { 0.3 } else { 1.0 }),
        udp_count: args.opt_value_from_str("--udp-count")?.unwrap_or(if quick {
            50_000
        } else {
            200_000
        }),
        idle_counts: args
            .opt_value_from_fn("--idle", list::<usize>)?
            .unwrap_or(if quick { vec![1000] } else { vec![1000, 5000] })
            .into_iter()
            .filter(|&n| n > 0)
            .collect(),
        only: args
            .opt_value_from_fn("--only", list::<String>)?
            .unwrap_or_default(),
        modes: args.opt_value_from_fn("--modes", list::<String>)?,
        proxy: args.opt_value_from_str("--proxy")?,
        proxy_args: args.values_from_str("--proxy-arg")?,
        proxy_addr: args.opt_value_from_str("--proxy-addr")?,
        proxy_pid: args.opt_value_from_str("--proxy-pid")?,
        peer_dir: args.opt_value_from_str("--peer-dir")?,
        no_peers: args.contains("--no-peers"),
    };
    // --quick keeps three runs where they matter most (single-tunnel throughput) and does
    // one of the rest.
    opts.runs = runs.unwrap_or(if quick { 3 } else { 5 });
    opts.other_runs = runs.unwrap_or(if quick { 1 } else { 5 });
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(pico_args::Error::ArgumentParsingFailed {
            cause: format!("unexpected arguments: {rest:?}"),
        });
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let serve_only = args.subcommand().ok().flatten().as_deref() == Some("serve");
    let result = if serve_only {
        serve()
    } else {
        match parse_options(args) {
            Ok(opts) => run(opts),
            Err(e) => {
                eprintln!("wsbench: {e}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `wsbench serve`: the targets alone, for trying a proxy by hand.
fn serve() -> io::Result<()> {
    let t = Targets::start()?;
    println!("echo   {}", t.echo);
    println!(
        "sink   {}  (send 16 bytes: count u64 LE, offset u64 LE; then the pattern)",
        t.sink
    );
    println!(
        "source {}  (send 16 bytes: count u64 LE, offset u64 LE; get the pattern)",
        t.source
    );
    let u = UdpTargets::start()?;
    println!("udp echo {}  (sends every datagram back)", u.echo);
    println!(
        "udp sink {}  (counts 64-byte datagrams: seq u64 LE, then the pattern)",
        u.sink
    );
    loop {
        std::thread::park();
    }
}

/// The processes under test; dropping this stops them.
struct Under {
    /// Kept only to be dropped at the end, which stops them.
    procs: Vec<Proc>,
    endpoints: Vec<Endpoint>,
    /// The columns of the UDP tests (empty unless they run).
    udp_endpoints: Vec<UdpEndpoint>,
}

/// Something measured in a column of the report.
trait Column {
    fn column(&self) -> &str;
}

impl Column for Endpoint {
    fn column(&self) -> &str {
        &self.name
    }
}

impl Column for UdpEndpoint {
    fn column(&self) -> &str {
        &self.name
    }
}

impl Options {
    /// Whether `--modes` asks for this column (all do without it).
    fn wants(&self, column: &str) -> bool {
        self.modes
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == column))
    }
}

/// Starts wsproxy and the peers and lists the endpoints (columns) to measure; with
/// `udp` (the UDP targets, when those tests run) also the UDP columns.
fn start_endpoints(
    opts: &Options,
    targets: &Targets,
    udp: Option<&UdpTargets>,
) -> io::Result<Under> {
    let mut under = Under {
        procs: Vec::new(),
        endpoints: Vec::new(),
        udp_endpoints: Vec::new(),
    };
    if opts.wants("direct") {
        under.endpoints.push(Endpoint {
            name: "direct".into(),
            proto: Proto::Direct,
            kind: EndpointKind::Direct,
            spawner: None,
        });
        if udp.is_some() {
            under.udp_endpoints.push(UdpEndpoint {
                name: "direct".into(),
                via: Via::Direct,
            });
        }
    }
    start_wsproxy(opts, udp.is_some(), &mut under)?;
    // Peers: optional; one instance per busy target (the idle test starts its own).
    for peer in [Peer::Websocat, Peer::Websockify] {
        if opts.no_peers || !opts.wants(peer.name()) {
            continue;
        }
        match peer.find(opts.peer_dir.as_deref()) {
            Some(program) => start_peer(peer, &program, targets, udp, &mut under),
            None => eprintln!(
                "wsbench: {} not found (scripts/bench.sh --install-peers), skipped",
                peer.name()
            ),
        }
    }
    Ok(under)
}

/// wsproxy's columns: spawned here unless an address and pid were given. With `udp`, its
/// `binary` column is also a UDP column.
fn start_wsproxy(opts: &Options, udp: bool, under: &mut Under) -> io::Result<()> {
    let wsproxy_modes = [
        ("binary", Proto::Binary),
        ("websockets-proxy", Proto::Text("websockets-proxy")),
        ("base64", Proto::Text("base64")),
        ("hixie76", Proto::Hixie76),
    ];
    if !wsproxy_modes.iter().any(|(name, _)| opts.wants(name)) {
        return Ok(());
    }
    let (addr, pid, program) = match (opts.proxy_addr, opts.proxy_pid) {
        (Some(addr), Some(pid)) => (addr, pid, None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(io::Error::other("--proxy-addr and --proxy-pid go together"));
        }
        (None, None) => {
            let program = match &opts.proxy {
                Some(p) => p.clone(),
                None => std::env::current_exe()?.with_file_name("wsproxy"),
            };
            let p = procs::spawn_wsproxy(&program, &opts.proxy_args)?;
            eprintln!("wsbench: wsproxy (pid {}) listening on {}", p.pid(), p.addr);
            let found = (p.addr, p.pid(), Some(program));
            under.procs.push(p);
            found
        }
    };
    if udp && opts.wants("binary") {
        under.udp_endpoints.push(UdpEndpoint {
            name: "binary".into(),
            via: Via::Wsproxy(addr),
        });
    }
    for (name, proto) in wsproxy_modes {
        if opts.wants(name) {
            under.endpoints.push(Endpoint {
                name: name.into(),
                proto,
                kind: EndpointKind::PathRouted { addr, pid },
                spawner: program.clone().map(|program| Spawner::Wsproxy {
                    program,
                    args: opts.proxy_args.clone(),
                }),
            });
        }
    }
    Ok(())
}

/// A peer's column: one instance per busy TCP target, and with `udp`, websocat's UDP mode
/// towards the UDP echo and sink. A peer that does not start is skipped, with a note.
fn start_peer(
    peer: Peer,
    program: &Path,
    targets: &Targets,
    udp: Option<&UdpTargets>,
    under: &mut Under,
) {
    let mut instances = Vec::new();
    let mut started = Vec::new();
    for which in [Which::Echo, Which::Sink, Which::Source] {
        match peer.spawn(program, targets.addr(which)) {
            Ok(p) => {
                instances.push((which, p.addr, p.pid()));
                started.push(p);
            }
            Err(e) => {
                eprintln!("wsbench: cannot start {}: {e}; skipped", program.display());
                break;
            }
        }
    }
    if instances.len() == 3 {
        eprintln!("wsbench: also measuring {}", program.display());
        under.procs.extend(started);
        under.endpoints.push(Endpoint {
            name: peer.name().into(),
            proto: Proto::Binary,
            kind: EndpointKind::Fixed { instances },
            spawner: Some(Spawner::Peer {
                peer,
                program: program.to_path_buf(),
            }),
        });
    }
    if let Some(udp) = udp.filter(|_| peer == Peer::Websocat) {
        match start_udp_peer(peer, program, udp) {
            Ok((started, via)) => {
                under.procs.extend(started);
                under.udp_endpoints.push(UdpEndpoint {
                    name: peer.name().into(),
                    via,
                });
            }
            Err(e) => eprintln!(
                "wsbench: cannot start {} for UDP: {e}; skipped",
                peer.name()
            ),
        }
    }
}

/// Starts a peer's UDP mode twice, towards the UDP echo and the UDP sink.
fn start_udp_peer(peer: Peer, program: &Path, udp: &UdpTargets) -> io::Result<(Vec<Proc>, Via)> {
    let echo = peer.spawn_udp(program, udp.echo)?;
    let sink = peer.spawn_udp(program, udp.sink)?;
    let via = Via::Fixed {
        echo: echo.addr,
        sink: sink.addr,
    };
    Ok((vec![echo, sink], via))
}

/// Runs `f` for each run and endpoint, recording values (or the first error per column).
/// `f` returns one or more (metric, value) pairs.
fn each_run<E: Column, F>(
    runs: usize,
    eps: &[E],
    report: &mut Report,
    what: &str,
    main: &Metric,
    mut f: F,
) where
    F: FnMut(&E) -> io::Result<Vec<(Metric, f64)>>,
{
    for run in 1..=runs {
        for ep in eps {
            let name = ep.column();
            if report.failed(&main.key, name) {
                continue;
            }
            match f(ep) {
                Ok(values) => {
                    let shown: Vec<String> = values
                        .iter()
                        .map(|(m, v)| format!("{}={v:.*}", m.key, m.decimals))
                        .collect();
                    eprintln!("  {what} run {run}/{runs}  {name:<17} {}", shown.join(" "));
                    for (m, v) in values {
                        report.add(&m, name, v);
                    }
                }
                Err(e) => {
                    eprintln!("  {what} run {run}/{runs}  {name:<17} error: {e}");
                    report.fail(main, name, e.to_string());
                }
            }
        }
    }
}

/// Prints how long a group of tests took when dropped (on stderr, with the progress).
struct Timed(&'static str, Instant);

impl Timed {
    fn new(name: &'static str) -> Timed {
        Timed(name, Instant::now())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!(
            "wsbench: {} tests took {:.1} s",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

/// Sum of the RSS of the proxy processes behind an endpoint, in KiB.
fn rss_kib(ep: &Endpoint) -> Option<u64> {
    let pids = ep.pids();
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&p| ProcStats::read(p).ok().map(|s| s.rss_kib))
        .sum()
}

fn run(opts: Options) -> io::Result<()> {
    let group = |name: &str| opts.only.is_empty() || opts.only.iter().any(|g| g == name);
    let targets = Targets::start()?;
    let udp_targets = group("udp").then(UdpTargets::start).transpose()?;
    let under = start_endpoints(&opts, &targets, udp_targets.as_ref())?;
    let eps = &under.endpoints;
    if eps.is_empty() {
        return Err(io::Error::other("nothing to measure"));
    }
    let ctx = Ctx {
        targets,
        timeout: Duration::from_secs(20),
        ticks: procs::clock_ticks(),
    };
    let mut columns: Vec<String> = eps.iter().map(|e| e.name.clone()).collect();
    for ep in &under.udp_endpoints {
        if !columns.contains(&ep.name) {
            columns.push(ep.name.clone());
        }
    }
    let mut report = Report::new(columns);
    let mib = |b: u64| b / (1024 * 1024);

    if group("bulk") {
        let _t = Timed::new("bulk");
        // Single-tunnel throughput, with the proxy's CPU time and its RSS before and after.
        // A short warm-up first fills the proxies' buffer pools (a fixed cost, about 5 MiB
        // for wsproxy), so that the RSS figure shows growth with the bytes relayed.
        for ep in eps {
            let warm = 64 << 20;
            let warmed = measure::upload(&ctx, ep, warm)
                .and_then(|_| measure::download(&ctx, ep, warm))
                .and_then(|_| measure::echo(&ctx, ep, warm));
            if let Err(e) = warmed {
                eprintln!("wsbench: warm-up of {} failed: {e}", ep.name);
            }
        }
        let rss_before: Vec<Option<u64>> = eps.iter().map(rss_kib).collect();
        let n = opts.bulk_bytes;
        let up = Metric::new(
            "upload_MBps",
            format!("upload MB/s (1 tunnel, {} MiB)", mib(n)),
            0,
            true,
        );
        let cpu_up = Metric::new("cpu_up_s_per_GB", "proxy CPU s/GB, upload", 2, false);
        let down = Metric::new("download_MBps", "download MB/s (1 tunnel)", 0, true);
        let cpu_down = Metric::new("cpu_down_s_per_GB", "proxy CPU s/GB, download", 2, false);
        let echo = Metric::new("echo_MBps", "echo MB/s (1 tunnel, send ∥ receive)", 0, true);
        eprintln!("wsbench: single-tunnel throughput, {} MiB per run", mib(n));
        each_run(opts.runs, eps, &mut report, "upload  ", &up, |ep| {
            let b = measure::upload(&ctx, ep, n)?;
            Ok([(up.clone(), b.mbps)]
                .into_iter()
                .chain(b.cpu_s_per_gb.map(|c| (cpu_up.clone(), c)))
                .collect())
        });
        each_run(opts.runs, eps, &mut report, "download", &down, |ep| {
            let b = measure::download(&ctx, ep, n)?;
            Ok([(down.clone(), b.mbps)]
                .into_iter()
                .chain(b.cpu_s_per_gb.map(|c| (cpu_down.clone(), c)))
                .collect())
        });
        each_run(opts.runs, eps, &mut report, "echo    ", &echo, |ep| {
            Ok(vec![(echo.clone(), measure::echo(&ctx, ep, n)?)])
        });
        // RSS growth: one figure per proxy process, shown in the first column using it.
        let growth = Metric::new(
            "rss_growth_KiB",
            "proxy RSS after bulk − after warm-up (KiB/process)",
            0,
            false,
        );
        let mut seen = Vec::new();
        for (ep, before) in eps.iter().zip(rss_before) {
            if let (Some(b), Some(a)) = (before, rss_kib(ep))
                && !seen.contains(&ep.pids())
            {
                seen.push(ep.pids());
                report.add(&growth, &ep.name, a as f64 - b as f64);
            }
        }
    }

    if group("latency") {
        let _t = Timed::new("latency");
        eprintln!("wsbench: 64-byte round trips, {} per run", opts.rtt_count);
        let p = [
            Metric::new("rtt_p50_us", "64-byte RTT p50 µs", 1, true),
            Metric::new("rtt_p99_us", "64-byte RTT p99 µs", 1, true),
            Metric::new("rtt_p999_us", "64-byte RTT p99.9 µs", 1, true),
        ];
        each_run(opts.other_runs, eps, &mut report, "rtt     ", &p[0], |ep| {
            let v = measure::latency(&ctx, ep, opts.rtt_count)?;
            Ok(p.iter().cloned().zip(v).collect())
        });
    }

    if group("parallel") {
        let _t = Timed::new("parallel");
        eprintln!(
            "wsbench: parallel tunnels, {} MiB in total per run",
            mib(opts.par_bytes)
        );
        for dir in [Dir::Up, Dir::Down] {
            for &n in &opts.par_counts {
                let (key, what) = match dir {
                    Dir::Up => (format!("par{n}_up_MBps"), "upload"),
                    Dir::Down => (format!("par{n}_down_MBps"), "download"),
                };
                let m = Metric::new(key, format!("{n} parallel tunnels, {what} MB/s"), 0, true);
                each_run(
                    opts.other_runs,
                    eps,
                    &mut report,
                    &format!("par{n:<2} {}", &what[..2]),
                    &m,
                    |ep| {
                        Ok(vec![(
                            m.clone(),
                            measure::parallel(&ctx, ep, n, dir, opts.par_bytes)?,
                        )])
                    },
                );
            }
        }
    }

    if group("rate") {
        let _t = Timed::new("rate");
        eprintln!(
            "wsbench: tunnels opened+used+closed per second, {} s per run",
            opts.rate_secs
        );
        let m = Metric::new("tunnels_per_s", "tunnels opened+used+closed /s", 0, true);
        let d = Duration::from_secs_f64(opts.rate_secs);
        each_run(opts.other_runs, eps, &mut report, "rate    ", &m, |ep| {
            Ok(vec![(m.clone(), measure::tunnel_rate(&ctx, ep, d)?)])
        });
    }

    if let Some(udp_targets) = &udp_targets {
        let _t = Timed::new("udp");
        udp_tests(&opts, &ctx, udp_targets, &under.udp_endpoints, &mut report);
    }

    let mut largest_idle = None;
    if group("idle") {
        let _t = Timed::new("idle");
        // Each idle tunnel costs wsbench two descriptors (its end and the target's end).
        let max = (procs::open_files_limit().saturating_sub(200) / 2) as usize;
        for &asked in &opts.idle_counts {
            let n = asked.min(max);
            if n < asked {
                eprintln!(
                    "wsbench: open-files limit allows {n} idle tunnels, not {asked} (raise `ulimit -n`)"
                );
            }
            largest_idle = largest_idle.max(Some(n));
            eprintln!("wsbench: {n} idle tunnels");
            let m = |what: &str, label: &str, decimals| {
                Metric::new(
                    format!("idle{n}_{what}"),
                    format!("{n} idle: {label}"),
                    decimals,
                    false,
                )
            };
            let rows = [
                m("held", "tunnels opened and held", 0),
                m("alive", "of those, alive at the end", 0),
                m("rss_KiB_per_tunnel", "proxy RSS KiB/tunnel", 1),
                m("pss_KiB_per_tunnel", "proxy PSS KiB/tunnel", 1),
                m("threads_per_tunnel", "proxy threads/tunnel", 2),
                m("maps_per_tunnel", "proxy memory maps/tunnel", 1),
                m("new_tunnel_ms", "new tunnel ms (while held)", 2),
            ];
            for ep in eps.iter().filter(|e| !e.pids().is_empty()) {
                match measure::idle_test(&ctx, ep, n) {
                    Ok(r) => {
                        let values = [
                            r.held as f64,
                            r.alive as f64,
                            r.rss_kib_per_tunnel,
                            r.pss_kib_per_tunnel,
                            r.threads_per_tunnel,
                            r.maps_per_tunnel,
                            r.new_tunnel_ms,
                        ];
                        eprintln!(
                            "  idle {n}  {:<17} held={} alive={} rss={:.1}KiB pss={:.1}KiB threads={:.2} maps={:.1} new={:.2}ms",
                            ep.name,
                            r.held,
                            r.alive,
                            values[2],
                            values[3],
                            values[4],
                            values[5],
                            values[6]
                        );
                        if let Some(e) = &r.note {
                            eprintln!("  idle {n}  {:<17} note: {e}", ep.name);
                        }
                        for (metric, v) in rows.iter().zip(values) {
                            report.add(metric, &ep.name, v);
                        }
                    }
                    Err(e) => {
                        eprintln!("  idle {n}  {:<17} error: {e}", ep.name);
                        report.fail(&rows[0], &ep.name, e.to_string());
                    }
                }
            }
        }
    }

    println!();
    report.print_table();
    println!();
    report.print_machine();
    println!();
    report.print_goals(largest_idle);
    if group("bulk") && opts.bulk_bytes < 256 << 20 {
        // /proc's CPU times are exact, but a 48 MiB transfer is tens of milliseconds of proxy
        // CPU, within reach of whatever else the machine does in that moment.
        println!(
            "note: {} MiB per transfer is too short for steady CPU-per-GB and MB/s figures; \
             judge the targets on a full run (scripts/bench.sh --idle 1000,5000,9000)",
            opts.bulk_bytes >> 20
        );
    }
    Ok(())
}

/// The UDP tests: round trips, then one-way datagrams per second, each interleaved over
/// the columns run by run like the TCP figures.
fn udp_tests(
    opts: &Options,
    ctx: &Ctx,
    targets: &UdpTargets,
    eps: &[UdpEndpoint],
    report: &mut Report,
) {
    let size = udp::DATAGRAM;
    eprintln!(
        "wsbench: UDP, {size}-byte datagrams: {} round trips, then {} one way, per run",
        opts.rtt_count, opts.udp_count
    );
    let rtt = [
        Metric::new(
            "udp_rtt_p50_us",
            format!("UDP {size}-byte RTT p50 µs"),
            1,
            true,
        ),
        Metric::new(
            "udp_rtt_p99_us",
            format!("UDP {size}-byte RTT p99 µs"),
            1,
            true,
        ),
        Metric::new(
            "udp_rtt_lost",
            format!("UDP RTT probes unanswered (of {})", opts.rtt_count + 500),
            0,
            false,
        ),
    ];
    each_run(opts.other_runs, eps, report, "udp rtt ", &rtt[0], |ep| {
        let r = udp::round_trips(ep, targets, opts.rtt_count, ctx.timeout)?;
        Ok(rtt
            .iter()
            .cloned()
            .zip([r.p50_us, r.p99_us, r.lost as f64])
            .collect())
    });
    let n = opts.udp_count;
    let one_way = [
        Metric::new(
            "udp_datagrams_per_s",
            format!("UDP {size}-byte datagrams/s one way (arrived)"),
            0,
            true,
        ),
        Metric::new("udp_sent", "UDP one way: datagrams sent", 0, false),
        Metric::new("udp_received", "UDP one way: datagrams arrived", 0, false),
        Metric::new("udp_lost_pct", "UDP one way: % lost", 2, false),
    ];
    each_run(
        opts.other_runs,
        eps,
        report,
        "udp 1way",
        &one_way[0],
        |ep| {
            let r = udp::one_way(ep, targets, n, ctx.timeout)?;
            let values = [r.per_s, r.sent as f64, r.received as f64, r.lost_pct()];
            Ok(one_way.iter().cloned().zip(values).collect())
        },
    );
}

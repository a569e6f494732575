//! Starting the proxies under test and reading their cost from `/proc`.
//!
//! - wsproxy is spawned as `wsproxy -p 0 -l 127.0.0.1`; its address is parsed from the
//!   `listening on <addr>` line it prints on stderr.
//! - The peers (websocat, websockify) serve one fixed target each, so one instance per
//!   target is started on a free port. For the UDP tests, websocat runs in its UDP mode
//!   (`ws-l:` → `udp:`, one message per datagram).
//! - [`CpuTime`] and [`ProcStats`] sum CPU time, and RSS, PSS, threads and memory maps,
//!   over a process and its descendants (websockify forks a child per connection; wsproxy
//!   and websocat are one process).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    /// The last lines it wrote to stderr (for explaining a crash).
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        match self.exit_report() {
            Some(report) => Err(io::Error::other(report)),
            None => Ok(()),
        }
    }

    /// If the process has exited: its status and last words on stderr.
    pub fn exit_report(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        thread::sleep(Duration::from_millis(50)); // let the reader thread catch the last lines
        let tail = self.stderr_tail.lock().unwrap();
        let words: Vec<&str> = tail.iter().map(String::as_str).collect();
        Some(format!(
            "the process exited ({status}); its stderr ended with: {}",
            words.join(" | ")
        ))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a thread that reads the child's stderr for its whole life (so it never blocks on
/// a full pipe), keeps the last lines, and passes each line to `on_line`.
fn watch_stderr(
    child: &mut Child,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> io::Result<Arc<Mutex<VecDeque<String>>>> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let keep = Arc::clone(&tail);
    thread::Builder::new()
        .name("child-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                let mut keep = keep.lock().unwrap();
                if keep.len() == 5 {
                    keep.pop_front();
                }
                keep.push_back(line);
            }
        })?;
    Ok(tail)
}

/// Spawns wsproxy on an ephemeral loopback port and waits for its `listening on` line.
pub fn spawn_wsproxy(program: &Path, extra: &[String]) -> io::Result<Proc> {
    let mut child = Command::new(program)
        .args(["-p", "0", "-l", "127.0.0.1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
        })?;
    // Find the address in the `listening on` line; echo warnings and errors.
    let (tx, rx) = mpsc::channel();
    let stderr_tail = watch_stderr(&mut child, move |line| {
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            let _ = tx.send(addr.parse::<SocketAddr>());
        } else if line.contains("panicked") || line.contains("fatal") || line.contains("ERROR") {
            eprintln!("wsbench: wsproxy says: {line}");
        }
    })?;
    let mut proc_ = Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        stderr_tail,
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(addr)) => {
            proc_.addr = addr;
            Ok(proc_)
        }
        Ok(Err(e)) => Err(io::Error::other(format!(
            "bad address in `listening on` line: {e}"
        ))),
        Err(_) => {
            proc_.check_alive()?;
            Err(io::Error::other(
                "wsproxy printed no `listening on` line within 10 s",
            ))
        }
    }
}

/// The optional peers, measured with the same client when installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Websocat,
    Websockify,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Websocat => "websocat",
            Peer::Websockify => "websockify",
        }
    }

    /// Finds the peer's executable in `dir` first, then on `PATH`.
    pub fn find(self, dir: Option<&Path>) -> Option<PathBuf> {
        let path_dirs =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
        dir.map(Path::to_path_buf)
            .into_iter()
            .chain(path_dirs.unwrap_or_default())
            .map(|d| d.join(self.name()))
            .find(|p| p.is_file())
    }

    /// Starts one instance relaying to the TCP `target` on a free loopback port.
    pub fn spawn(self, program: &Path, target: SocketAddr) -> io::Result<Proc> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        let args = match self {
            Peer::Websocat => vec![
                "--binary".to_string(),
                format!("ws-l:{listen}"),
                format!("tcp:{target}"),
            ],
            Peer::Websockify => vec![listen, target.to_string()],
        };
        self.spawn_listening(program, &args, port)
    }

    /// Starts websocat relaying WebSocket messages to the UDP `target`, one binary message
    /// per datagram each way (`websocat --binary ws-l:ADDR udp:TARGET`). Only websocat has
    /// a UDP mode.
    pub fn spawn_udp(self, program: &Path, target: SocketAddr) -> io::Result<Proc> {
        if self != Peer::Websocat {
            return Err(io::Error::other(format!("{} has no UDP mode", self.name())));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let args = [
            "--binary".to_string(),
            format!("ws-l:127.0.0.1:{port}"),
            format!("udp:{target}"),
        ];
        self.spawn_listening(program, &args, port)
    }

    /// Runs `program args` and waits until it accepts connections on loopback `port`.
    fn spawn_listening(self, program: &Path, args: &[String], port: u16) -> io::Result<Proc> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr_tail = watch_stderr(&mut child, |_| {})?;
        let mut proc_ = Proc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr_tail,
        };
        // Wait until it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            proc_.check_alive()?;
            if TcpStream::connect(proc_.addr).is_ok() {
                return Ok(proc_);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} did not start listening",
                    self.name()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Clock ticks per second of the CPU times in `/proc/PID/stat` (USER_HZ).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The numeric fields of `/proc/PID/stat`, indexed by field number as in proc(5)
/// (`fields[14]` is utime). Fields 1 to 3 (pid, command name, state) read as 0. None if
/// the process is gone, or has exited and only waits to be reaped (a zombie).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    // What follows starts with field 3, the state letter.
    let rest = stat.rsplit_once(')')?.1;
    if matches!(rest.split_whitespace().next(), Some("Z" | "X")) {
        return None;
    }
    let mut fields = vec![0, 0, 0];
    fields.extend(rest.split_whitespace().map(|v| v.parse().unwrap_or(0)));
    Some(fields)
}

/// CPU time used so far by a process tree, read two ways.
#[derive(Clone, Copy, Debug)]
pub struct CpuTime {
    /// utime + stime of every process, plus cutime + cstime of the root (children it has
    /// reaped), from /proc/PID/stat in clock ticks: counts threads that have exited, but
    /// only to 1/100 s.
    ticks: u64,
    /// The on-CPU time of every live thread (first field of /proc/PID/task/TID/schedstat),
    /// in ns: the same clock, exact, but blind to threads that have exited.
    ns: u64,
}

impl CpuTime {
    pub fn read(root: u32) -> io::Result<CpuTime> {
        let mut cpu = CpuTime { ticks: 0, ns: 0 };
        let mut found = false;
        for pid in tree(root) {
            let Some(f) = stat_fields(pid) else { continue };
            found = true;
            cpu.ticks += f[14] + f[15] + if pid == root { f[16] + f[17] } else { 0 };
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let schedstat =
                    fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                cpu.ns += schedstat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        if !found {
            return Err(io::Error::other(format!("process {root} is gone")));
        }
        Ok(cpu)
    }

    /// CPU seconds used since `earlier`: the exact figure, unless the tick count is clearly
    /// larger (threads that ran in between and have exited).
    pub fn seconds_since(&self, earlier: &CpuTime, ticks_per_s: f64) -> f64 {
        let by_ticks = (self.ticks - earlier.ticks) as f64 / ticks_per_s;
        let by_ns = self.ns.saturating_sub(earlier.ns) as f64 / 1e9;
        if by_ticks > by_ns + 2.0 / ticks_per_s {
            by_ticks
        } else {
            by_ns
        }
    }
}

/// Memory and threads of a process tree at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub threads: u64,
    /// Memory mappings (lines of /proc/PID/maps). Linux caps them per process
    /// (vm.max_map_count, usually 65530), and every thread costs a few.
    pub maps: u64,
}

impl ProcStats {
    /// Reads the stats of `root` and all its descendants.
    pub fn read(root: u32) -> io::Result<ProcStats> {
        let mut total = ProcStats::default();
        for pid in tree(root) {
            let Some(fields) = stat_fields(pid) else {
                continue;
            };
            total.threads += fields[20];
            if let Ok(maps) = fs::read(format!("/proc/{pid}/maps")) {
                total.maps += maps.iter().filter(|&&b| b == b'\n').count() as u64;
            }
            if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                total.rss_kib += kib_field(&rollup, "Rss:");
                total.pss_kib += kib_field(&rollup, "Pss:");
            }
        }
        if total.threads == 0 {
            return Err(io::Error::other(format!("process {root} is gone")));
        }
        Ok(total)
    }
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `root` followed by all its descendant processes (from the ppid field of every /proc/*/stat).
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(fields) = stat_fields(pid) {
                children.entry(fields[4] as u32).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// The soft limit on open files of this process (from /proc/self/limits).
pub fn open_files_limit() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let fields = stat_fields(me).unwrap();
        assert_eq!(fields[4] as u32, std::os::unix::process::parent_id());
        assert!(fields[20] >= 1, "num_threads");
        let stats = ProcStats::read(me).unwrap();
        assert!(stats.rss_kib > 0 && stats.threads >= 1 && stats.maps > 0);
        let before = CpuTime::read(me).unwrap();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {}
        let spent = CpuTime::read(me)
            .unwrap()
            .seconds_since(&before, clock_ticks());
        assert!((0.03..1.0).contains(&spent), "spent {spent}");
    }
}

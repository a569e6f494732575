//! systemd socket activation: serving listening sockets that systemd (or
//! `systemd-socket-activate`) opened and passed in, instead of binding our own.
//!
//! # The protocol (sd_listen_fds(3))
//!
//! The service manager binds the sockets of a `.socket` unit itself — so a privileged port
//! needs no privilege in the service, the port is open before the service starts, and
//! connections queue in the kernel while it restarts — and starts the service with them as
//! file descriptors 3, 4, …, described by environment variables:
//!
//! - `LISTEN_PID`: the process the sockets are for. sd_listen_fds(3) ignores the variables
//!   unless it equals our own pid (a child that inherited the environment is not meant).
//! - `LISTEN_FDS`: how many descriptors, starting at 3 (`SD_LISTEN_FDS_START`).
//! - `LISTEN_FDNAMES` (optional): their names, colon-separated (`FileDescriptorName=` in the
//!   socket unit; sd_listen_fds_with_names(3)).
//!
//! [`listeners_from_environment`] follows those rules. Taking the descriptors is the job of
//! the `listenfd` crate (the field's crate for it, used by systemfd/catflap): it checks that
//! each one is a socket of the expected family and type before wrapping it, marks it
//! close-on-exec, and removes `LISTEN_PID` and `LISTEN_FDS` from the environment as the
//! man page recommends. (It also accepts a missing `LISTEN_PID`, for systemfd; we do not, as
//! sd_listen_fds(3) does not.) Each descriptor must be a TCP (`ListenStream=PORT` or
//! `ADDR:PORT`) or Unix stream (`ListenStream=/path`) listening socket; anything else (a UDP
//! socket, a FIFO, a connected socket) is an error naming the descriptor, rather than a
//! listener that fails later. The sockets are put in blocking mode, which the accept loop
//! expects (`NonBlocking=yes` in the unit would otherwise leak through).
//!
//! Because `listenfd` changes the environment, this must run at start, before other threads
//! exist (as `main` does before starting the listener).
//!
//! # How the proxy uses this
//!
//! At start, before binding, `main` calls [`listeners_from_environment`]. `Ok(None)`: not
//! socket-activated, bind `--listen`/`--port` as usual. `Ok(Some(listeners))`: serve these
//! instead (log each with [`Activated::describe`]; `--listen`/`--port` are not used, and the
//! public-address safety check applies to their addresses as it does to `--listen`); a
//! `Listener::Unix` needs the accept loop to handle `UnixStream` clients (its peer address is
//! then not an IP: with `--proxy-protocol` the header gives it). `Err`: a one-line startup
//! error, exit 2. Shutdown is unchanged: on SIGTERM (systemd's stop) the listeners close and
//! tunnels drain; systemd keeps the sockets themselves open for the next start.
//! `scripts/systemd/wsproxy.socket` and `wsproxy.service` are the units.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use listenfd::ListenFd;

/// The first passed descriptor (`SD_LISTEN_FDS_START`, sd_listen_fds(3)).
const FIRST_FD: usize = 3;

/// A passed listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A passed socket and its `FileDescriptorName=`, if the service manager gave one.
#[derive(Debug)]
pub struct Activated {
    pub listener: Listener,
    pub name: Option<String>,
    /// The descriptor number it arrived as (3, 4, …), for messages.
    pub fd: usize,
}

impl Activated {
    /// For the log: `fd 3 "wsproxy.socket": TCP [::]:8080`.
    pub fn describe(&self) -> String {
        let address = match &self.listener {
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => format!("TCP {addr}"),
                Err(e) => format!("TCP (address unknown: {e})"),
            },
            Listener::Unix(listener) => match listener.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(path) => format!("Unix {}", path.display()),
                    None => "Unix (unnamed or abstract)".to_string(),
                },
                Err(e) => format!("Unix (address unknown: {e})"),
            },
        };
        match &self.name {
            Some(name) => format!("fd {} {name:?}: {address}", self.fd),
            None => format!("fd {}: {address}", self.fd),
        }
    }
}

/// The listening sockets passed by systemd, if this process was socket-activated.
///
/// `Ok(None)` when `LISTEN_PID`/`LISTEN_FDS` are absent or meant for another process.
/// `Err` when they are meant for us but unusable (a bad number, no descriptors, a descriptor
/// that is not a stream listening socket).
pub fn listeners_from_environment() -> Result<Option<Vec<Activated>>, String> {
    let Some(count) = descriptors_for_us()? else {
        return Ok(None);
    };
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let mut names = names.as_deref().map(|n| n.split(':')).into_iter().flatten();
    let mut passed = ListenFd::from_env();
    if passed.len() != count {
        return Err(format!(
            "socket activation: LISTEN_FDS={count}, but {} descriptors could be taken",
            passed.len()
        ));
    }
    let mut listeners = Vec::with_capacity(count);
    for index in 0..count {
        let fd = FIRST_FD + index;
        let listener = take(&mut passed, index)
            .map_err(|e| format!("socket activation: descriptor {fd}: {e}"))?;
        let name = names.next().filter(|n| !n.is_empty()).map(str::to_string);
        listeners.push(Activated { listener, name, fd });
    }
    Ok(Some(listeners))
}

/// `LISTEN_FDS`, if `LISTEN_PID` names this process (sd_listen_fds(3)).
fn descriptors_for_us() -> Result<Option<usize>, String> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    match fds.parse::<usize>() {
        Ok(0) => Err("socket activation: LISTEN_FDS=0 (no sockets were passed)".into()),
        Ok(count) => Ok(Some(count)),
        Err(_) => Err(format!(
            "socket activation: LISTEN_FDS={fds:?} is not a number of descriptors"
        )),
    }
}

/// The descriptor at `index` as a TCP or Unix stream listener, in blocking mode.
fn take(passed: &mut ListenFd, index: usize) -> io::Result<Listener> {
    let tcp_error = match passed.take_tcp_listener(index) {
        Ok(Some(listener)) => {
            listener.set_nonblocking(false)?;
            return Ok(Listener::Tcp(listener));
        }
        Ok(None) => return Err(io::Error::other("already taken")),
        Err(e) => e,
    };
    match passed.take_unix_listener(index) {
        Ok(Some(listener)) => {
            listener.set_nonblocking(false)?;
            Ok(Listener::Unix(listener))
        }
        Ok(None) => Err(io::Error::other("already taken")),
        Err(_) => Err(io::Error::other(format!(
            "not a TCP or Unix stream listening socket ({tcp_error})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::thread;
    use std::time::{Duration, Instant};

    /// What the child test (run in a process of its own) is told to expect.
    const EXPECT: &str = "WSPROXY_ACTIVATION_EXPECT";

    /// The test process itself is not socket-activated.
    #[test]
    fn not_activated_without_the_variables() {
        assert!(
            std::env::var("LISTEN_FDS").is_err(),
            "the test runs under systemd?"
        );
        assert!(listeners_from_environment().unwrap().is_none());
    }

    /// Runs `child_checks_what_it_was_given` in a new process started by `program args…`,
    /// with `expect` describing the outcome in the environment (`systemd-socket-activate`
    /// passes on only what `-E NAME` names); returns that process's output.
    fn run_child(program: &str, args: &[&str], expect: &str) -> String {
        let me = std::env::current_exe().unwrap();
        let mut child = Command::new(program)
            .args(args)
            .arg(&me)
            .args([
                "--exact",
                "socket_activation::tests::child_checks_what_it_was_given",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EXPECT, expect)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let give_up = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > give_up {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?} did not finish in 60 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "child failed:\n{text}");
        assert!(
            text.contains("1 passed"),
            "the child test did not run:\n{text}"
        );
        text
    }

    /// Not a test by itself: the body of the child process the tests below start.
    #[test]
    #[ignore = "run by the socket activation tests in a process of its own"]
    fn child_checks_what_it_was_given() {
        let expect = std::env::var(EXPECT).expect("run by the socket activation tests");
        let result = listeners_from_environment();
        if let Some(fragment) = expect.strip_prefix("error:") {
            let err = result.unwrap_err();
            assert!(err.contains(fragment), "{err}");
            return;
        }
        if expect == "none" {
            assert!(result.unwrap().is_none());
            return;
        }
        // "serve": answer one client on each listener with its description.
        let listeners = result.unwrap().expect("socket-activated");
        assert!(
            std::env::var("LISTEN_FDS").is_err(),
            "LISTEN_FDS is removed after use"
        );
        for activated in &listeners {
            let line = format!("{}\n", activated.describe());
            match &activated.listener {
                Listener::Tcp(l) => l.accept().unwrap().0.write_all(line.as_bytes()).unwrap(),
                Listener::Unix(l) => l.accept().unwrap().0.write_all(line.as_bytes()).unwrap(),
            }
        }
    }

    fn has_activator() -> bool {
        let found = Command::new("systemd-socket-activate")
            .arg("--help")
            .output()
            .is_ok();
        if !found {
            eprintln!("systemd-socket-activate (Debian's systemd) not installed; skipping");
        }
        found
    }

    fn free_tcp_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Connects (retrying while the activator starts) and reads the one line served.
    fn read_line_from<S: std::io::Read>(mut connect: impl FnMut() -> io::Result<S>) -> String {
        let give_up = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match connect() {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < give_up => thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("cannot connect: {e}"),
            }
        };
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    /// A real activator, `systemd-socket-activate`, passes a TCP and a Unix socket with
    /// names; a client of each is served by the child.
    #[test]
    fn serves_sockets_passed_by_systemd_socket_activate() {
        if !has_activator() {
            return;
        }
        let port = free_tcp_port();
        let dir = std::env::temp_dir().join(format!("wsproxy-activation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket: PathBuf = dir.join("wsproxy.sock");
        let tcp = format!("127.0.0.1:{port}");
        let unix = socket.to_str().unwrap().to_string();
        let clients = {
            let (tcp, socket) = (tcp.clone(), socket.clone());
            thread::spawn(move || {
                let over_tcp = read_line_from(|| TcpStream::connect(&tcp));
                let over_unix = read_line_from(|| UnixStream::connect(&socket));
                (over_tcp, over_unix)
            })
        };
        run_child(
            "systemd-socket-activate",
            &["-l", &tcp, "-l", &unix, "--fdname=web:local", "-E", EXPECT],
            "serve",
        );
        let (over_tcp, over_unix) = clients.join().unwrap();
        assert_eq!(over_tcp.trim(), format!("fd 3 \"web\": TCP {tcp}"));
        assert_eq!(over_unix.trim(), format!("fd 4 \"local\": Unix {unix}"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A UDP socket (`ListenDatagram=`) is not something the proxy can serve.
    #[test]
    fn a_datagram_socket_is_refused() {
        if !has_activator() {
            return;
        }
        let udp = format!("127.0.0.1:{}", free_tcp_port());
        // The activator starts its program at the first datagram.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let (udp, done) = (udp.clone(), std::sync::Arc::clone(&done));
            thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = socket.send_to(b"wake up", &udp);
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        run_child(
            "systemd-socket-activate",
            &["--datagram", "-l", &udp, "-E", EXPECT],
            "error:descriptor 3: not a TCP or Unix stream listening socket",
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
    }

    /// The variables are for another process, or wrong, or name something that is not a
    /// listening stream socket.
    #[test]
    fn bad_or_foreign_variables() {
        // `sh -c '…; exec "$0" "$@"'` keeps the shell's pid, so `$$` is the child's pid.
        let cases = [
            ("export LISTEN_PID=1 LISTEN_FDS=1", "none"),
            ("export LISTEN_FDS=1", "none"),
            (
                "export LISTEN_PID=$$ LISTEN_FDS=abc",
                "error:is not a number",
            ),
            ("export LISTEN_PID=$$ LISTEN_FDS=0", "error:LISTEN_FDS=0"),
            (
                "exec 3</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1",
                "error:descriptor 3: not a TCP or Unix stream listening socket",
            ),
        ];
        for (setup, expect) in cases {
            let script = format!("{setup}; exec \"$0\" \"$@\"");
            run_child("sh", &["-c", &script], expect);
        }
    }
}

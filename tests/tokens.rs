//! Token files (websockify's `TokenFile` format) against the real binary: a token picks its
//! target; a line whose target the one host:port parser refuses stops the proxy at start with
//! the file and line (issue 12, item 7), and a file broken while the proxy runs refuses every
//! token with 500 until it is fixed, instead of failing only the broken token's connections.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// A token file in a fresh temp dir, removed on drop.
struct TokenFile(std::path::PathBuf);

impl TokenFile {
    fn new(text: &str) -> TokenFile {
        let dir = std::env::temp_dir().join(format!(
            "wsproxy-tokens-{}-{}",
            std::process::id(),
            Rng::fresh().next_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = TokenFile(dir.join("tokens"));
        file.write(text, 0);
        file
    }

    /// Rewrites the file, its mtime `bump` seconds ahead (so the change is noticed).
    fn write(&self, text: &str, bump: u64) {
        std::fs::write(&self.0, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&self.0)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(bump))
            .unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// Runs the binary with `args`, expecting it to exit by itself; returns its code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsproxy"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsproxy");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsproxy {args:?} should have refused to start");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

fn echo_through(proxy: &Proxy, token: &str) {
    let req = HybiRequest::new(proxy.addr, &format!("websockify?token={token}"), 13);
    let mut client = RawHybiClient::handshake(proxy.addr, &req)
        .unwrap_or_else(|e| panic!("token {token} should open a tunnel: {e}"));
    client.send_binary(b"ping");
    assert_eq!(recv_exactly(&mut client, 4), b"ping");
    client.send_close(1000, "");
    client.expect_close();
}

fn status_for(proxy: &Proxy, token: &str) -> (u16, String) {
    let request = upgrade_request(
        &proxy.addr.to_string(),
        &format!("websockify?token={token}"),
        &[],
    );
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    (reply.head.status, reply.body_text())
}

#[test]
fn a_target_the_parser_refuses_stops_the_proxy_at_start_with_file_and_line() {
    for (line, why) in [
        ("t: ho$t:80", "not a valid host name"),
        ("t: a:b:c:80", "not an IPv6 address"),
        ("t: [a:b:c]:80", "not an IPv6 address"),
        ("t: [10.0.0.1]:80", "only IPv6"),
        ("t: 127.1:80", "dotted-decimal"),
        ("t: 0x7f.0.0.1:80", "dotted-decimal"),
        ("t: a..b:80", "not a valid host name"),
        ("t: host:0", "bad port"),
        ("t: host:65536", "bad port"),
    ] {
        let file = TokenFile::new(&format!("ok: 127.0.0.1:1\n# comment\n{line}\n"));
        let (code, stderr) = run_to_exit(&["-p", "0", "--token-file", file.path()]);
        assert_eq!(code, Some(2), "{line}: {stderr}");
        assert!(
            stderr.contains(file.path()) && stderr.contains("line 3") && stderr.contains(why),
            "{line}: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            2,
            "one line and the usage: {stderr}"
        );
    }
}

#[test]
fn a_file_broken_while_running_refuses_every_token_until_fixed() {
    let echo = EchoServer::start();
    let file = TokenFile::new(&format!(
        "good: {}\nv6style: ::ffff:127.0.0.1:{}\n",
        echo.target(),
        echo.addr.port()
    ));
    let proxy = Proxy::start(&["-v", "--token-file", file.path()]);
    echo_through(&proxy, "good");
    echo_through(&proxy, "v6style");
    assert_eq!(status_for(&proxy, "nope").0, 404);

    file.write(&format!("good: {}\nbad: ho$t:80\n", echo.target()), 10);
    for token in ["good", "bad", "nope"] {
        let (status, body) = status_for(&proxy, token);
        assert_eq!(status, 500, "{token}: {body}");
        assert!(body.contains("token file unusable"), "{token}: {body}");
        assert!(
            !body.contains(file.path()),
            "server paths stay in the log: {body}"
        );
    }
    proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(file.path()) && l.contains("line 2") && l.contains("ho$t")
        })
        .unwrap_or_else(|| panic!("the log names the file and line:\n{}", proxy.logs_text()));

    file.write(&format!("good: {}\n", echo.target()), 20);
    echo_through(&proxy, "good");
}

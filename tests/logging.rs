//! Log output: `-v` prints one line when a tunnel opens (peer, generation, target) and one when
//! it closes (bytes each way); `-d` adds the handshake transcript and per-frame lines.

mod common;

use std::time::Duration;

use common::*;

/// Every decimal number appearing in `line`.
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Lines mentioning `peer` (as `ip:port`) and the word `word`.
fn lines_with(proxy: &Proxy, peer: &str, word: &str) -> Vec<String> {
    proxy
        .logs()
        .into_iter()
        .filter(|l| l.contains(peer) && l.to_ascii_lowercase().contains(word))
        .collect()
}

#[test]
fn verbose_logs_one_open_and_one_close_line_per_tunnel() {
    let proxy = Proxy::start(&["-v"]);
    let http = HttpServer::start();
    let target = http.addr().to_string();
    let mut client = RawHybiClient::connect(proxy.addr, &target, 13, Some("binary"));
    let peer = client.conn.stream.local_addr().unwrap().to_string();
    let request = b"GET / HTTP/1.0\r\n\r\n";
    client.send_binary(request);
    let (body, close) = client.recv_until_close();
    assert_eq!(body, HTTP_RESPONSE);
    assert_eq!(close.map(|c| c.0), Some(1000));
    client.send_close(1000, "");
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();

    let close_line = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(&peer) && l.to_ascii_lowercase().contains("close")
        })
        .unwrap_or_else(|| panic!("no close line for {peer}; logs:\n{}", proxy.logs_text()));
    let opens = lines_with(&proxy, &peer, "open");
    assert_eq!(
        opens.len(),
        1,
        "one open line for {peer}; logs:\n{}",
        proxy.logs_text()
    );
    let open = &opens[0];
    assert!(
        open.contains(&target),
        "open line names the target: {open:?}"
    );
    assert!(
        open.contains("6455"),
        "open line names the generation: {open:?}"
    );
    assert!(
        open.contains("binary"),
        "open line names the subprotocol: {open:?}"
    );
    assert_eq!(
        lines_with(&proxy, &peer, "close").len(),
        1,
        "one close line for {peer}; logs:\n{}",
        proxy.logs_text()
    );
    let n = numbers(&close_line);
    assert!(
        n.contains(&(request.len() as u64)) && n.contains(&(HTTP_RESPONSE.len() as u64)),
        "close line should report {} bytes up and {} down: {close_line:?}",
        request.len(),
        HTTP_RESPONSE.len()
    );
    // -v is not -d: no per-frame lines.
    assert!(
        proxy.logs().len() < 10,
        "-v should be concise; logs:\n{}",
        proxy.logs_text()
    );
}

#[test]
fn verbose_open_line_names_hixie_generation() {
    let proxy = Proxy::start(&["-v"]);
    let echo = EchoServer::start();
    let mut rng = Rng::for_test("log hixie");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let peer = client.conn.stream.local_addr().unwrap().to_string();
    client.send_data(b"hi");
    assert_eq!(recv_exactly(&mut client, 2), b"hi");
    let open = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(&peer) && l.to_ascii_lowercase().contains("open")
        })
        .unwrap_or_else(|| panic!("no open line; logs:\n{}", proxy.logs_text()));
    assert!(open.contains("76"), "open line names hixie-76: {open:?}");
    assert!(
        open.contains(&echo.target()),
        "open line names the target: {open:?}"
    );
}

#[test]
fn connect_failure_is_logged_with_the_target() {
    let proxy = Proxy::start(&["-v"]);
    let port = closed_port();
    let mut client = RawHybiClient::connect(proxy.addr, &port.to_string(), 13, None);
    let _ = client.expect_close();
    let line = proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains(&port.to_string()))
        .unwrap_or_else(|| panic!("connect failure not logged; logs:\n{}", proxy.logs_text()));
    assert!(
        line.to_ascii_lowercase().contains("connect") || line.contains("refused"),
        "{line:?}"
    );
}

#[test]
fn debug_logs_handshake_transcript_and_frame_lines() {
    let proxy = Proxy::start(&["-d"]);
    let echo = EchoServer::start();
    let target = echo.target();
    let mut req = HybiRequest::new(proxy.addr, &target, 13);
    req.protocols = Some("binary".into());
    let mut client = RawHybiClient::handshake(proxy.addr, &req).expect("handshake");
    client.send_binary(b"hello-debug");
    assert_eq!(recv_exactly(&mut client, 11), b"hello-debug");
    client.send_close(1000, "");
    client.expect_close();
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();

    let request_line = format!("GET /{target} HTTP/1.1");
    proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains(&request_line))
        .unwrap_or_else(|| panic!("no request line in -d; logs:\n{}", proxy.logs_text()));
    let logs = proxy.logs();
    assert!(
        logs.iter().any(|l| l.contains(&req.key)),
        "-d shows the Sec-WebSocket-Key header; logs:\n{}",
        proxy.logs_text()
    );
    assert!(
        logs.iter().any(|l| l.contains(&accept_key(&req.key))),
        "-d shows the accept computation; logs:\n{}",
        proxy.logs_text()
    );
    let frame_lines: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("binary") && numbers(l).contains(&11) && !l.contains(&target))
        .collect();
    assert!(
        !frame_lines.is_empty(),
        "-d shows a line for the 11-byte binary frame; logs:\n{}",
        proxy.logs_text()
    );
}

/// Client text that would forge a log line or drive a terminal if logged raw.
const FORGED: &str = "2025-01-01T00:00:00.000Z INFO  forged";

/// Whether `line` is one log record: `TIMESTAMP LEVEL message`, the timestamp RFC 3339 with
/// milliseconds, not the one the forged text carries.
fn is_one_record(line: &str) -> bool {
    if line.starts_with("wsproxy: listening on ") {
        return true; // printed by main, not a log record
    }
    let b = line.as_bytes();
    line.len() > 25
        && b[4] == b'-'
        && b[10] == b'T'
        && line.get(23..25) == Some("Z ")
        && !line.starts_with(FORGED)
}

#[test]
fn client_text_cannot_forge_log_lines_or_reach_the_terminal() {
    let echo = EchoServer::start();
    let dir = std::env::temp_dir().join(format!("wsproxy-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("good: {}\n", echo.target())).unwrap();
    let proxy = Proxy::start(&["-d", "--token-file", tokens.to_str().unwrap()]);
    let host = proxy.addr.to_string();
    let ask = |target: &str, extra: &[&str]| {
        let reply = http_request(proxy.addr, &upgrade_request(&host, target, extra))
            .expect("an HTTP answer");
        reply.head.status
    };
    // A token with a newline, an escape sequence, a C1 CSI and a right-to-left override.
    let token = "abc%0a2025-01-01T00:00:00.000Z%20INFO%20%20forged%1b[31m%c2%9b2J%e2%80%ae";
    assert_eq!(ask(&format!("websockify?token={token}"), &[]), 404);
    // Raw (non-ASCII) bytes in a header value, a subprotocol name, the Host and the Origin.
    assert_eq!(
        ask(
            "websockify?token=good",
            &[
                "X-Evil: a\u{9b}[2Jb\u{202e}c\u{2028}d\te",
                "Sec-WebSocket-Protocol: evil\u{85}name, x"
            ]
        ),
        400
    );
    let reply = http_request(
        proxy.addr,
        &upgrade_request("localhost\u{85}evil", "websockify?token=good", &[]),
    )
    .unwrap();
    assert_eq!(reply.head.status, 403);
    assert_eq!(
        ask(
            "websockify?token=good",
            &["Origin: http://evil\u{202e}\u{9b}.example"]
        ),
        403
    );
    // A Close reason with a newline and an escape sequence.
    let req = HybiRequest::new(proxy.addr, "websockify?token=good", 13);
    let mut client = RawHybiClient::handshake(proxy.addr, &req).expect("handshake");
    client.send_close(1000, &format!("bye\n{FORGED}\u{1b}[0m"));
    assert_eq!(client.expect_close().0, 1000);
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();

    let close_line = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("] close ") && l.contains("client closed")
        })
        .unwrap_or_else(|| panic!("no close line:\n{}", proxy.logs_text()));
    let logs = proxy.logs();
    for line in &logs {
        assert!(
            is_one_record(line),
            "a forged or broken log line: {line:?}\n{}",
            proxy.logs_text()
        );
        assert!(
            !line.contains(['\u{1b}', '\u{9b}', '\u{85}', '\u{202e}', '\u{2028}', '\t']),
            "raw control text in the log: {line:?}"
        );
    }
    let text = proxy.logs_text();
    for shown in [
        "token 'abc\\n2025-01-01T00:00:00.000Z INFO  forged\\u{1b}[31m\\u{9b}2J\\u{202e}' not found",
        "a\\u{9b}[2Jb\\u{202e}c\\u{2028}d\\te",
        "evil\\u{85}name",
        "localhost\\u{85}evil",
        "evil\\u{202e}\\u{9b}.example",
    ] {
        assert!(
            text.contains(shown),
            "the log shows {shown:?} escaped:\n{text}"
        );
    }
    assert!(
        close_line.contains("bye\\n2025-01-01T00:00:00.000Z INFO  forged\\u{1b}[0m"),
        "{close_line:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

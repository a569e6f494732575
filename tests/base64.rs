//! Base64 payloads as real clients send them (issue 12, items 11 and 12), against the real
//! binary: ASCII whitespace (space, tab, CR, LF) is ignored anywhere in every mode — RFC 6455
//! with `base64`, `websockets-proxy` or no subprotocol, hybi-08, hixie-75/76 — also across
//! fragments; any other byte outside the alphabet closes with 1007, the reason naming its
//! offset within the message, the bytes decoded before it reach the target, and `-d` logs
//! the frame that failed. Python's `websockets` package is the third-party client.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Messages with whitespace where line-oriented tools put it, and what they decode to.
const SPACED: [(&str, &[u8]); 6] = [
    ("aGVsbG8=\n", b"hello"),
    ("aGVsbG8=\r\n", b"hello"),
    ("aGVs bG8=", b"hello"),
    (" \taGVs\tbG8g\r\nd29y bGQ=\n\n", b"hello world"),
    ("a G V s b G 8 =", b"hello"),
    ("\n", b""),
];

#[test]
fn whitespace_is_ignored_in_every_base64_mode() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&[]);
    for (version, protocol) in [
        (13, Some("base64")),
        (13, Some("websockets-proxy")),
        (13, None),
        (8, Some("base64")),
    ] {
        let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), version, protocol);
        for (text, data) in SPACED {
            client.send_text(text);
            assert_eq!(
                recv_exactly(&mut client, data.len()),
                data,
                "{protocol:?} {text:?}"
            );
        }
        // One message, fragmented, whitespace at and between the fragment boundaries.
        client.send_frame(false, 0x1, b"aGVs\n");
        client.send_frame(false, 0x0, b" ");
        client.send_frame(false, 0x0, b"bG");
        client.send_frame(true, 0x0, b"8=\r\n");
        assert_eq!(
            recv_exactly(&mut client, 5),
            b"hello",
            "{protocol:?} fragments"
        );
        client.send_close(1000, "");
        client.expect_close();
    }
    let mut rng = Rng::for_test("base64 hixie");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut hixie = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let mut hixie75 = HixieClient::connect_75(proxy.addr, &req);
    for client in [&mut hixie, &mut hixie75] {
        for (text, data) in SPACED {
            if !data.is_empty() {
                client.send_text(text);
                assert_eq!(recv_exactly(client, data.len()), data, "hixie {text:?}");
            }
        }
    }
}

/// Frames of one message, the offset of its first bad byte, what is wrong there, and what
/// the target receives before the close.
type BadCase = (&'static [&'static [u8]], u64, &'static str, &'static [u8]);

#[test]
fn invalid_base64_names_its_offset_forwards_what_came_before_and_is_logged() {
    let proxy = Proxy::start(&["-d"]);
    let cases: [BadCase; 6] = [
        (&[b"aGVsbG8g*xyz"], 8, "byte 0x2a '*'", b"hello "),
        (&[b"aGVs", b"bG8g", b"*A=="], 8, "byte 0x2a '*'", b"hello "),
        (
            &[b"aGVs\n", b"bG8g ", b"-A=="],
            10,
            "byte 0x2d '-'",
            b"hello ",
        ),
        (&[b"aGk=aGk="], 4, "data after '=' padding", b"hi"),
        (&[b"aGVsbG8g\x0c"], 8, "byte 0x0c", b"hello "),
        (
            &[b"aGVsbG8", b"gd"],
            8,
            "the data ends inside a group",
            b"hello ",
        ),
    ];
    for (frames, offset, what, before) in cases {
        let sink = SinkServer::start();
        let mut client =
            RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("base64"));
        for (i, frame) in frames.iter().enumerate() {
            let opcode = if i == 0 { 0x1 } else { 0x0 };
            client.send_frame(i + 1 == frames.len(), opcode, frame);
        }
        let (code, reason) = client.expect_close();
        assert_eq!(code, 1007, "{frames:?}: {reason}");
        assert_eq!(
            reason,
            format!("invalid Base64 at offset {offset}: {what}"),
            "{frames:?}"
        );
        let record = sink
            .wait_for_end(0, Duration::from_secs(5))
            .expect("the target connection ends");
        assert_eq!(record.data, before, "{frames:?}: decoded before the error");
        // The failing frame has its -d line, like every other frame.
        let logged = format!("→ invalid Base64 at offset {offset}: {what}");
        proxy
            .wait_for_log(Duration::from_secs(5), |l| {
                l.contains("client→proxy") && l.contains(&logged)
            })
            .unwrap_or_else(|| panic!("{frames:?}: no frame line:\n{}", proxy.logs_text()));
    }
    // hixie-76 too.
    let sink = SinkServer::start();
    let mut rng = Rng::for_test("base64 hixie offset");
    let req = HixieRequest::new(proxy.addr, &sink.addr().to_string());
    let mut hixie = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    hixie.send_text("aGVs\nbG8g\n*A==");
    hixie.expect_close();
    let record = sink
        .wait_for_end(0, Duration::from_secs(5))
        .expect("the target ends");
    assert_eq!(record.data, b"hello ");
    proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("client→proxy text")
                && l.contains("→ invalid Base64 at offset 10: byte 0x2a '*'")
        })
        .unwrap_or_else(|| panic!("hixie: no frame line:\n{}", proxy.logs_text()));
}

/// Python's `websockets` (tests/peers/requirements.txt), from scripts/setup-test-deps.sh.
fn python_peers() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/python");
    assert!(
        std::path::Path::new(dir).join("websockets").is_dir(),
        "Python's websockets is missing from {dir}: run scripts/setup-test-deps.sh"
    );
    dir.to_string()
}

#[test]
fn python_websockets_sending_lines_with_newlines_is_served() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&["-v"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/base64_lines.py");
    for _ in 0..3 {
        let out = Command::new("python3")
            .arg(script)
            .arg(proxy.url(&echo.target()))
            .env("PYTHONPATH", python_peers())
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "python client failed:\n{stdout}\n{stderr}"
        );
        eprint!("{stdout}");
        assert!(stdout.contains("echoed "), "{stdout}");
        assert!(
            stdout.contains("close 1007 invalid Base64 at offset 8: byte 0x2a '*'"),
            "{stdout}\n{stderr}"
        );
    }
}

//! Every numeric option is range-checked at start against the real binary (issue 12, item 8):
//! huge, negative, NaN, infinite, fractional where a count is expected, and 0 where 0 means
//! nothing. Each bad value gets one line naming the flag and the range, then the usage, and
//! exit code 2 — never a panic, never a proxy that starts.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs the binary with `args`, which must make it exit by itself; returns code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    // (`-p 0` first, so that a value that is accepted would bind nothing in use.)
    let port: &[&str] = if args[0] == "-p" { &[] } else { &["-p", "0"] };
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsproxy"))
        .args(port)
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
            panic!("wsproxy {args:?} started instead of refusing its options");
        }
        thread::sleep(Duration::from_millis(5));
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

#[track_caller]
fn assert_refused(args: &[&str], expected: &str) {
    let (code, stderr) = run_to_exit(args);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert_eq!(lines.len(), 2, "{args:?}: one line and the usage: {stderr}");
    assert!(
        lines[0].starts_with(&format!("wsproxy: bad value for '{}'", args[0]))
            && lines[0].contains(expected),
        "{args:?}: {stderr}"
    );
    assert!(lines[1].starts_with("usage: wsproxy"), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

const SECONDS_FLAGS: [&str; 6] = [
    "--handshake-timeout",
    "--connect-timeout",
    "--idle-timeout",
    "--heartbeat",
    "--close-timeout",
    "--shutdown-grace",
];

#[test]
fn every_seconds_option_takes_a_millisecond_to_a_year() {
    for flag in SECONDS_FLAGS {
        for bad in [
            "0",
            "-0",
            "-1",
            "-1e9",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "1e300",
            "1e400",
            "0.0001",
            "31536000.5",
            "18446744073709551616",
            "5s",
            "",
            " 5",
            "0x10",
        ] {
            assert_refused(
                &[flag, bad],
                "(expected a number of seconds from 0.001 to 31536000)",
            );
        }
    }
}

#[test]
fn every_count_and_size_option_has_its_range() {
    for (flag, expected, bad) in [
        (
            "--max-message-size",
            "(expected 1 to 1099511627776 bytes)",
            "0",
        ),
        (
            "--max-frame-size",
            "(expected 1 to 1099511627776 bytes)",
            "0",
        ),
        (
            "--max-connections",
            "(expected 1 to 1000000 connections)",
            "0",
        ),
        ("--spare-threads", "(expected 0 to 10000 threads)", "10001"),
    ] {
        for value in [
            bad,
            "-1",
            "1099511627777",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999",
            "1.5",
            "1e6",
            "NaN",
            "inf",
            "",
        ] {
            assert_refused(&[flag, value], expected);
        }
    }
    for (flag, bad) in [
        ("-p", "65536"),
        ("-p", "-1"),
        ("-p", "1e3"),
        ("-p", "99999999999"),
    ] {
        assert_refused(&[flag, bad], "(expected a port number (0-65535))");
    }
}

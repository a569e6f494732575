//! Running one test inside private Linux namespaces, with its own name-resolution files.
//!
//! Resolution tests need a resolver we control: a `/etc/resolv.conf` with a `search` line
//! and a DNS server on `127.0.0.1:53`, a `/etc/hosts` of our own. So [`isolated`] runs the
//! test again, as a child process of this test binary (`--exact NAME`), under
//! `unshare --mount --net`: a new network namespace (only its own loopback, brought up with
//! `ip link`) and a new mount namespace in which the files are bind-mounted over
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/nsswitch.conf` (`hosts: files dns`). The
//! machine's own files and network are untouched. Inside, the same test function sees
//! [`INSIDE`] set and runs its body; the proxy, the targets, the DNS server and the clients
//! all live in that namespace.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Set (to the test's name) in the child that runs inside the namespaces.
pub const INSIDE: &str = "WSPROXY_TEST_IN_NAMESPACE";

/// The name-resolution files of the namespace.
pub struct Files<'a> {
    pub hosts: &'a str,
    pub resolv_conf: &'a str,
}

/// How long the test inside may run.
const LIMIT: Duration = Duration::from_secs(240);

/// Runs `body` inside fresh network and mount namespaces with `files` in `/etc`. `test` is
/// the name of the calling `#[test]` function (the child runs `--exact test`).
pub fn isolated(test: &str, files: &Files, body: impl FnOnce()) {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        body();
        return;
    }
    if let Err(why) = namespaces_work() {
        eprintln!("SKIPPED {test}: private namespaces are not available here ({why})");
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "wsproxy-ns-{}-{test}-{}",
        std::process::id(),
        super::Rng::fresh().next_u64()
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a namespace file");
        path
    };
    let hosts = write("hosts", files.hosts);
    let resolv = write("resolv.conf", files.resolv_conf);
    let nsswitch = write("nsswitch.conf", "hosts: files dns\n");
    let exe = std::env::current_exe().expect("the test binary");
    let script = "set -e; ip link set lo up; mount --bind \"$1\" /etc/hosts; \
                  mount --bind \"$2\" /etc/resolv.conf; mount --bind \"$3\" /etc/nsswitch.conf; \
                  shift 3; exec \"$@\"";
    let mut child = Command::new("unshare")
        .args(["--mount", "--net", "--", "sh", "-c", script, "sh"])
        .args([&hosts, &resolv, &nsswitch])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("--- {test}, inside the namespace:\n{out}{err}---");
    let status = status.unwrap_or_else(|| panic!("{test} did not finish within {LIMIT:?}"));
    assert!(
        status.success(),
        "{test} failed inside the namespace ({status})"
    );
    assert!(
        out.contains("1 passed"),
        "{test} did not run inside the namespace"
    );
}

/// Whether `unshare --mount --net` works here (it needs root or user namespaces).
fn namespaces_work() -> Result<(), String> {
    let output = Command::new("unshare")
        .args(["--mount", "--net", "--", "ip", "link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

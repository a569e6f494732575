//! The systemd units in `scripts/systemd/` are valid and as hardened as wsproxy allows, by
//! systemd's own tools: `systemd-analyze verify` (parses both units the way systemd would,
//! checks that the service's programs exist) and `systemd-analyze security --offline=yes`
//! (scores the service's sandboxing, check by check).
//!
//! The units name `/usr/local/bin/wsproxy`; the test verifies copies that point at the binary
//! cargo built, so that the "is the program there" check is real.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALLED_PATH: &str = "/usr/local/bin/wsproxy";

/// The sandboxing checks of `systemd-analyze security` that wsproxy's unit deliberately
/// leaves open, and why. Every other check must pass.
const NEEDED: &[(&str, &str)] = &[
    ("PrivateNetwork", "it connects to targets on the network"),
    (
        "IPAddressDeny",
        "targets may be anywhere; --allow/--deny restrict them",
    ),
    (
        "RestrictAddressFamilies_AF_INET_INET6",
        "TCP and UDP to targets",
    ),
    (
        "RestrictAddressFamilies_AF_UNIX",
        "journald, and a Unix listening socket",
    ),
    (
        "SystemCallFilter_resources",
        "setrlimit: it raises its open-files limit",
    ),
    ("ProcSubset", "it reads /proc/sys/vm/max_map_count"),
    ("DeviceAllow", "ProtectClock= itself allows reading the RTC"),
    (
        "RootDirectoryOrRootImage",
        "it runs the installed binary in the host's root",
    ),
];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("wsproxy-units-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd")
}

/// Copies both units into `dir`, the service's binary path replaced by the built binary.
fn copy_units(dir: &Path) -> (PathBuf, PathBuf) {
    let binary = env!("CARGO_BIN_EXE_wsproxy");
    let service = std::fs::read_to_string(units_dir().join("wsproxy.service")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={INSTALLED_PATH} ")),
        "{service}"
    );
    let socket = std::fs::read_to_string(units_dir().join("wsproxy.socket")).unwrap();
    let (service_path, socket_path) = (dir.join("wsproxy.service"), dir.join("wsproxy.socket"));
    std::fs::write(&service_path, service.replace(INSTALLED_PATH, binary)).unwrap();
    std::fs::write(&socket_path, socket).unwrap();
    (service_path, socket_path)
}

/// `systemd-analyze ARGS…`, or `None` where systemd's tools are not installed.
fn systemd_analyze(args: &[&str], dir: &Path) -> Option<Output> {
    match Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) => Some(output),
        Err(e) => {
            eprintln!("systemd-analyze not available ({e}); skipping");
            None
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = TempDir::new("verify");
    let (service, socket) = copy_units(&dir.0);
    let args = [
        "verify",
        "--man=no",
        socket.to_str().unwrap(),
        service.to_str().unwrap(),
    ];
    let Some(output) = systemd_analyze(&args, &dir.0) else {
        return;
    };
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{}",
        text(&output.stderr)
    );
    // Unknown keys and bad values are only warnings (exit 0): there must be none.
    assert_eq!(text(&output.stderr), "", "systemd-analyze verify warned");

    // The check is real: a misspelt directive is reported.
    let broken = std::fs::read_to_string(&service)
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSytem=strict");
    std::fs::write(&service, broken).unwrap();
    let output = systemd_analyze(&args, &dir.0).unwrap();
    assert!(
        text(&output.stderr).contains("Unknown key 'ProtectSytem'"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn the_service_is_sandboxed_as_far_as_wsproxy_allows() {
    let dir = TempDir::new("security");
    let (service, _) = copy_units(&dir.0);
    let service = service.to_str().unwrap();
    let Some(output) = systemd_analyze(
        &["security", "--offline=yes", "--json=short", service],
        &dir.0,
    ) else {
        return;
    };
    assert!(output.status.success(), "{}", text(&output.stderr));
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(checks.len() > 50, "{} checks", checks.len());
    let mut open = Vec::new();
    for check in &checks {
        let field = check["json_field"].as_str().unwrap();
        if check["set"] == false && !NEEDED.iter().any(|(name, _)| *name == field) {
            open.push(format!("{field}: {}", check["description"]));
        }
    }
    assert!(open.is_empty(), "checks left open:\n{}", open.join("\n"));
    for (name, why) in NEEDED {
        assert!(
            checks.iter().any(|c| c["json_field"] == *name),
            "{name} ({why}) is no longer a check of this systemd"
        );
    }

    // The overall exposure (0 to 10; systemd calls up to 2 "OK") stays at most 2.0.
    let output = systemd_analyze(
        &["security", "--offline=yes", "--threshold=20", service],
        &dir.0,
    )
    .unwrap();
    assert!(
        output.status.success(),
        "exposure above 2.0:\n{}",
        text(&output.stdout)
    );
}

//! The command line: flags in, a [`Config`] out (with `pico-args`).
//!
//! Errors are one line; `main` prints them with the short usage and exits 2. `--help` prints
//! [`HELP`], the complete manual.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, TargetMode, Verbosity};
use crate::policy::Rule;
use crate::static_files::WebRoot;
use crate::target;
use crate::tls::{TlsClient, TlsServer};
use crate::tokens::TokenTargets;

/// What the command line asks for.
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

pub const USAGE: &str =
    "usage: wsproxy [-p PORT] [-l ADDR] [-v | -d] [OPTIONS]   (wsproxy --help for the manual)";

pub const HELP: &str = "\
wsproxy — a WebSocket-to-TCP tunnelling proxy that speaks every WebSocket generation

USAGE
    wsproxy [OPTIONS]
    wsproxy [OPTIONS] [LISTEN_ADDR:]LISTEN_PORT TARGET_HOST:TARGET_PORT    (websockify's form)

    A WebSocket client opens ws://PROXY/<host>:<port>; wsproxy connects to that TCP target
    and relays bytes both ways until either side closes. RFC 6455, hybi-07/08, hixie-76 and
    hixie-75 clients are all served on the same port, detected from the request.

OPTIONS
    -p, --port PORT          Port to listen on (default 8080; 0 picks a free port).
    -l, --listen ADDR        Address to listen on (default 127.0.0.1). Accepts an IPv4 or
                             IPv6 address (0.0.0.0, ::, [::1]) or ADDR:PORT (which
                             overrides --port).
    -v, --verbose            Log a line when each tunnel opens (peer, protocol generation,
                             subprotocol, target) and closes (bytes each way, duration, who
                             closed and why), and every refused request.
    -d, --debug              Everything -v logs, plus the handshake transcript (request
                             lines, detected generation, the accept/challenge computation)
                             and a line per frame (direction, type, length, hex+ASCII
                             preview, decoded Base64 length). Every line carries the
                             connection id, e.g. [#12].
        --handshake-timeout SECS
                             Drop clients that have not completed their request in SECS
                             (default 10).
        --connect-timeout SECS
                             Give up on a target address after SECS (default 10).
        --max-message-size BYTES
                             Largest message a client may send (default 67108864); larger
                             ones close the tunnel with code 1009.
        --max-frame-size BYTES
                             Largest frame a client may send (default 16777216).
    SECS is a number of seconds from 0.001 to 31536000 (a year), fractions allowed;
    BYTES is 1 to 1099511627776 (1 TiB). Values out of range stop wsproxy at start.

TARGETS
    By default the client names the target in the path: ws://PROXY/<host>:<port>
    (IPv6: /[::1]:22; percent-encoding allowed; the query string is ignored).
        --target HOST:PORT   Send every tunnel to HOST:PORT, whatever the path (the path is
                             then free, e.g. for noVNC's /websockify).
        --token-file FILE|DIR
                             websockify's token files: lines 'token: host:port', '#'
                             comments; a directory means every file in it; re-read when
                             they change. The token comes from ?token=NAME in the URL.
        --host-token         Take the token from the Host name instead (vnc1.example.com).

SAFETY (see README.md, section \"Security model\")
        --allow RULE         Allow targets matching RULE (repeatable). RULE is HOST:PORTS;
                             HOST is a name, *.suffix, *, an IP, or a CIDR (10.0.0.0/8,
                             [fd00::]/8); PORTS is a port, a range 8000-8100, a list
                             80,443 or *. The name AND every address it resolves to are
                             checked; only passing addresses are connected to. 0.0.0.0 and
                             :: count as 127.0.0.1 and ::1 (where Linux connects them),
                             ::ffff:a.b.c.d as a.b.c.d, and IPv4 rules also cover the NAT64,
                             6to4 and IPv4-compatible forms. Names are resolved as absolute
                             names (/etc/hosts, then DNS as NAME.): resolv.conf's search
                             domains never apply; lookups end at the handshake deadline.
        --deny RULE          Refuse targets matching RULE (repeatable); deny wins.
        --policy FILE        Read rules from FILE: 'allow RULE' or 'deny RULE' per line
                             (a bare RULE allows), '#' comments.
                             Without --allow, every target is allowed -- which wsproxy only
                             permits when listening on loopback. On any other address it
                             refuses to start without --allow ('--allow *:*' opts in to an
                             open proxy explicitly). Refused targets get 403; when a
                             lookup decided, the reason is only \"not allowed\" (details in
                             the log), whether the name exists or not.
        --origin PATTERN     Accept browser Origins matching PATTERN (repeatable): *, or
                             scheme://host[:port] with host *.suffix or port * allowed.
                             Default: no Origin (non-browser clients) passes; a browser
                             origin passes if its host is loopback or equals the Host.
        --host NAME[:PORT]   Accept these Host header values (repeatable). Default when
                             listening on loopback: loopback names only (stops DNS
                             rebinding). A request without Host gets 400.
        --max-connections N  Connections at once (default 4096); beyond it new clients get
                             503. At start the open-files limit is raised to the hard
                             limit; if it or vm.max_map_count cannot hold N tunnels (2
                             descriptors and 8 memory maps each), wsproxy says so and
                             caps itself below the limit (503 beyond) instead of failing.
        --spare-threads N    Threads kept after their client leaves, to serve the next one
                             without creating a thread (default 32; each exits after 3 s
                             without work; 0: every thread exits with its client).
        --idle-timeout SECS  Close tunnels with no data either way for SECS (Close 1001);
                             off by default. Also the stall limit, when set.
        --stall-timeout SECS A write to a client or target that makes no progress for SECS
                             (the peer stopped reading) ends the tunnel, or the static
                             response, with a logged reason (default 60; --idle-timeout
                             replaces it when set).
        --heartbeat SECS     Ping RFC 6455 clients quiet for SECS; close those that do not
                             answer within two intervals. Off by default.
        --close-timeout SECS How long to wait for the other side's Close (default 5).
        --shutdown-grace SECS
                             On SIGINT/SIGTERM: refuse new clients, send every tunnel Close
                             1001 \"server shutting down\", let data drain for up to SECS
                             (default 5), then shut every socket down and exit 0. A second
                             signal exits at once (status 130).

TLS (wss:// and https:// on the same port as ws://)
        --cert FILE          PEM certificate chain. With --key, a connection whose first
                             byte is a TLS ClientHello (0x16) is served over TLS; others are
                             served in the clear. SIGHUP re-reads both files (tunnels that
                             are open keep their session).
        --key FILE           PEM private key (PKCS#8, RSA or EC).
        --tls-only           Refuse connections that do not start with TLS (400).
        --tls-target         Connect to targets over TLS, with SNI and certificate checks
                             against the system's roots (websockify's --ssl-target).
        --target-ca FILE     Also trust this PEM CA for --tls-target.

WEB
    Plain GET/HEAD requests are answered with static files: by default a built-in demo
    page at / and the JavaScript client at /wsproxy.js (+ /wsproxy.mjs, /wsproxy.d.ts).
        --web DIR            Serve DIR instead (index.html for directories).
        --no-web             Serve no files.

    -h, --help               Print this manual.
    -V, --version            Print the version.

    RUST_LOG works as usual with env_logger (e.g. RUST_LOG=wsproxy=debug) and refines -v/-d.

PROTOCOLS
    Sec-WebSocket-Version: 13     RFC 6455
    Sec-WebSocket-Version: 8 / 7  hybi-08 / hybi-07 (origin from Sec-WebSocket-Origin)
    other versions                426 Upgrade Required, Sec-WebSocket-Version: 13, 8, 7
    Sec-WebSocket-Key1/Key2       draft-hixie-76 (MD5 challenge, 8-byte key3)
    Upgrade: WebSocket, no keys   draft-hixie-75
    no Upgrade                    plain HTTP: 400 with directions

SUBPROTOCOLS (RFC 6455 and hybi; the client's most preferred supported one is chosen)
    websockets-proxy   Base64 in text frames (the original Ruby WebSockets Proxy)
    base64             Base64 in text frames (websockify <= 0.8, old noVNC)
    binary             raw bytes in binary frames (websockify, noVNC 0.6-1.1)
    (none)             raw bytes in binary frames; text frames from the client are Base64
    hixie-75/76 always carry Base64 text; websockets-proxy or base64 is echoed if asked for.
    Spaces, tabs, CR and LF inside Base64 are ignored (websocat -t sends lines with their
    newline); other bytes outside the alphabet close with 1007 naming their offset.

CLOSING
    target closes        all data delivered, then Close 1000 \"target closed\"
    client sends Close   all data delivered to the target, Close answered, target half-closed
    connect fails        Close 1011 with the reason (hixie: 0xFF 0x00)
    invalid Base64       Close 1007;  frame/message too large: 1009;  protocol error: 1002

EXAMPLES
    wsproxy -p 8080 -v
        Listen on 127.0.0.1:8080 and log each tunnel.
    python3 -m http.server 8000 &  then in a browser console:
        const ws = new WebSocket('ws://127.0.0.1:8080/127.0.0.1:8000', 'websockets-proxy');
        ws.onopen = () => ws.send(btoa('GET / HTTP/1.0\\r\\n\\r\\n'));
        ws.onmessage = (e) => console.log(atob(e.data));
    wsproxy -l '[::1]' -p 9000 -d
        Listen on IPv6 loopback and trace every frame.
    websocat -b ws://127.0.0.1:8080/127.0.0.1:22
        Any RFC 6455 client works; without a subprotocol, frames are binary.
";

/// Parses the arguments (without the program name).
pub fn parse(args: Vec<OsString>) -> Result<Command, String> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    let mut config = Config::default();

    let port: Option<u16> = value(&mut args, ["-p", "--port"], "a port number (0-65535)")?;
    let listen: Option<String> = args
        .opt_value_from_str(["-l", "--listen"])
        .map_err(describe)?;
    config.listen = listen_address(listen.as_deref(), port)?;

    let verbose = args.contains(["-v", "--verbose"]);
    let debug = args.contains(["-d", "--debug"]);
    config.verbosity = match (verbose, debug) {
        (_, true) => Verbosity::Debug,
        (true, false) => Verbosity::Verbose,
        _ => Verbosity::Quiet,
    };

    if let Some(secs) = seconds(&mut args, "--handshake-timeout")? {
        config.handshake_timeout = secs;
    }
    if let Some(secs) = seconds(&mut args, "--connect-timeout")? {
        config.connect_timeout = secs;
    }
    if let Some(bytes) = number(&mut args, "--max-message-size", BYTES, "bytes")? {
        config.limits.max_message = bytes;
    }
    if let Some(bytes) = number(&mut args, "--max-frame-size", BYTES, "bytes")? {
        config.limits.max_frame = bytes;
    }
    config.idle_timeout = seconds(&mut args, "--idle-timeout")?;
    if let Some(secs) = seconds(&mut args, "--stall-timeout")? {
        config.stall_timeout = secs;
    }
    config.heartbeat = seconds(&mut args, "--heartbeat")?;
    if let Some(secs) = seconds(&mut args, "--close-timeout")? {
        config.close_timeout = secs;
    }
    if let Some(secs) = seconds(&mut args, "--shutdown-grace")? {
        config.shutdown_grace = secs;
    }
    if let Some(n) = number(&mut args, "--max-connections", CONNECTIONS, "connections")? {
        config.max_connections = n;
    }
    if let Some(n) = number(&mut args, "--spare-threads", SPARE_THREADS, "threads")? {
        config.spare_threads = n;
    }

    for text in repeated(&mut args, "--allow")? {
        config.policy.allow.push(Rule::parse(&text)?);
    }
    for text in repeated(&mut args, "--deny")? {
        config.policy.deny.push(Rule::parse(&text)?);
    }
    for path in repeated(&mut args, "--policy")? {
        config.policy.add_file(path.as_ref())?;
    }
    config.origins.origins = repeated(&mut args, "--origin")?;
    config.origins.hosts = repeated(&mut args, "--host")?;

    let web: Option<PathBuf> = value(&mut args, "--web", "a directory")?;
    let no_web = args.contains("--no-web");
    config.web = match (web, no_web) {
        (Some(_), true) => return Err("--web and --no-web contradict each other".into()),
        (Some(dir), false) if !dir.is_dir() => {
            return Err(format!("--web {}: not a directory", dir.display()));
        }
        (Some(dir), false) => WebRoot::Dir(dir),
        (None, true) => WebRoot::Disabled,
        (None, false) => WebRoot::Builtin,
    };

    let fixed: Option<String> = value(&mut args, "--target", "HOST:PORT")?;
    let token_file: Option<PathBuf> = value(&mut args, "--token-file", "a file or directory")?;
    let host_token = args.contains("--host-token");
    if let Some(text) = &fixed {
        config.targets =
            TargetMode::Fixed(target::parse_host_port(text).map_err(|e| format!("--target: {e}"))?);
    }
    if let Some(path) = &token_file {
        if fixed.is_some() {
            return Err("--target and --token-file contradict each other".into());
        }
        let targets = TokenTargets::open(path).map_err(|e| format!("--token-file: {e}"))?;
        config.targets = TargetMode::Tokens {
            targets: Arc::new(targets),
            from_host: host_token,
        };
    } else if host_token {
        return Err("--host-token needs --token-file".into());
    }

    let cert: Option<PathBuf> = value(&mut args, "--cert", "a PEM file")?;
    let key: Option<PathBuf> = value(&mut args, "--key", "a PEM file")?;
    config.tls_only = args.contains("--tls-only");
    config.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsServer::from_files(&cert, &key)?)),
        (None, None) if config.tls_only => return Err("--tls-only needs --cert and --key".into()),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    let tls_target = args.contains("--tls-target");
    let target_ca: Option<PathBuf> = value(&mut args, "--target-ca", "a PEM file")?;
    if tls_target || target_ca.is_some() {
        config.tls_target = Some(Arc::new(TlsClient::new(target_ca.as_deref())?));
    }

    let rest = args.finish();
    if let Some(flag) = rest.iter().find(|a| a.to_string_lossy().starts_with('-')) {
        return Err(format!("unknown option '{}'", flag.to_string_lossy()));
    }
    match rest.as_slice() {
        [] => {}
        [listen, target] if matches!(config.targets, TargetMode::FromPath) => {
            // websockify's positional form: [LISTEN_ADDR:]LISTEN_PORT TARGET_HOST:TARGET_PORT.
            let listen = listen.to_string_lossy();
            config.listen = match listen.parse::<u16>() {
                Ok(port) => listen_address(None, Some(port))?,
                Err(_) => listen_address(Some(&listen), None)?,
            };
            let target = target.to_string_lossy();
            config.targets = TargetMode::Fixed(
                target::parse_host_port(&target).map_err(|e| format!("target '{target}': {e}"))?,
            );
        }
        [first, ..] => return Err(format!("unexpected argument '{}'", first.to_string_lossy())),
    }
    config.origins.loopback_only = config.listen.ip().is_loopback();
    refuse_open_proxy(&config)?;
    Ok(Command::Run(Box::new(config)))
}

/// Listening beyond loopback with client-chosen targets and no --allow rule would make an
/// open proxy into whatever network this machine can reach: refuse to start.
fn refuse_open_proxy(config: &Config) -> Result<(), String> {
    if config.listen.ip().is_loopback()
        || !matches!(config.targets, TargetMode::FromPath)
        || !config.policy.allow.is_empty()
    {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {} without an --allow rule: any client that reaches this port (and any web page its users open) could tunnel to every host this machine can reach, including internal ones. Allow what you mean, e.g. --allow 'example.com:443' --allow '10.0.0.0/8:5900-5999', or opt in to an open proxy with --allow '*:*'",
        config.listen
    ))
}

/// All values of a repeatable flag.
fn repeated(args: &mut pico_args::Arguments, key: &'static str) -> Result<Vec<String>, String> {
    args.values_from_str(key)
        .map_err(|e| format!("bad value for '{key}': {e}"))
}

/// An optional flag value, with a clear error naming the flag and what it expects.
fn value<T: FromStr>(
    args: &mut pico_args::Arguments,
    keys: impl Into<pico_args::Keys> + Copy + Into<FlagName>,
    expected: &str,
) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    let name: FlagName = keys.into();
    let name = name.0;
    args.opt_value_from_fn(keys, |text: &str| text.parse::<T>())
        .map_err(|e| match e {
            pico_args::Error::MissingArgument | pico_args::Error::OptionWithoutAValue(_) => {
                format!("option '{name}' needs a value ({expected})")
            }
            pico_args::Error::Utf8ArgumentParsingFailed { value, .. }
            | pico_args::Error::ArgumentParsingFailed { cause: value } => {
                format!("bad value for '{name}': {value} (expected {expected})")
            }
            other => format!("{name}: {other}"),
        })
}

/// The name of a flag for error messages: the long form if there is one.
pub struct FlagName(&'static str);

impl From<&'static str> for FlagName {
    fn from(name: &'static str) -> Self {
        FlagName(name)
    }
}

impl From<[&'static str; 2]> for FlagName {
    fn from(names: [&'static str; 2]) -> Self {
        FlagName(names[0])
    }
}

/// Every `SECS` option: from a millisecond (socket timeouts are no finer) to a year.
const SECONDS: RangeInclusive<f64> = 0.001..=31_536_000.0;
/// `--max-frame-size` and `--max-message-size`: a byte to a TiB (far beyond any real message,
/// and small enough that sums of frame lengths cannot overflow).
const BYTES: RangeInclusive<u64> = 1..=1 << 40;
/// `--max-connections`: each tunnel needs two descriptors, and Linux allows a process at most
/// about a million (`fs.nr_open`).
const CONNECTIONS: RangeInclusive<usize> = 1..=1_000_000;
/// `--spare-threads`: 0 (none) to far more than a machine would keep idle.
const SPARE_THREADS: RangeInclusive<usize> = 0..=10_000;

/// An optional `SECS` flag, a decimal number in [`SECONDS`].
fn seconds(args: &mut pico_args::Arguments, key: &'static str) -> Result<Option<Duration>, String> {
    let (lo, hi) = (SECONDS.start(), SECONDS.end());
    let expected = format!("a number of seconds from {lo} to {hi}");
    let secs: Option<f64> = value(args, key, &expected)?;
    match secs {
        // (NaN, infinities and negative zero are outside the range too.)
        Some(s) if !SECONDS.contains(&s) => {
            Err(format!("bad value for '{key}': {s} (expected {expected})"))
        }
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
        None => Ok(None),
    }
}

/// An optional integer flag whose value must lie in `range` (`unit` names what it counts).
fn number<T>(
    args: &mut pico_args::Arguments,
    key: &'static str,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<Option<T>, String>
where
    T: FromStr + PartialOrd + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let expected = format!("{} to {} {unit}", range.start(), range.end());
    match value::<T>(args, key, &expected)? {
        Some(n) if !range.contains(&n) => {
            Err(format!("bad value for '{key}': {n} (expected {expected})"))
        }
        other => Ok(other),
    }
}

fn describe(e: pico_args::Error) -> String {
    e.to_string()
}

/// `-l` and `-p` together: `ADDR`, `[V6]`, `V6`, or `ADDR:PORT` / `[V6]:PORT`.
pub fn listen_address(listen: Option<&str>, port: Option<u16>) -> Result<SocketAddr, String> {
    let port = port.unwrap_or(8080);
    let Some(text) = listen else {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    // A name, with or without a port: `localhost`, `localhost:9000`. Listen on its first
    // address (IPv4 first, as the resolver orders them).
    let resolved = match text.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => text.to_socket_addrs(),
        _ => (text, port).to_socket_addrs(),
    };
    resolved
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            format!(
                "bad listen address '{text}' (expected e.g. 127.0.0.1, 0.0.0.0, ::, [::1], localhost or 127.0.0.1:8080)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from).collect())? {
            Command::Run(config) => Ok(*config),
            _ => panic!("expected a run command"),
        }
    }

    #[test]
    fn defaults_to_loopback_8080() {
        assert_eq!(run(&[]).unwrap().listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn listen_accepts_every_documented_form() {
        let cases = [
            (vec!["-p", "9000"], "127.0.0.1:9000"),
            (vec!["-l", "0.0.0.0", "--allow", "*:*"], "0.0.0.0:8080"),
            (vec!["-l", "::", "-p", "1", "--allow", "*:*"], "[::]:1"),
            (vec!["-l", "[::1]", "-p", "2"], "[::1]:2"),
            (vec!["--listen", "127.0.0.2:3"], "127.0.0.2:3"),
            (vec!["-l", "[::1]:4"], "[::1]:4"),
        ];
        for (args, expected) in cases {
            assert_eq!(run(&args).unwrap().listen.to_string(), expected, "{args:?}");
        }
    }

    #[test]
    fn listen_accepts_a_host_name_with_or_without_port() {
        for (args, port) in [
            (vec!["-l", "localhost:5"], 5),
            (vec!["-l", "localhost", "-p", "6"], 6),
        ] {
            let listen = run(&args).unwrap().listen;
            assert!(
                listen.ip().is_loopback() && listen.port() == port,
                "{args:?} → {listen}"
            );
        }
    }

    #[test]
    fn verbosity_flags() {
        assert_eq!(run(&["-v"]).unwrap().verbosity, Verbosity::Verbose);
        assert_eq!(run(&["-d"]).unwrap().verbosity, Verbosity::Debug);
        assert_eq!(run(&["-v", "-d"]).unwrap().verbosity, Verbosity::Debug);
    }

    #[test]
    fn refuses_an_open_proxy_beyond_loopback() {
        let error = run(&["-l", "0.0.0.0"]).unwrap_err();
        assert!(error.contains("--allow '*:*'"), "{error}");
        assert!(run(&["-l", "0.0.0.0", "--allow", "*:*"]).is_ok());
        assert!(run(&["-l", "0.0.0.0", "--target", "127.0.0.1:5900"]).is_ok());
        assert!(run(&["-l", "[::1]"]).is_ok());
    }

    #[test]
    fn websockify_positional_form() {
        let config = run(&["6080", "localhost:5900"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:6080");
        assert!(
            matches!(config.targets, TargetMode::Fixed(ref t) if t.to_string() == "localhost:5900")
        );
        let config = run(&["127.0.0.1:6081", "[::1]:5901"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:6081");
        assert!(run(&["6080"]).is_err());
        assert!(run(&["--target", "a:1", "6080", "b:2"]).is_err());
    }

    #[test]
    fn policy_flags_parse_rules() {
        let config = run(&["--allow", "*.example.com:443", "--deny", "10.0.0.0/8:*"]).unwrap();
        assert_eq!(
            (config.policy.allow.len(), config.policy.deny.len()),
            (1, 1)
        );
        assert!(
            run(&["--allow", "nonsense"])
                .unwrap_err()
                .contains("HOST:PORTS")
        );
    }

    #[test]
    fn numeric_options_are_range_checked() {
        for secs in [
            "--handshake-timeout",
            "--connect-timeout",
            "--idle-timeout",
            "--heartbeat",
            "--close-timeout",
            "--shutdown-grace",
        ] {
            for bad in [
                "0", "-1", "NaN", "inf", "-inf", "1e300", "0.0001", "31536001", "-0",
            ] {
                let error = run(&[secs, bad]).unwrap_err();
                assert!(
                    error.starts_with(&format!("bad value for '{secs}'")),
                    "{secs} {bad}: {error}"
                );
            }
            assert!(
                run(&[secs, "0.001"]).is_ok() && run(&[secs, "31536000"]).is_ok(),
                "{secs}"
            );
        }
        for (flag, lo, hi) in [
            ("--max-message-size", "1", "1099511627776"),
            ("--max-frame-size", "1", "1099511627776"),
            ("--max-connections", "1", "1000000"),
            ("--spare-threads", "0", "10000"),
        ] {
            assert!(
                run(&[flag, lo]).is_ok() && run(&[flag, hi]).is_ok(),
                "{flag}"
            );
            let above: u128 = hi.parse::<u128>().unwrap() + 1;
            for bad in [
                above.to_string(),
                "-1".into(),
                "1e3".into(),
                "99999999999999999999999".into(),
                "NaN".into(),
            ] {
                let error = run(&[flag, &bad]).unwrap_err();
                assert!(
                    error.contains(&format!("expected {lo} to {hi}")),
                    "{flag} {bad}: {error}"
                );
            }
        }
        assert!(run(&["--max-connections", "0"]).is_err());
    }

    #[test]
    fn bad_input_is_a_one_line_error() {
        assert_eq!(
            run(&["--frobnicate"]).unwrap_err(),
            "unknown option '--frobnicate'"
        );
        assert!(
            run(&["-p", "http"])
                .unwrap_err()
                .starts_with("bad value for '-p'")
        );
        assert!(run(&["-p", "70000"]).unwrap_err().contains("0-65535"));
        assert!(run(&["-p"]).unwrap_err().contains("needs a value"));
        assert!(
            run(&["-l", "nowhere"])
                .unwrap_err()
                .contains("bad listen address")
        );
        assert!(
            run(&["--connect-timeout", "-1"])
                .unwrap_err()
                .contains("expected a number of seconds from 0.001 to 31536000")
        );
        for error in [
            run(&["--handshake-timeout", "1e300"]).unwrap_err(),
            run(&["--max-connections", "0"]).unwrap_err(),
            run(&["--frobnicate"]).unwrap_err(),
            run(&["-p", "x"]).unwrap_err(),
        ] {
            assert!(!error.contains('\n'));
        }
    }
}

//! One client connection, from accept to close. Read this file top to bottom to follow a
//! connection through wsproxy:
//!
//! 1. read the request head ([`crate::http`]), bounded in size and time;
//! 2. decide what it is ([`crate::handshake::classify`]): plain HTTP (answered from
//!    [`crate::static_files`]) or a WebSocket handshake of some generation;
//! 3. admit it: Host and Origin ([`crate::origin`]), the target (from the path, `--target` or a
//!    token, [`crate::tokens`]), resolved once as exactly that name and within the handshake
//!    deadline ([`crate::resolve`]), and checked against the policy ([`crate::policy`]);
//! 4. complete the handshake ([`crate::handshake::accept`]) — any refusal before this point
//!    is an HTTP error with a one-line reason;
//! 5. connect to the target (after the handshake: a failure is reported in a Close frame,
//!    which a browser can read, unlike an HTTP error);
//! 6. hand both sockets to the tunnel ([`crate::tunnel`]) with the framing of the generation
//!    ([`crate::framing`]), and log how it ended.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use log::{debug, info, log_enabled, warn};

use crate::config::{Config, TargetMode};
use crate::framing::hixie::{HixieEncoder, HixieReader};
use crate::framing::rfc6455::{Rfc6455Encoder, Rfc6455Reader};
use crate::framing::{ClientReader, CloseInfo, Controls, FrameEncoder, Wire, close_code};
use crate::handshake::{self, Accepted, Generation, RequestKind, Scheme};
use crate::http::{self, Deadline, HeadError, Refusal, Request};
use crate::logging::escape;
use crate::resolve;
use crate::socket::{ClientSink, HTTP_LINGER, Readable, SharedSocket, lingering_close};
use crate::static_files;
use crate::target::{self, Target};
use crate::tls;
use crate::tokens;
use crate::tunnel::{self, Timers, Tunnel};

/// A WebSocket handshake that succeeded, with what the tunnel needs next.
struct Upgraded {
    accepted: Accepted,
    target: Target,
    /// The resolved addresses, or why resolution failed (reported after the handshake).
    addresses: Result<Vec<SocketAddr>, String>,
    /// Bytes the client sent after its handshake (its first frames).
    leftover: Vec<u8>,
}

/// The client's byte streams: plain TCP, or TLS on the same port.
struct Transport {
    reader: Box<dyn Readable>,
    writer: Box<dyn ClientSink>,
    scheme: Scheme,
}

/// Serves one connection on the calling thread.
pub fn serve(id: u64, client: SharedSocket, peer: SocketAddr, config: &Config) {
    let started = Instant::now();
    let _ = client.0.set_nodelay(true);
    // No write to the client waits for ever: responses, static files and the tunnel's
    // frames all give up after the stall limit without progress.
    let _ = client.0.set_write_timeout(Some(config.stall_limit()));
    let deadline = Deadline {
        socket: &client.0,
        at: started + config.handshake_timeout,
    };
    // Step 0: TLS or not (the first byte of a TLS connection is 0x16, RFC 8446 §5.1).
    let Some(Transport {
        mut reader,
        mut writer,
        scheme,
    }) = open_transport(id, peer, &client, &deadline, config)
    else {
        return;
    };

    let (request, leftover) = match http::read_head(&mut reader, &deadline) {
        Ok(head) => head,
        Err(HeadError::Abandoned(why)) => {
            // A client dropped at the deadline is worth an operator's attention (slowloris);
            // one that connected and left is not.
            if why.contains("timed out") {
                info!("[#{id}] {peer} dropped: {why}");
            } else {
                debug!("[#{id}] {peer}: {why}");
            }
            return;
        }
        Err(HeadError::Refused(refusal)) => return refuse(id, peer, &client, writer, &refusal),
    };
    if log_enabled!(log::Level::Debug) {
        debug!("[#{id}] {peer} > {}", escape(&request.request_line()));
        for (name, value) in &request.headers {
            debug!("[#{id}] {peer} > {}: {}", escape(name), escape(value));
        }
    }

    let generation = match handshake::classify(&request) {
        Ok(RequestKind::WebSocket(generation)) => generation,
        Ok(RequestKind::PlainHttp) => {
            return serve_plain_http(id, peer, &client, writer, &request, config);
        }
        Err(refusal) => return refuse(id, peer, &client, writer, &refusal),
    };
    debug!(
        "[#{id}] detected {generation} ({})",
        why_detected(generation)
    );
    let handshake = Handshake {
        id,
        request: &request,
        generation,
        scheme,
        deadline: &deadline,
        config,
    };
    let upgraded = match upgrade(&handshake, leftover, &mut reader) {
        Ok(Some(upgraded)) => upgraded,
        Ok(None) => return,
        Err(refusal) => return refuse(id, peer, &client, writer, &refusal),
    };
    let _ = client.0.set_read_timeout(None);
    let Upgraded {
        accepted,
        target,
        addresses,
        leftover,
    } = upgraded;
    if let Err(e) = writer.write_all(&accepted.response) {
        debug!("[#{id}] {peer}: could not send the handshake response: {e}");
        return;
    }
    let controls = Controls {
        wire: wire_of(accepted.generation),
    };
    let protocol = describe_protocol(&accepted, scheme);

    let connected = addresses
        .and_then(|addrs| target::connect(&addrs, config.connect_timeout))
        .and_then(|stream| open_target(stream, &target, config));
    let (target_socket, target_reader, target_writer) = match connected {
        Ok(connected) => connected,
        Err(why) => {
            info!("[#{id}] {peer} → {target} via {}: {why}", escape(&protocol));
            // 1011 rather than 1014 (Bad Gateway): some clients, tungstenite among them,
            // reject 1014 as a protocol error and lose the reason.
            let close = CloseInfo {
                code: close_code::INTERNAL_ERROR,
                reason: why,
            };
            let _ = writer.write_all(&controls.close(Some(&close)));
            writer.finish();
            lingering_close(&client.0, config.close_timeout);
            return;
        }
    };
    let target_addr = describe_peer(&target_socket.0);
    info!(
        "[#{id}] open {peer} → {target} ({target_addr}) via {}",
        escape(&protocol)
    );

    let (reader, encoder) = framing_for(id, &accepted, reader, &leftover, config);
    let report = tunnel::run(Tunnel {
        id,
        client: client.clone(),
        reader,
        writer,
        encoder,
        controls,
        target_reader,
        target_writer,
        target: target_socket,
        timers: Timers {
            close_timeout: config.close_timeout,
            stall_limit: config.stall_limit(),
            idle_timeout: config.idle_timeout,
            heartbeat: config.heartbeat,
        },
    });
    info!(
        "[#{id}] close {peer} → {target} after {:.3} s: {} bytes up, {} bytes down; {}",
        started.elapsed().as_secs_f64(),
        report.bytes_up,
        report.bytes_down,
        escape(&report.ending)
    );
}

/// Step 0: plain TCP, or a TLS handshake when TLS is on and the client starts with one.
fn open_transport(
    id: u64,
    peer: SocketAddr,
    client: &SharedSocket,
    deadline: &Deadline,
    config: &Config,
) -> Option<Transport> {
    let plain = || Transport {
        reader: Box::new(client.clone()),
        writer: Box::new(client.clone()),
        scheme: Scheme::Ws,
    };
    let Some(server) = &config.tls else {
        return Some(plain());
    };
    let first = match tls::peek_first_byte(&client.0, deadline.at) {
        Ok(Some(byte)) => byte,
        Ok(None) => return None,
        Err(e) => {
            debug!("[#{id}] {peer}: nothing received: {e}");
            return None;
        }
    };
    if !tls::is_client_hello(first) {
        if config.tls_only {
            let refusal = Refusal::bad_request("this port speaks TLS only: use wss:// or https://");
            refuse(id, peer, client, Box::new(client.clone()), &refusal);
            return None;
        }
        return Some(plain());
    }
    match server.accept(client.clone(), deadline.at) {
        Ok((reader, writer)) => {
            debug!("[#{id}] {peer}: TLS {}", escape(&reader.info().to_string()));
            Some(Transport {
                reader: Box::new(reader),
                writer: Box::new(writer),
                scheme: Scheme::Wss,
            })
        }
        Err(why) => {
            info!("[#{id}] {peer}: {}", escape(&why));
            None
        }
    }
}

/// The target's socket and byte streams: plain TCP, or TLS with `--tls-target`.
type TargetStreams = (SharedSocket, Box<dyn Readable>, Box<dyn Write + Send>);

fn open_target(
    stream: TcpStream,
    target: &Target,
    config: &Config,
) -> Result<TargetStreams, String> {
    let _ = stream.set_nodelay(true);
    let socket = SharedSocket::new(stream);
    match &config.tls_target {
        None => Ok((socket.clone(), Box::new(socket.clone()), Box::new(socket))),
        Some(client) => {
            let deadline = Instant::now() + config.connect_timeout;
            let (reader, writer) = client
                .connect(socket.clone(), &target.host.to_string(), deadline)
                .map_err(|e| format!("TLS to {target}: {e}"))?;
            Ok((socket, Box::new(reader), Box::new(writer)))
        }
    }
}

/// What the handshake steps need to know about the request.
struct Handshake<'a> {
    id: u64,
    request: &'a Request,
    generation: Generation,
    scheme: Scheme,
    deadline: &'a Deadline<'a>,
    config: &'a Config,
}

/// Steps 3–4: admit the request, find the target, complete the handshake.
/// `Ok(None)` means the client went away mid-handshake.
fn upgrade(
    handshake: &Handshake,
    mut leftover: Vec<u8>,
    reader: &mut dyn Read,
) -> Result<Option<Upgraded>, Refusal> {
    let Handshake {
        id,
        request,
        generation,
        scheme,
        deadline,
        config,
    } = *handshake;
    let host = request.header("Host");
    config.origins.check_host(host)?;
    config
        .origins
        .check_origin(handshake::origin(request, generation), host)?;
    let target = choose_target(request, config)?;
    // Check the name before looking it up (nothing the rules forbid is looked up), then
    // resolve once and connect only to addresses the policy let through (no second lookup).
    config
        .policy
        .check_name(&target)
        .map_err(|why| Refusal::new(403, why))?;
    // hixie-76's key3 is part of the request: read it before the lookup takes its share of
    // the deadline.
    let key3 = if generation == Generation::Hixie76 {
        match http::read_body_exact(&mut leftover, reader, 8, deadline) {
            Ok(body) => Some(<[u8; 8]>::try_from(body.as_slice()).expect("read exactly 8 bytes")),
            Err(HeadError::Refused(refusal)) => return Err(refusal),
            Err(HeadError::Abandoned(why)) => {
                debug!("[#{id}] abandoned while sending key3: {why}");
                return Ok(None);
            }
        }
    } else {
        None
    };
    let addresses = resolve_and_check(id, &target, config, deadline.at)?;
    let accepted = handshake::accept(request, generation, key3, scheme)?;
    for line in &accepted.transcript {
        debug!("[#{id}] {}", escape(line));
    }
    Ok(Some(Upgraded {
        accepted,
        target,
        addresses,
        leftover,
    }))
}

/// The end of step 3: resolve the target (waiting at most until the handshake deadline) and
/// keep the addresses the policy lets through.
///
/// What a refused client is told depends on what decided: when only its request and the
/// rules did (an IP literal, `localhost`), the reason names the rule; when a lookup did, every
/// outcome — an address refused, no such name, no answer in time — gets the same
/// `target NAME:PORT not allowed`, and only the log says which, so the answers cannot tell a
/// client which internal names exist. A failed lookup is reported after the handshake
/// (`Err` inside `Ok`, a Close 1011) only when the rules' verdict could not depend on
/// addresses ([`crate::policy::Policy::may_report_lookup_failure`]).
fn resolve_and_check(
    id: u64,
    target: &Target,
    config: &Config,
    deadline: Instant,
) -> Result<Result<Vec<SocketAddr>, String>, Refusal> {
    let policy = &config.policy;
    let not_allowed = |why: &str| {
        info!("[#{id}] {why}");
        Refusal::new(403, format!("target {target} not allowed"))
    };
    match resolve::resolve(target, deadline) {
        Ok(resolved) => match policy.permitted(target, &resolved.addrs) {
            Ok(addrs) => Ok(Ok(addrs)),
            Err(why) if resolved.source.is_lookup() => Err(not_allowed(&why)),
            Err(why) => Err(Refusal::new(403, why)),
        },
        Err(failure) if policy.may_report_lookup_failure(target) => Ok(Err(failure.to_string())),
        Err(failure) => Err(not_allowed(&format!(
            "target {target} not allowed: {failure}"
        ))),
    }
}

/// Where this tunnel goes: the path, the fixed `--target`, or the token's target.
fn choose_target(request: &Request, config: &Config) -> Result<Target, Refusal> {
    match &config.targets {
        TargetMode::FromPath => {
            target::parse_resource(&request.resource).map_err(Refusal::bad_request)
        }
        TargetMode::Fixed(target) => Ok(target.clone()),
        TargetMode::Tokens { targets, from_host } => {
            let token =
                tokens::token_from_request(&request.resource, request.header("Host"), *from_host)
                    .ok_or_else(|| {
                    Refusal::bad_request(if *from_host {
                        "no token in the Host name"
                    } else {
                        "missing token: connect with ?token=NAME in the URL"
                    })
                })?;
            match targets.lookup(&token) {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Err(Refusal::new(404, format!("token '{token}' not found"))),
                // The detail names server files: log it, do not send it to the client.
                Err(e) => {
                    warn!("token file unusable: {e}");
                    Err(Refusal::new(
                        500,
                        "token file unusable (see the proxy's log)",
                    ))
                }
            }
        }
    }
}

/// A plain HTTP request: static files, or — if its path names a target — directions.
fn serve_plain_http(
    id: u64,
    peer: SocketAddr,
    client: &SharedSocket,
    mut writer: Box<dyn Write + Send>,
    request: &Request,
    config: &Config,
) {
    if let Err(refusal) = config.origins.check_host(request.header("Host")) {
        return refuse(id, peer, client, writer, &refusal);
    }
    let names_a_target = matches!(config.targets, TargetMode::FromPath)
        && target::parse_resource(&request.resource).is_ok();
    if names_a_target || config.web == static_files::WebRoot::Disabled && request.resource == "/" {
        return refuse(id, peer, client, writer, &plain_http_answer(request));
    }
    match static_files::serve(&config.web, &request.method, &request.resource, &mut writer) {
        Ok(status) => {
            info!(
                "[#{id}] {peer} {} → {status}",
                escape(&request.request_line())
            );
            let _ = writer.flush();
            // For TLS, dropping the writer sends close_notify before our FIN.
            drop(writer);
            lingering_close(&client.0, HTTP_LINGER);
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => info!(
            "[#{id}] {peer} {}: dropped, the client stopped reading (no write progress for {} s)",
            request.request_line(),
            config.stall_limit().as_secs_f64()
        ),
        Err(e) => debug!("[#{id}] {peer}: static response failed: {e}"),
    }
}

/// A request without `Upgrade` whose path names a target: say how to connect.
fn plain_http_answer(request: &Request) -> Refusal {
    let host = request.header("Host").unwrap_or("127.0.0.1:8080");
    Refusal::bad_request(format!(
        "wsproxy is a WebSocket-to-TCP proxy: open a WebSocket to ws://{host}/<host>:<port> \
         (e.g. ws://{host}/127.0.0.1:8000) with subprotocol binary, base64 or websockets-proxy"
    ))
}

fn why_detected(generation: Generation) -> &'static str {
    match generation {
        Generation::Rfc6455 => "Sec-WebSocket-Version: 13",
        Generation::Hybi08 => "Sec-WebSocket-Version: 8",
        Generation::Hybi07 => "Sec-WebSocket-Version: 7",
        Generation::Hixie76 => "Sec-WebSocket-Key1/Key2 and no version",
        Generation::Hixie75 => "Upgrade: WebSocket without keys or version",
    }
}

fn wire_of(generation: Generation) -> Wire {
    match generation {
        Generation::Hixie75 => Wire::Hixie75,
        Generation::Hixie76 => Wire::Hixie76,
        _ => Wire::Rfc6455,
    }
}

fn describe_protocol(accepted: &Accepted, scheme: Scheme) -> String {
    let over_tls = if scheme == Scheme::Wss {
        " over TLS"
    } else {
        ""
    };
    match &accepted.subprotocol {
        Some(name) => format!(
            "{}{over_tls}, subprotocol {name} ({} frames)",
            accepted.generation, accepted.encoding
        ),
        None => format!(
            "{}{over_tls}, no subprotocol ({} frames)",
            accepted.generation, accepted.encoding
        ),
    }
}

fn describe_peer(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The reader and encoder for the negotiated generation.
fn framing_for(
    id: u64,
    accepted: &Accepted,
    client: Box<dyn Readable>,
    leftover: &[u8],
    config: &Config,
) -> (Box<dyn ClientReader>, Box<dyn FrameEncoder>) {
    if accepted.generation.is_hixie() {
        (
            Box::new(HixieReader::new(id, client, leftover, config.limits)),
            Box::new(HixieEncoder::new(id)),
        )
    } else {
        (
            Box::new(Rfc6455Reader::new(id, client, leftover, config.limits)),
            Box::new(Rfc6455Encoder::new(id, accepted.encoding)),
        )
    }
}

/// Answers with an HTTP error and closes without losing the answer.
fn refuse(
    id: u64,
    peer: SocketAddr,
    client: &SharedSocket,
    mut writer: Box<dyn Write + Send>,
    refusal: &Refusal,
) {
    info!(
        "[#{id}] {peer} refused: {} {}",
        refusal.status,
        escape(&refusal.reason)
    );
    if http::write_refusal(&mut writer, refusal).is_ok() {
        // For TLS, dropping the writer sends close_notify before our FIN.
        drop(writer);
        lingering_close(&client.0, HTTP_LINGER);
    }
}

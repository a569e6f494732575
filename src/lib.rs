//! # wsproxy
//!
//! A WebSocket-to-TCP tunnelling proxy: a client opens `ws://proxy/<host>:<port>`, the proxy
//! connects to that TCP target and relays bytes both ways until either side closes. Every
//! generation of the WebSocket protocol is served on one port: RFC 6455, hybi-07/08,
//! draft-hixie-76 and draft-hixie-75.
//!
//! Follow one connection through the modules in this order:
//!
//! | step | module | what it does | spec |
//! |---|---|---|---|
//! | 1 | [`cli`] → [`config`] | flags to settings | — |
//! | 2 | [`listener`] | one accept loop, permits, two threads per client | — |
//! | 3 | [`connection`] | the life of one connection, top to bottom | — |
//! | 4 | [`http`] | read and parse the request head, bounded | RFC 9112 |
//! | 5 | [`handshake`] | detect the generation, answer it | RFC 6455 §4, hixie-75/76 |
//! | 6 | [`target`], [`resolve`], [`policy`] | `/<host>:<port>`; the name resolved as itself, bounded by the deadline; the rules; connect | RFC 3986 §3.2.2, RFC 6761 |
//! | 7 | [`framing`] | frames in and out, per generation | RFC 6455 §5, hixie-76 §4–5 |
//! | 8 | [`tunnel`] | two pumps, one writer, one close state | RFC 6455 §7 |
//!
//! [`socket`] lets a tunnel's two threads share one socket without a second descriptor, and
//! closes connections without resetting them.

// The docs are written for learners, who read private items too
// (`cargo doc --document-private-items`); public items may link to them.
#![allow(rustdoc::private_intra_doc_links)]

pub mod auth;
pub mod buffers;
pub mod cli;
pub mod config;
pub mod connection;
pub mod framing;
pub mod handshake;
pub mod http;
pub mod inspect;
pub mod json_log;
pub mod listener;
pub mod logging;
pub mod origin;
pub mod policy;
pub mod proxy_protocol;
pub mod resolve;
pub mod shutdown;
pub mod socket;
pub mod socket_activation;
pub mod static_files;
pub mod target;
pub mod tls;
pub mod tokens;
pub mod tunnel;

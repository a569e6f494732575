//! A tiny DNS server for tests (RFC 1035 §4.1): it answers A and AAAA questions over UDP
//! from a fixed table, says NXDOMAIN for names it does not know, records every name it was
//! asked, and can be told never to answer at all (a resolver that hangs).
//!
//! It binds a real UDP socket, normally `127.0.0.1:53` inside a private network namespace
//! (see [`super::namespace`]), where `/etc/resolv.conf` points the system resolver at it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the server treats questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the table.
    Answer,
    /// Record the question and never answer.
    Silent,
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Serves `records` (`("name", "address")`, several per name allowed) on `bind`.
    pub fn start(bind: &str, records: &[(&str, &str)], mode: Mode) -> io::Result<DnsServer> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, addr) in records {
            let ip: IpAddr = addr.parse().expect("a record's address");
            table.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (Arc::clone(&asked), Arc::clone(&stop));
        thread::spawn(move || serve(&socket, &table, mode, &log, &halt));
        Ok(DnsServer { asked, stop })
    }

    /// Every name asked so far (lower-case, without the final dot), with its type: `db A`.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// Whether any question named `name` (any type).
    pub fn was_asked(&self, name: &str) -> bool {
        self.asked()
            .iter()
            .any(|q| q.split(' ').next() == Some(name))
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    socket: &UdpSocket,
    table: &HashMap<String, Vec<IpAddr>>,
    mode: Mode,
    asked: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(question) = Question::parse(&buf[..n]) else {
            continue;
        };
        asked
            .lock()
            .unwrap()
            .push(format!("{} {}", question.name, type_name(question.qtype)));
        if mode == Mode::Answer {
            let _ = reply(socket, from, &buf[..n], &question, table);
        }
    }
}

/// The one question of a query.
struct Question {
    name: String,
    qtype: u16,
    /// Where the question section ends in the query.
    end: usize,
}

impl Question {
    fn parse(query: &[u8]) -> Option<Question> {
        if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
            return None;
        }
        let mut labels = Vec::new();
        let mut at = 12;
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None; // compression pointers do not occur in questions
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        Some(Question {
            name: labels.join("."),
            qtype,
            end: at + 4,
        })
    }
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

fn type_name(qtype: u16) -> String {
    match qtype {
        TYPE_A => "A".into(),
        TYPE_AAAA => "AAAA".into(),
        other => other.to_string(),
    }
}

/// Answers with the table's addresses of the asked type (none: NODATA), or NXDOMAIN.
fn reply(
    socket: &UdpSocket,
    to: SocketAddr,
    query: &[u8],
    question: &Question,
    table: &HashMap<String, Vec<IpAddr>>,
) -> io::Result<usize> {
    let known = table.get(&question.name);
    let answers: Vec<&IpAddr> = known
        .into_iter()
        .flatten()
        .filter(|ip| match question.qtype {
            TYPE_A => ip.is_ipv4(),
            TYPE_AAAA => ip.is_ipv6(),
            _ => false,
        })
        .collect();
    let rcode = if known.is_some() { 0 } else { 3 };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]); // the query's id
    out.push(0x84 | (query[2] & 0x01)); // QR, AA, the query's RD
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional records
    out.extend_from_slice(&query[12..question.end]);
    for ip in answers {
        out.extend_from_slice(&[0xC0, 0x0C]); // the name: a pointer to the question's
        out.extend_from_slice(&question.qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0]); // class IN, TTL 0
        match ip {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    socket.send_to(&out, to)
}

//! Test helpers: client frames as a browser would send them, and a source that delivers
//! them a few bytes at a time.

use std::io::{self, Read};

use super::Rfc6455Reader;
use crate::framing::{ClientReader, Inbound, Limits, ReadError};
use crate::socket::Readable;

/// A client frame as a browser would send it.
pub(super) fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![opcode | if fin { 0x80 } else { 0 }];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Delivers bytes `step` at a time, to exercise every split point.
pub(super) struct Trickle {
    pub(super) data: Vec<u8>,
    pub(super) at: usize,
    pub(super) step: usize,
}

impl Readable for Trickle {}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads everything, returning the data forwarded and the other events.
pub(super) fn read_all(wire: Vec<u8>, step: usize) -> (Vec<u8>, Vec<String>) {
    let source = Trickle {
        data: wire,
        at: 0,
        step,
    };
    let mut reader = Rfc6455Reader::new(1, source, &[], Limits::default());
    let (mut data, mut events) = (Vec::new(), Vec::new());
    loop {
        match reader.next() {
            Ok(Inbound::Data(d)) => data.extend_from_slice(d),
            Ok(Inbound::Eof) => break,
            Ok(other) => events.push(format!("{other:?}")),
            Err(ReadError::Violation(v)) => {
                events.push(format!("violation {v}"));
                break;
            }
            Err(ReadError::Io(e)) => panic!("{e}"),
        }
    }
    (data, events)
}

//! Test helpers: client frames as a browser would send them, and the RFC 6455 reader fed
//! them a few bytes at a time.

use super::Rfc6455Reader;
use crate::framing::Limits;
use crate::framing::test_support::{Trickle, collect};

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

/// Reads everything, returning the data forwarded and the other events.
pub(super) fn read_all(wire: Vec<u8>, step: usize) -> (Vec<u8>, Vec<String>) {
    let mut reader = Rfc6455Reader::new(1, Trickle::new(wire, step), &[], Limits::default());
    collect(&mut reader)
}

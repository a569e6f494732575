//! Test helpers shared by the framing readers' unit tests: a source that delivers bytes a
//! few at a time, and a loop that collects what a reader makes of them.

use std::io::{self, Read};

use super::{ClientReader, Inbound, ReadError};
use crate::socket::Readable;

/// Delivers bytes `step` at a time, to exercise every split point.
pub(crate) struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl Trickle {
    pub(crate) fn new(data: impl Into<Vec<u8>>, step: usize) -> Trickle {
        Trickle {
            data: data.into(),
            at: 0,
            step,
        }
    }
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

/// Reads until EOF or a violation: the data forwarded, and every other event as text.
pub(crate) fn collect(reader: &mut dyn ClientReader) -> (Vec<u8>, Vec<String>) {
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

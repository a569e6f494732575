//! Relay buffers: borrowed from a shared pool only while data flows, and sized for the flow.
//!
//! Most tunnels are idle most of the time, and 9,000 idle tunnels holding a buffer per
//! direction would be gigabytes. So a pump gives its buffer back whenever a read has drained
//! the socket, waits for the next data *without* a buffer (a one-byte `peek`, see
//! [`crate::socket::Readable`]), and borrows a buffer again when data is there.
//!
//! Two sizes: a burst starts with a [`SMALL`] buffer (64 KiB, plenty for interactive
//! traffic). A read that brings half a small buffer's worth or more means bulk data is queued, so
//! the pump moves to a [`LARGE`] one (1 MiB): each read then takes up to 1 MiB and each write
//! passes it on in one syscall, which wakes the other side's thread once per megabyte
//! instead of once per 64 KiB. On this project's 2-core test machine that cut the proxy's
//! CPU time per relayed gigabyte by about a third; wake-ups, not copies, dominate there.
//! [`Pace`] holds this rule.
//!
//! The pool keeps a bounded number of free buffers of each size, so memory follows the
//! number of tunnels *moving data*, not the number open.
//!
//! A filled buffer can also leave its pump: [`Buffer::take_filled`] moves it out as a
//! [`Filled`] (a frame on its way to the client's writer, through a channel, without a copy),
//! and dropping the [`Filled`] gives the buffer back to the pool.

use std::io;
use std::ops::{Deref, Range};
use std::sync::Mutex;

use crate::socket::Readable;

/// Payload bytes of a small buffer.
pub const SMALL: usize = 64 * 1024;
/// Payload bytes of a large buffer.
pub const LARGE: usize = 1024 * 1024;
/// Extra bytes in every buffer, e.g. for a frame header before the payload.
pub const ROOM: usize = 16;
/// A read that brings this much shows bulk data queued (half a small buffer: reads of
/// Base64 input ask for 3/4 of one).
const BULK_READ: usize = SMALL / 2;

/// A pool of free buffers of one size.
struct Pool {
    free: Mutex<Vec<Box<[u8]>>>,
    keep: usize,
}

/// Up to 128 small buffers (8 MiB) and 4 large ones (4 MiB) are kept for reuse.
static SMALL_POOL: Pool = Pool {
    free: Mutex::new(Vec::new()),
    keep: 128,
};
static LARGE_POOL: Pool = Pool {
    free: Mutex::new(Vec::new()),
    keep: 4,
};

impl Pool {
    fn take(&self, payload: usize) -> Box<[u8]> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; payload + ROOM].into_boxed_slice())
    }

    fn give(&self, buffer: Box<[u8]>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(buffer);
        }
    }
}

/// Gives a buffer back to the pool of its size.
fn give_back(buffer: Box<[u8]>) {
    match buffer.len() {
        n if n == LARGE + ROOM => LARGE_POOL.give(buffer),
        n if n == SMALL + ROOM => SMALL_POOL.give(buffer),
        _ => {}
    }
}

/// A buffer slot that borrows from the pool on demand.
#[derive(Debug, Default)]
pub struct Buffer {
    held: Option<Box<[u8]>>,
    large: bool,
}

impl Buffer {
    /// The buffer, borrowed from the pool if not held: [`payload`](Self::payload) `+ ROOM`
    /// bytes.
    pub fn get(&mut self) -> &mut [u8] {
        let payload = self.payload();
        self.held.get_or_insert_with(|| {
            if payload == LARGE {
                LARGE_POOL.take(LARGE)
            } else {
                SMALL_POOL.take(SMALL)
            }
        })
    }

    /// Payload bytes of the buffer held, or of the next one borrowed.
    pub fn payload(&self) -> usize {
        if self.large { LARGE } else { SMALL }
    }

    /// The buffer's contents (it must be held).
    pub fn held(&self) -> &[u8] {
        self.held.as_deref().expect("the buffer is held")
    }

    /// Chooses the size of the buffer: a held buffer of the other size is given back, so
    /// call this only when the buffer holds nothing still needed.
    pub fn set_large(&mut self, large: bool) {
        if large != self.large {
            self.release();
            self.large = large;
        }
    }

    /// Gives the buffer back to the pool.
    pub fn release(&mut self) {
        if let Some(buffer) = self.held.take() {
            give_back(buffer);
        }
    }

    /// Takes back the buffer of a [`Filled`] moved out of this slot (its frame was written),
    /// so the next read goes into it without a trip through the pool. A buffer of the other
    /// size, or one arriving while the slot holds one, goes to the pool.
    pub fn restore(&mut self, filled: Filled) {
        let mut filled = filled;
        let buffer = std::mem::take(&mut filled.buffer);
        if self.held.is_none() && buffer.len() == self.payload() + ROOM {
            self.held = Some(buffer);
        } else {
            give_back(buffer);
        }
    }

    /// Moves the held buffer out, as `range` of it filled; the slot borrows a new one (of the
    /// same size) when next asked.
    pub fn take_filled(&mut self, range: Range<usize>) -> Filled {
        let buffer = self.held.take().expect("the buffer is held");
        assert!(
            range.end <= buffer.len(),
            "the range lies inside the buffer"
        );
        Filled { buffer, range }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.release();
    }
}

/// A pool buffer moved out of its [`Buffer`] with a range of it filled (e.g. one frame for
/// the client). Reads as that range; goes back to the pool when dropped.
#[derive(Debug)]
pub struct Filled {
    buffer: Box<[u8]>,
    range: Range<usize>,
}

impl Deref for Filled {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buffer));
    }
}

/// How a pump's reads have been going: whether the source is drained (give the buffers
/// back and wait) and whether bulk data is flowing (use large buffers).
#[derive(Debug)]
pub struct Pace {
    drained: bool,
    bulk: bool,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            drained: true,
            bulk: false,
        }
    }
}

impl Pace {
    /// Records a read that asked for `asked` bytes and got `got`.
    ///
    /// Drained: it got less than it asked for, and less than half a small buffer (a big
    /// read that stops short still means data is flowing). Bulk: it got half a small buffer
    /// or more; that lasts until a read finds the source drained.
    pub fn record(&mut self, got: usize, asked: usize) {
        self.drained = got < asked.min(BULK_READ);
        if got >= BULK_READ {
            self.bulk = true;
        } else if self.drained {
            self.bulk = false;
        }
    }

    /// Whether the last read drained the source.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Gets a pump's two empty buffers ready for its next read from `source`: if the last
    /// read drained it, gives them back and waits for data without them (when the source
    /// can wait that way); then sizes them for the pace.
    pub fn before_read<R: Readable + ?Sized>(
        &self,
        source: &mut R,
        buffers: [&mut Buffer; 2],
    ) -> io::Result<()> {
        let [first, second] = buffers;
        if self.drained && source.can_wait() {
            first.release();
            second.release();
            source.wait_readable()?;
        }
        first.set_large(self.bulk);
        second.set_large(self.bulk);
        Ok(())
    }

    /// Whether bulk data is flowing.
    pub fn bulk(&self) -> bool {
        self.bulk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_size_asked_for() {
        let mut b = Buffer::default();
        assert_eq!(b.get().len(), SMALL + ROOM);
        b.set_large(true);
        assert_eq!(b.get().len(), LARGE + ROOM);
        assert_eq!(b.payload(), LARGE);
        b.set_large(false);
        assert_eq!(b.get().len(), SMALL + ROOM);
    }

    #[test]
    fn released_buffers_are_reused() {
        let mut a = Buffer::default();
        a.get()[0] = 42;
        a.release();
        let mut b = Buffer::default();
        // Other tests may share the pool, so only check that a buffer comes back whole.
        assert_eq!(b.get().len(), SMALL + ROOM);
    }

    #[test]
    fn a_filled_buffer_leaves_its_slot_and_reads_as_its_range() {
        let mut slot = Buffer::default();
        slot.set_large(true);
        slot.get()[..5].copy_from_slice(b"hello");
        let filled = slot.take_filled(1..4);
        assert_eq!(&*filled, b"ell");
        // The slot borrows a new buffer of the same size...
        assert_eq!(slot.get().len(), LARGE + ROOM);
        slot.release();
        // ...or takes the same one back.
        // (`filled` reads from byte 1 of its buffer.)
        let start = filled.as_ptr().wrapping_sub(1);
        slot.restore(filled);
        assert_eq!(slot.held().as_ptr(), start);
    }

    #[test]
    fn a_full_small_read_starts_bulk_and_a_short_read_ends_it() {
        let mut pace = Pace::default();
        assert!(pace.drained() && !pace.bulk());
        pace.record(100, SMALL + ROOM);
        assert!(pace.drained() && !pace.bulk());
        pace.record(SMALL + ROOM, SMALL + ROOM);
        assert!(!pace.drained() && pace.bulk());
        pace.record(10, LARGE + ROOM);
        assert!(pace.drained() && !pace.bulk());
        // Base64 input is read 3/4 of a buffer at a time.
        pace.record(SMALL / 4 * 3, SMALL / 4 * 3);
        assert!(!pace.drained() && pace.bulk());
        // A large read that stops short is still flowing data.
        pace.record(300 * 1024, LARGE + ROOM);
        assert!(!pace.drained() && pace.bulk());
        // A read that filled a tiny remaining room is not drained, but not bulk evidence.
        pace.record(5, 5);
        assert!(!pace.drained() && pace.bulk());
        pace.record(10, LARGE + ROOM);
        assert!(pace.drained() && !pace.bulk());
    }
}

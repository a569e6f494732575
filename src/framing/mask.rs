//! Client-to-server masking (RFC 6455 §5.3): every payload byte `i` is XORed with
//! `mask[i % 4]`. We unmask in place, eight bytes at a time, because this runs over every byte
//! the client uploads. [`unmask_to`] also moves the bytes while unmasking them, which lets
//! the reader pack the payloads of several frames together for one write (same cost: each
//! byte is read and written once either way).

/// The mask as a 64-bit word, rotated so that its first byte applies to payload byte `offset`.
fn wide_key(mask: [u8; 4], offset: u64) -> ([u8; 4], u64) {
    let shift = (offset % 4) as usize;
    let key = [0, 1, 2, 3].map(|i| mask[(i + shift) % 4]);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    (key, wide)
}

/// Unmasks `buf[from]` and moves the result to start at `buf[to]`, where `to <= from.start`
/// (the regions may overlap); `buf[from.start]` is byte number `offset` of the payload.
pub fn unmask_to(
    buf: &mut [u8],
    from: std::ops::Range<usize>,
    to: usize,
    mask: [u8; 4],
    offset: u64,
) {
    assert!(to <= from.start && from.end <= buf.len());
    if to == from.start {
        return unmask(&mut buf[from], mask, offset);
    }
    let (key, wide) = wide_key(mask, offset);
    let len = from.len();
    let whole = len / 8 * 8;
    // Forward, eight bytes at a time: each word is read before anything at or after it is
    // written, because the destination lies before the source.
    for i in (0..whole).step_by(8) {
        let at = from.start + i;
        let word = u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes")) ^ wide;
        buf[to + i..to + i + 8].copy_from_slice(&word.to_ne_bytes());
    }
    for i in whole..len {
        buf[to + i] = buf[from.start + i] ^ key[i % 4];
    }
}

/// XORs `data` with the 4-byte `mask`, where `data[0]` is byte number `offset` of the payload
/// (payloads are unmasked piecewise as they stream in).
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let (key, wide) = wide_key(mask, offset);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // Whole chunks are a multiple of 4 bytes long, so the tail starts at key index 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8], mask: [u8; 4], offset: u64) -> Vec<u8> {
        data.iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[((i as u64 + offset) % 4) as usize])
            .collect()
    }

    #[test]
    fn matches_the_definition_at_every_offset_and_length() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..40u8).collect();
        for offset in 0..8 {
            for len in 0..data.len() {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, mask, offset);
                assert_eq!(
                    fast,
                    naive(&data[..len], mask, offset),
                    "offset {offset} len {len}"
                );
            }
        }
    }

    #[test]
    fn unmask_to_moves_and_unmasks_at_every_gap_offset_and_length() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for gap in 0..12 {
            for offset in 0..4 {
                for len in 0..data.len() - gap {
                    let mut buf = data.clone();
                    unmask_to(&mut buf, gap..gap + len, 0, mask, offset);
                    assert_eq!(
                        &buf[..len],
                        &naive(&data[gap..gap + len], mask, offset)[..],
                        "gap {gap} offset {offset} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}

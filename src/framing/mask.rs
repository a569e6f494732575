//! Client-to-server masking (RFC 6455 §5.3): every payload byte `i` is XORed with
//! `mask[i % 4]`. We unmask in place, eight bytes at a time, because this runs over every byte
//! the client uploads.

/// XORs `data` with the 4-byte `mask`, where `data[0]` is byte number `offset` of the payload
/// (payloads are unmasked piecewise as they stream in).
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    let key = [0, 1, 2, 3].map(|i| mask[(i + shift) % 4]);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
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
    fn rfc_example_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}

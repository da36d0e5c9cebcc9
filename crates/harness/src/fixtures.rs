//! Small test data helpers.

/// A temp directory with a short path under `/tmp`, so socket paths stay far below the
/// 107-byte `sun_path` limit whatever `$TMPDIR` is.
pub fn short_temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ue")
        .tempdir_in("/tmp")
        .expect("/tmp is writable")
}

/// `len` pseudo-random bytes from `seed` (xorshift64*): reproducible, every byte value
/// present, no dependency on a random-number crate.
pub fn random_payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// FNV-1a over `bytes`: a quick fingerprint to compare large payloads in messages.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_reproducible_and_varied() {
        let a = random_payload(4096, 7);
        assert_eq!(a, random_payload(4096, 7));
        assert_ne!(a, random_payload(4096, 8));
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "{} distinct byte values",
            distinct.len()
        );
        assert_ne!(checksum(&a), checksum(&random_payload(4096, 8)));
    }
}

//! Saved GPU-resident state: learned log-variances and their Adam moments, the EMA θ, the step
//! counter (which also drives random weighting). The bytes are the GPU words themselves, so a
//! save/load round trip is bit-exact and a resumed run continues exactly as an uninterrupted one.

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"LOSSFUSE";
const VERSION: u32 = 1;

/// A fingerprint of what the state belongs to: term names and the strategy, so that loading the
/// state of another config is an error instead of silently wrong weights.
pub(crate) fn fingerprint(config: &crate::config::LossConfig) -> u64 {
    let mut text = format!("{:?}|", std::mem::discriminant(&config.strategy));
    for t in &config.losses {
        text.push_str(&t.name);
        text.push('|');
        text.push_str(t.kind.loss_type());
        text.push('|');
    }
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Serialises the state words.
pub(crate) fn encode(fingerprint: u64, words: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + words.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Parses state bytes, checking they belong to this plan.
pub(crate) fn decode(bytes: &[u8], fingerprint: u64, expected_words: usize) -> Result<Vec<u32>> {
    let word = |i: usize| -> Result<u32> {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| Error::State("truncated state".into()))
    };
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(Error::State("not a lossfuse state (bad magic)".into()));
    }
    let version = word(8)?;
    if version != VERSION {
        return Err(Error::State(format!(
            "state version {version}, expected {VERSION}"
        )));
    }
    let fp = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    if fp != fingerprint {
        return Err(Error::State(
            "the state was saved by a plan with other terms or another strategy".into(),
        ));
    }
    let n = word(20)? as usize;
    if n != expected_words || bytes.len() != 24 + 4 * n {
        return Err(Error::State(format!(
            "state holds {n} words in {} bytes, this plan needs {expected_words}",
            bytes.len()
        )));
    }
    (0..n).map(|i| word(24 + 4 * i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let words = vec![1, 2, 0xdead_beef, f32::to_bits(-0.5)];
        let bytes = encode(7, &words);
        assert_eq!(decode(&bytes, 7, 4).unwrap(), words);
        assert!(decode(&bytes, 8, 4).is_err());
        assert!(decode(&bytes, 7, 5).is_err());
        assert!(decode(&bytes[..10], 7, 4).is_err());
    }
}

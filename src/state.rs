//! Saved GPU-resident state (`Plan::save_state`, `Plan::load_state`): learned log-variances and
//! their optimiser moments, the EMA θ, the step counter (which also drives random weighting and
//! mining shifts), GHM-C accumulators, learned JRC weights and memory banks. The words are the
//! GPU's own, so a save/load round trip is bit-exact and a resumed run continues exactly as an
//! uninterrupted one.
//!
//! Format (version 2), little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | `LOSSFUSE` |
//! | 4 | version |
//! | 4 | length h of the description |
//! | h | the description: UTF-8 lines naming everything that shapes the state |
//! | 4 | word count n |
//! | 4·n | the words |
//! | 8 | FNV-1a 64 of every byte before it |
//!
//! A blob whose checksum fails, or whose description differs from the plan's (another strategy
//! or optimiser, a term learned or not, other terms, bins, banks), is refused with a message that
//! names what differs; the words themselves are then range-checked by the plan.

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"LOSSFUSE";
const VERSION: u32 = 2;

/// FNV-1a 64: stable across Rust versions, unlike DefaultHasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Serialises the state words with the plan's description.
/// The length in bytes of what [`encode`] makes of `description` and `words` words.
pub(crate) fn encoded_len(description: &[String], words: usize) -> usize {
    let text: usize =
        description.iter().map(String::len).sum::<usize>() + description.len().saturating_sub(1);
    // magic, version, text length, text, word count, words, the u64 checksum
    MAGIC.len() + 4 + 4 + text + 4 + 4 * words + std::mem::size_of::<u64>()
}

pub(crate) fn encode(description: &[String], words: &[u32]) -> Vec<u8> {
    let text = description.join("\n");
    let mut out = Vec::with_capacity(32 + text.len() + words.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Reads `len` bytes at `*at`, advancing it.
fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize, what: &str) -> Result<&'a [u8]> {
    let end = at.checked_add(len).filter(|&e| e <= bytes.len());
    let Some(end) = end else {
        return Err(Error::State(format!(
            "the state is truncated: it ends at byte {} inside its {what} (bytes {}..{})",
            bytes.len(),
            at,
            at.saturating_add(len)
        )));
    };
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

fn u32_at(bytes: &[u8], at: &mut usize, what: &str) -> Result<u32> {
    let b = take(bytes, at, 4, what)?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// Parses state bytes saved by a plan described by `description` that holds `expected_words`.
pub(crate) fn decode(
    bytes: &[u8],
    description: &[String],
    expected_words: usize,
) -> Result<Vec<u32>> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(Error::State(
            "not a lossfuse state: it does not start with the bytes LOSSFUSE".into(),
        ));
    }
    let mut at = 8;
    let version = u32_at(bytes, &mut at, "version")?;
    if version != VERSION {
        return Err(Error::State(format!(
            "state format version {version}; this lossfuse reads version {VERSION} (save the \
             state again with this version)"
        )));
    }
    let h = u32_at(bytes, &mut at, "description length")? as usize;
    let text = take(bytes, &mut at, h, "description")?;
    let n = u32_at(bytes, &mut at, "word count")? as usize;
    let payload = take(bytes, &mut at, n.saturating_mul(4), "words")?;
    let end = at;
    let stored = u64::from_le_bytes(take(bytes, &mut at, 8, "checksum")?.try_into().expect("8"));
    if at != bytes.len() {
        return Err(Error::State(format!(
            "the state has {} bytes after its checksum",
            bytes.len() - at
        )));
    }
    if fnv1a(&bytes[..end]) != stored {
        return Err(Error::State(
            "the state's checksum does not match its contents: the bytes were changed after \
             saving"
                .into(),
        ));
    }
    let saved: Vec<&str> = std::str::from_utf8(text)
        .map_err(|_| Error::State("the state's description is not UTF-8".into()))?
        .split('\n')
        .collect();
    compare_descriptions(&saved, description)?;
    if n != expected_words {
        return Err(Error::State(format!(
            "the state holds {n} words, this plan's state has {expected_words}"
        )));
    }
    Ok(payload
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect())
}

/// Refuses a state saved for another plan, naming the lines that differ.
fn compare_descriptions(saved: &[&str], plan: &[String]) -> Result<()> {
    let differ: Vec<String> = (0..saved.len().max(plan.len()))
        .filter_map(|i| {
            let (s, p) = (saved.get(i).copied(), plan.get(i).map(String::as_str));
            (s != p).then(|| {
                format!(
                    "  saved: {}\n  plan:  {}",
                    s.unwrap_or("(nothing)"),
                    p.unwrap_or("(nothing)")
                )
            })
        })
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::State(format!(
        "the state was saved by a plan that differs from this one:\n{}",
        differ.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> Vec<String> {
        vec!["strategy: fixed".into(), "term 'a': l2_loss".into()]
    }

    #[test]
    fn round_trip_and_rejections() {
        let words = vec![1, 2, 0xdead_beef, f32::to_bits(-0.5)];
        let d = description();
        let bytes = encode(&d, &words);
        assert_eq!(decode(&bytes, &d, 4).unwrap(), words);
        // Another plan: the differing line is named.
        let other = vec![
            "strategy: fixed".to_string(),
            "term 'a': sigmoid_l2_loss".into(),
        ];
        let e = decode(&bytes, &other, 4).unwrap_err().to_string();
        assert!(
            e.contains("l2_loss") && e.contains("sigmoid_l2_loss"),
            "{e}"
        );
        assert!(decode(&bytes, &d, 5).unwrap_err().to_string().contains("5"));
        // Every truncation and every flipped byte is refused, naming the fault.
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], &d, 4).is_err(), "length {len}");
        }
        for i in 12..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            let e = decode(&flipped, &d, 4).unwrap_err().to_string();
            assert!(!e.is_empty(), "byte {i}");
        }
        let mut flipped = bytes.clone();
        let word = bytes.len() - 8 - 4;
        flipped[word] ^= 1;
        let e = decode(&flipped, &d, 4).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let mut old = bytes.clone();
        old[8] = 1;
        assert!(decode(&old, &d, 4)
            .unwrap_err()
            .to_string()
            .contains("version 1"));
    }
}

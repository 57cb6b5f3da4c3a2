//! The deterministic top-k selection (`shaders/select.wgsl`): a radix select over u32 keys that
//! finds the k-th largest key and, among keys equal to it, the lowest indices, with a fixed number
//! of dispatches and no read-back. OHEM uses it now; the pairwise OHEM of the session losses is
//! meant to reuse it with its own keys.
//!
//! Each round is a histogram pass over the keys (row-chunked like any row pass) and a one-workgroup
//! pick. There are four value rounds (one per byte of the key) and one round per byte of the
//! largest row index; index rounds only do work when the k-th key is tied beyond k.

use crate::kernel::{bind, internal, Bind, Chunk, Params, PassSpec, Shader, Source, Work, WG};
use crate::wgsl::Specialization;

/// Words of a selection's state in `aux`: PREFIX, REMAINING, INDEX, DONE, COUNT, RATIO, two
/// reserved, then 256 counters (select_words.wgsl).
pub(crate) const STATE_WORDS: u32 = HIST + 256;
/// Offset of the k-th largest key t in the state (valid once the selection ran).
pub(crate) const PREFIX: u32 = 0;
/// Offset of the last kept index among keys equal to t (all of them: `u32::MAX`).
pub(crate) const INDEX: u32 = 2;
/// Offset of the 256 histogram counters.
pub(crate) const HIST: u32 = 8;
/// Value rounds (one per byte of a u32 key).
pub(crate) const VALUE_ROUNDS: u32 = 4;
/// Keys each invocation of the histogram pass counts (`KEYS_PER_INVOCATION` in select.wgsl).
const KEYS_PER_INVOCATION: u32 = 8;

crate::gpu_struct! {
    /// One dispatch of a selection round (`SelectRound` in select.wgsl).
    pub(crate) struct SelectRound in "select.wgsl" test select_round_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
        /// First word of the selection's state in `aux`.
        state: u32,
        /// k kept, or 0: k from the state's COUNT and RATIO words.
        keep: u32,
        /// The round (value rounds first, then index rounds).
        round: u32,
        /// Index rounds after the value rounds.
        digits: u32,
    }
}

impl SelectRound {
    /// The parameters of round `round` of a selection with its state at `state`.
    pub(crate) fn params(state: u32, keep: u32, round: u32, digits: u32) -> Params {
        Params::of(&SelectRound {
            chunk: Chunk::default(),
            state,
            keep,
            round,
            digits,
        })
    }
}

/// Bytes of an index below `rows` (at least one), as `index_digits` in select.wgsl.
pub(crate) fn index_digits(rows: u64) -> u32 {
    let top = rows.max(1) - 1;
    let bits = 64 - top.leading_zeros();
    bits.div_ceil(8).max(1)
}

/// OHEM's k of `rows` candidates: the reference's integer rule (round half to even of
/// rows·ratio, the ratio to 9 decimals; docs/LOSSES.md §4.2).
pub(crate) fn keep_count(rows: u64, ratio: f64) -> u32 {
    use crate::reference::combine;
    combine::keep_count(rows, combine::ratio_units(ratio)) as u32
}

/// The passes selecting the `k` largest of `rows` keys held in internal buffer `keys`, with the
/// state at word `base` of internal buffer `aux`.
pub(crate) fn passes(
    label: &str,
    aux: usize,
    keys: usize,
    base: u32,
    k: u32,
    rows: u64,
) -> Vec<PassSpec> {
    let rounds = VALUE_ROUNDS + index_digits(rows);
    let mut out = Vec::new();
    for round in 0..rounds {
        out.push(histogram(label, aux, keys, base, rows, round));
        out.push(pick(label, aux, base, k, round, index_digits(rows)));
    }
    out
}
/// The histogram pass of one round over the keys buffer.
fn histogram(label: &str, aux: usize, keys: usize, base: u32, rows: u64, round: u32) -> PassSpec {
    PassSpec {
        label: format!("{label} select round {round} histogram"),
        shader: Shader::File("select.wgsl", Specialization::new()),
        entry: "select_histogram",
        binds: vec![
            bind("params", Bind::Chunk),
            internal("aux", aux),
            bind(
                "keys",
                Bind::Rows {
                    source: Source::Internal(keys),
                    row_bytes: 4,
                },
            ),
        ],
        work: Work::Rows {
            rows_per_wg: WG * KEYS_PER_INVOCATION,
        },
        reads: Vec::new(),
        params: SelectRound::params(base, rows as u32, round, index_digits(rows)),
    }
}

/// The one-workgroup pick of a round: `k` kept (0: k from the state's COUNT and RATIO words),
/// `digits` index rounds after the value rounds. Shared with the pairwise OHEM, whose histogram
/// passes recompute the pair values instead of reading keys.
pub(crate) fn pick(
    label: &str,
    aux: usize,
    base: u32,
    k: u32,
    round: u32,
    digits: u32,
) -> PassSpec {
    PassSpec {
        label: format!("{label} select round {round} pick"),
        shader: Shader::File("select.wgsl", Specialization::new()),
        entry: "select_pick",
        binds: vec![bind("params", Bind::Chunk), internal("aux", aux)],
        work: Work::Single,
        reads: Vec::new(),
        params: SelectRound::params(base, k, round, digits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_k() {
        assert_eq!(index_digits(1), 1);
        assert_eq!(index_digits(256), 1);
        assert_eq!(index_digits(257), 2);
        assert_eq!(index_digits(1 << 24), 3);
        assert_eq!(index_digits((1 << 24) + 1), 4);
        assert_eq!(keep_count(5, 0.5), 2); // rint(2.5): half to even
        assert_eq!(keep_count(7, 0.5), 4);
        assert_eq!(keep_count(1000, 0.0001), 1);
        assert_eq!(keep_count(7, 0.999), 7);
        // The shader's constants agree with these.
        for (name, v) in [
            ("SEL_PREFIX", PREFIX),
            ("SEL_INDEX", INDEX),
            ("SEL_HIST", HIST),
            ("KEYS_PER_INVOCATION", KEYS_PER_INVOCATION),
            ("VALUE_ROUNDS", VALUE_ROUNDS),
        ] {
            let text = crate::wgsl::shader_file("select.wgsl").unwrap();
            assert!(
                text.contains(&format!("const {name}: u32 = {v}u;")),
                "{name} differs from select.wgsl"
            );
        }
    }
}

// Deterministic top-k selection over u32 keys (order_key of the values), without sorting and
// without reading anything back: a radix select from the most significant byte down. Each round
// counts, in a 256-bin histogram, the digit of every key that still matches the prefix found so
// far (`select_histogram`, integer atomics, so the counts do not depend on the order), then one
// workgroup picks the digit holding the k-th largest key (`select_pick`). Four value rounds give
// the k-th largest key t exactly; when more keys equal t than are still needed, index rounds
// pick the lowest indices among them (docs/LOSSES.md: "ties: keep exactly k, lowest index first").
// The number of dispatches is fixed by the row count; rounds with nothing left to do return at
// once. Consumers call `select_kept` (common.wgsl) with the state's PREFIX and INDEX words.
// Each dispatch's parameters are a `SelectRound` (mirrored in src/losses/select.rs).

//#import select_words.wgsl

struct SelectRound {
    chunk: Chunk,
    // First word of the selection's state in `aux`.
    state: u32,
    // k, or 0 when k = clamp(rint(count·ratio), 1, count) comes from the SEL_COUNT and SEL_RATIO
    // words (pairwise OHEM, whose pair count is only known on the GPU). The pick reads it.
    keep: u32,
    // This round: 0..VALUE_ROUNDS are value rounds, then the index rounds.
    round: u32,
    // Index rounds after the value rounds: bytes of the largest index.
    digits: u32,
}

const KEYS_PER_INVOCATION: u32 = 8u;

// OHEM's k of n candidates for a ratio of units/10^9: round half to even of n·units/10^9 (EasyRec's
// tf.math.rint), at least 1 and at most n, in exact integer arithmetic as the reference's
// `keep_count` (src/reference/combine.rs): the 62-bit product in two words, then a binary long
// division by 10^9 (the remainder stays below 2^31).
const RATIO_SCALE: u32 = 1000000000u;

fn keep_count(n: u32, units: u32) -> u32 {
    // n·units = hi·2^32 + lo, from 16-bit halves.
    let a0 = n & 0xffffu;
    let a1 = n >> 16u;
    let b0 = units & 0xffffu;
    let b1 = units >> 16u;
    let low = a0 * b0;
    let mid1 = a1 * b0;
    let mid2 = a0 * b1;
    var hi = a1 * b1 + (mid1 >> 16u) + (mid2 >> 16u);
    let mid_lo = (mid1 & 0xffffu) + (mid2 & 0xffffu) + (low >> 16u);
    hi = hi + (mid_lo >> 16u);
    let lo = (mid_lo << 16u) | (low & 0xffffu);
    var q = 0u;
    var rem = 0u;
    for (var i = 0u; i < 64u; i = i + 1u) {
        var bit = 0u;
        if (i < 32u) {
            bit = (hi >> (31u - i)) & 1u;
        } else {
            bit = (lo >> (63u - i)) & 1u;
        }
        rem = (rem << 1u) | bit;
        q = q << 1u;
        if (rem >= RATIO_SCALE) {
            rem = rem - RATIO_SCALE;
            q = q | 1u;
        }
    }
    if (2u * rem > RATIO_SCALE || (2u * rem == RATIO_SCALE && (q & 1u) == 1u)) {
        q = q + 1u;
    }
    return clamp(q, 1u, max(n, 1u));
}

@group(0) @binding(0) var<storage, read> params: SelectRound;
@group(0) @binding(1) var<storage, read_write> aux: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> keys: array<u32>;

var<workgroup> local_hist: array<atomic<u32>, 256>;
var<workgroup> counts: array<u32, 256>;

@compute @workgroup_size(256)
fn select_histogram(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let chunk = params.chunk;
    let base = params.state;
    let round = params.round;
    let digits = params.digits;
    atomicStore(&local_hist[lid], 0u);
    let prefix = atomicLoad(&aux[base + SEL_PREFIX]);
    let index_prefix = atomicLoad(&aux[base + SEL_INDEX]);
    let done = atomicLoad(&aux[base + SEL_DONE]);
    workgroupBarrier();
    let wg = linear_workgroup(wid, nwg);
    let idle = wg >= chunk.wgs || (round >= VALUE_ROUNDS && done == 1u);
    if (!idle) {
        for (var j = 0u; j < KEYS_PER_INVOCATION; j = j + 1u) {
            let r = (wg * KEYS_PER_INVOCATION + j) * WG + lid;
            if (r >= chunk.rows) {
                break;
            }
            let key = keys[r];
            if (round < VALUE_ROUNDS) {
                let shift = 24u - 8u * round;
                // Round 0 has no prefix yet; `prefix` holds zeros below the bits fixed so far.
                if (round == 0u || high_bits_equal(key, prefix, shift + 8u)) {
                    atomicAdd(&local_hist[(key >> shift) & 255u], 1u);
                }
            } else if (key == prefix) {
                let index = chunk.row_base + r;
                let shift = 8u * (digits - 1u - (round - VALUE_ROUNDS));
                if (high_bits_equal(index, index_prefix, shift + 8u)) {
                    atomicAdd(&local_hist[(index >> shift) & 255u], 1u);
                }
            }
        }
    }
    workgroupBarrier();
    let c = atomicLoad(&local_hist[lid]);
    if (c != 0u) {
        atomicAdd(&aux[base + SEL_HIST + lid], c);
    }
}

@compute @workgroup_size(256)
fn select_pick(@builtin(local_invocation_index) lid: u32) {
    let base = params.state;
    let round = params.round;
    let digits = params.digits;
    counts[lid] = atomicLoad(&aux[base + SEL_HIST + lid]);
    atomicStore(&aux[base + SEL_HIST + lid], 0u);
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    var prefix = 0u;
    var remaining = params.keep;
    if (round == 0u && params.keep == 0u) {
        let count = atomicLoad(&aux[base + SEL_COUNT]);
        let units = atomicLoad(&aux[base + SEL_RATIO]);
        remaining = keep_count(count, units);
        atomicStore(&aux[base + SEL_COUNT], 0u);
    }
    var index_prefix = 0u;
    var done = 0u;
    if (round > 0u) {
        prefix = atomicLoad(&aux[base + SEL_PREFIX]);
        remaining = atomicLoad(&aux[base + SEL_REMAINING]);
        index_prefix = atomicLoad(&aux[base + SEL_INDEX]);
        done = atomicLoad(&aux[base + SEL_DONE]);
    }
    if (round < VALUE_ROUNDS) {
        // The digit holding the remaining-th largest key, from the top.
        var above = 0u;
        var digit = 0u;
        for (var i = 0u; i < 256u; i = i + 1u) {
            let d = 255u - i;
            if (above + counts[d] >= remaining) {
                digit = d;
                break;
            }
            above = above + counts[d];
        }
        remaining = remaining - above;
        prefix = prefix | (digit << (24u - 8u * round));
        // After the last value round counts[digit] keys equal t; keep them all when all are needed.
        if (round == VALUE_ROUNDS - 1u && remaining == counts[digit]) {
            done = 1u;
            index_prefix = 0xffffffffu;
        }
    } else if (done == 0u) {
        // The digit holding the remaining-th smallest index among the keys equal to t.
        let shift = 8u * (digits - 1u - (round - VALUE_ROUNDS));
        var below = 0u;
        var digit = 0u;
        for (var d = 0u; d < 256u; d = d + 1u) {
            if (below + counts[d] >= remaining) {
                digit = d;
                break;
            }
            below = below + counts[d];
        }
        remaining = remaining - below;
        index_prefix = index_prefix | (digit << shift);
    }
    atomicStore(&aux[base + SEL_PREFIX], prefix);
    atomicStore(&aux[base + SEL_REMAINING], remaining);
    atomicStore(&aux[base + SEL_INDEX], index_prefix);
    atomicStore(&aux[base + SEL_DONE], done);
}

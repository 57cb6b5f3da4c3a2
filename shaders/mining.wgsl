// softmax_cross_entropy_with_negative_mining (EasyRec `softmax_loss_with_negative_mining`,
// SV-softmax; docs/LOSSES.md, "Retrieval and embedding terms"): row i scores its item and K
// cyclic shifts of the item batch (tf.roll: negative k is item row (i − s_k) mod B), all
// normalised. Host side: src/losses/mining.rs; reference: src/reference/retrieval.rs.
//
// Constants: D (embedding.wgsl), B, K, GAMMA, MARGIN, T_SV (coefficient_of_support_vector),
// SEEDED, SEED and GRAD. llvmpipe stops an invocation's loops after 65,535 iterations in all,
// so the negatives are visited in ranges, one dispatch each (`NegativeRange`), with each row's
// running sums carried in buffers between them.

//#import embedding.wgsl

const B: u32 = 2u; // @spec
const K: u32 = 1u; // @spec
const GAMMA: f32 = 1.0; // @spec
const MARGIN: f32 = 0.0; // @spec
const T_SV: f32 = 1.0; // @spec
const SEEDED: bool = false; // @spec
const SEED: u32 = 0u; // @spec
// mining_rows: the gradient pass (else the log-sum-exp pass).
const GRAD: bool = false; // @spec
// `apply` of the users' gradient (else the items').
const APPLY_USERS: bool = true; // @spec
// rowinfo: the term binds labels (rows with label > 0 count).
const HAS_LABELS: bool = false; // @spec

// One dispatch over a range of negatives; mirrored in src/losses/mining.rs.
struct NegativeRange {
    chunk: Chunk,
    // The first negative of the range (1-based) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<storage, read> negatives: NegativeRange;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
// (w_i, whether the row counts).
@group(0) @binding(4) var<storage, read> row_w: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;
// d(w_i·l_i)/d(score n) per row and score (the positive first).
@group(0) @binding(6) var<storage, read_write> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> shifts: array<u32>;
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;
@group(0) @binding(9) var<storage, read_write> dk: array<f32>;
@group(0) @binding(10) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> w_out: array<vec2<f32>>;
@group(0) @binding(25) var<storage, read> labels: array<f32>;

// The k-th shift (k = 1..K) at `step`: k without a seed, else `rng::mining_shift`.
fn shift_of(k: u32, step: u32) -> u32 {
    if (!SEEDED) {
        return k;
    }
    let h = pcg_hash(pcg_hash(pcg_hash(SEED) ^ step) ^ (k - 1u));
    return 1u + h % max(B - 1u, 1u);
}

// The logit of negative score `sn` next to the positive score `sp`, and its derivative.
fn negative_logit(sp: f32, sn: f32) -> vec2<f32> {
    if ((sp - MARGIN) - sn < 0.0) {
        return vec2<f32>(GAMMA * (T_SV * sn + T_SV - 1.0), GAMMA * T_SV);
    }
    return vec2<f32>(GAMMA * sn, GAMMA);
}

fn score(i: u32, j: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < D; c = c + 1u) {
        s = s + q[i * D + c] * k[j * D + c];
    }
    return s;
}

// rowinfo: each row's weight and whether it counts (label > 0, or every row without labels).
@compute @workgroup_size(256)
fn rowinfo(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= N) {
        return;
    }
    var counted = 1.0;
//#if HAS_LABELS
    counted = select(0.0, 1.0, labels[r] > 0.0);
//#endif
    w_out[r] = vec2<f32>(sample_weight(r), counted);
}

// One range of negatives for every row i.
// GRAD false: the running log-sum-exp of the negatives' logits in stats[i] (the first range
// starts it, and writes the shifts used, for the item pass after the step counter moves).
// GRAD true (after `finish`): g[i][n] = d(w_i·l_i)/d(score n) and dq[i] += g[i][n] · v̂_{n(i)}.
@compute @workgroup_size(256)
fn mining_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    if (wg >= negatives.chunk.wgs) {
        return;
    }
    let step = state[0];
    let first = negatives.first;
    let end = negatives.first + negatives.count;
    if (!GRAD && first == 1u && i < K) {
        shifts[i] = shift_of(i + 1u, step);
    }
    if (i >= B) {
        return;
    }
    let sp = score(i, i);
    if (!GRAD) {
        var acc = stats[i];
        if (first == 1u) {
            acc = vec2<f32>(NEG_BIG, 0.0);
        }
        for (var n = first; n < end; n = n + 1u) {
            let j = (i + B - shift_of(n, step)) % B;
            acc = lse_push(acc, negative_logit(sp, score(i, j)).x);
        }
        stats[i] = acc;
        return;
    }
    let lse = lse_value(stats[i]);
    let wc = row_w[i];
    let w = wc.x * wc.y;
    for (var n = first; n < end; n = n + 1u) {
        let j = (i + B - shift_of(n, step)) % B;
        let z = negative_logit(sp, score(i, j));
        let gn = w * exp(z.x - lse) * z.y;
        g[i * (K + 1u) + n] = gn;
        for (var c = 0u; c < D; c = c + 1u) {
            dq[i * D + c] = dq[i * D + c] + gn * k[j * D + c];
        }
    }
}

// Row i's loss from the positive's logit and the negatives' running sum, its partials, the
// positive's g[i][0], and the starts of dq[i] and dk[i] (the positive's parts), which the
// negative ranges then add to.
@compute @workgroup_size(256)
fn mining_finish(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    var part = vec4<f32>(0.0);
    if (wg < chunk.wgs && i < B) {
        var sp = 0.0;
        for (var c = 0u; c < D; c = c + 1u) {
            sp = sp + q[i * D + c] * k[i * D + c];
        }
        let z0 = GAMMA * (sp - MARGIN);
        var acc = vec2<f32>(NEG_BIG, 0.0);
        if (K > 0u) {
            acc = stats[i];
        }
        acc = lse_push(acc, z0);
        stats[i] = acc;
        let lse = lse_value(acc);
        let wc = row_w[i];
        let w = wc.x * wc.y;
        part = vec4<f32>(w * (lse - z0), w, select(0.0, 1.0, w != 0.0), wc.y);
        // d l / d z_k = p_k − [k = 0]; the positive's z_0 = γ (sp − m).
        let g0 = w * (exp(z0 - lse) - 1.0) * GAMMA;
        g[i * (K + 1u)] = g0;
        for (var c = 0u; c < D; c = c + 1u) {
            dq[i * D + c] = g0 * k[i * D + c];
            dk[i * D + c] = g0 * q[i * D + c];
        }
    }
    let total = workgroup_sum(lid, part);
    if (lid == 0u && wg < chunk.wgs) {
        partials[partial_index(chunk, 0u, wg)] = total;
    }
}

// One range of negatives: dk[j] += g[r][n] · û_r with r = (j + s_n) mod B, every row whose n-th
// negative is item j (gathered, so no atomics).
@compute @workgroup_size(256)
fn mining_items(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let j = wg * WG + lid;
    if (wg >= negatives.chunk.wgs || j >= B) {
        return;
    }
    for (var n = negatives.first; n < negatives.first + negatives.count; n = n + 1u) {
        let r = (j + shifts[n - 1u]) % B;
        let gr = g[r * (K + 1u) + n];
        for (var c = 0u; c < D; c = c + 1u) {
            dk[j * D + c] = dk[j * D + c] + gr * q[r * D + c];
        }
    }
}

fn grad_component(r: u32, c: u32) -> f32 {
//#if APPLY_USERS
    return dq[r * D + c];
//#else
    return dk[r * D + c];
//#endif
}

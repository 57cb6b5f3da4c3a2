// softmax_cross_entropy_with_negative_mining (EasyRec `softmax_loss_with_negative_mining`,
// SV-softmax; LOSSES.md, "Retrieval and embedding terms"): row i scores its item and K cyclic
// shifts of the item batch (tf.roll: negative k is item row (i − s_k) mod B), all normalised.
//
// Rust prepends common.wgsl, embedding.wgsl's shared part and the constants: D, B, K, GAMMA,
// MARGIN, T_SV (coefficient_of_support_vector), SEEDED, SEED and GRAD.
//
// llvmpipe stops an invocation's loops after 65,535 iterations in all, so the negatives are
// visited in ranges, one dispatch each (chunk.p0 = first negative, 1-based; chunk.p1 = count),
// with each row's running sums carried in buffers between them.

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

//// kernel rows
// One range of negatives for every row i.
// GRAD false: the running log-sum-exp of the negatives' logits in stats[i] (the first range
// starts it, and writes the shifts used, for the item pass after the step counter moves).
// GRAD true (after `finish`): g[i][n] = d(w_i·l_i)/d(score n) and dq[i] += g[i][n] · v̂_{n(i)}.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> row_w: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> shifts: array<u32>;
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;

fn score(i: u32, j: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < D; c = c + 1u) {
        s = s + q[i * D + c] * k[j * D + c];
    }
    return s;
}

@compute @workgroup_size(256)
fn rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    if (wg >= chunk.wgs) {
        return;
    }
    let step = state[0];
    let first = chunk.p0;
    let end = chunk.p0 + chunk.p1;
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

//// kernel finish
// Row i's loss from the positive's logit and the negatives' running sum, its partials, the
// positive's g[i][0], and the starts of dq[i] and dk[i] (the positive's parts), which the
// negative ranges then add to.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> row_w: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<vec4<f32>>;

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
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

//// kernel items
// One range of negatives: dk[j] += g[r][n] · û_r with r = (j + s_n) mod B, every row whose n-th
// negative is item j (gathered, so no atomics).
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> shifts: array<u32>;
@group(0) @binding(4) var<storage, read_write> dk: array<f32>;

@compute @workgroup_size(256)
fn items(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let j = wg * WG + lid;
    if (wg >= chunk.wgs || j >= B) {
        return;
    }
    for (var n = chunk.p0; n < chunk.p0 + chunk.p1; n = n + 1u) {
        let r = (j + shifts[n - 1u]) % B;
        let gr = g[r * (K + 1u) + n];
        for (var c = 0u; c < D; c = c + 1u) {
            dk[j * D + c] = dk[j * D + c] + gr * q[r * D + c];
        }
    }
}

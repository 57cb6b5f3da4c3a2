// softmax_cross_entropy_with_negative_mining (EasyRec `softmax_loss_with_negative_mining`,
// SV-softmax; LOSSES.md, "Retrieval and embedding terms"): row i scores its item and K cyclic
// shifts of the item batch (tf.roll: negative k is item row (i − s_k) mod B), all normalised.
//
// Rust prepends common.wgsl, embedding.wgsl's shared part and the constants: D, B, K, GAMMA,
// MARGIN, T_SV (coefficient_of_support_vector), SEEDED and SEED.

// The k-th shift (k = 1..K) at `step`: k without a seed, else `rng::mining_shift`.
fn shift_of(k: u32, step: u32) -> u32 {
    if (!SEEDED) {
        return k;
    }
    let h = pcg_hash(pcg_hash(pcg_hash(SEED) ^ step) ^ (k - 1u));
    return 1u + h % max(B - 1u, 1u);
}

//// kernel forward
// Row i's loss, its partials, g[i][k] = d(w_i·l_i)/d(score k) (k = 0: the positive), the shifts
// used (for the item pass after the step counter moves), and dq[i] = Σ_k g[i][k] · v̂_{n_k(i)}.
@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> row_w: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> shifts: array<u32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<vec4<f32>>;

fn score(i: u32, j: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < D; c = c + 1u) {
        s = s + q[i * D + c] * k[j * D + c];
    }
    return s;
}

// The logit of negative score `sn` next to the positive score `sp`, and its derivative.
fn negative_logit(sp: f32, sn: f32) -> vec2<f32> {
    if ((sp - MARGIN) - sn < 0.0) {
        return vec2<f32>(GAMMA * (T_SV * sn + T_SV - 1.0), GAMMA * T_SV);
    }
    return vec2<f32>(GAMMA * sn, GAMMA);
}

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let step = state[0];
    var part = vec4<f32>(0.0);
    if (wg < chunk.wgs && i < K) {
        shifts[i] = shift_of(i + 1u, step);
    }
    if (wg < chunk.wgs && i < B) {
        let sp = score(i, i);
        let z0 = GAMMA * (sp - MARGIN);
        var acc = lse_push(vec2<f32>(NEG_BIG, 0.0), z0);
        for (var n = 1u; n <= K; n = n + 1u) {
            let j = (i + B - shift_of(n, step)) % B;
            acc = lse_push(acc, negative_logit(sp, score(i, j)).x);
        }
        let lse = lse_value(acc);
        let wc = row_w[i];
        let w = wc.x * wc.y;
        part = vec4<f32>(w * (lse - z0), w, select(0.0, 1.0, w != 0.0), wc.y);
        // d l / d z_k = p_k − [k = 0]; the positive's z_0 = γ (sp − m).
        let g0 = w * (exp(z0 - lse) - 1.0) * GAMMA;
        g[i * (K + 1u)] = g0;
        var dq_acc: array<f32, D>;
        for (var c = 0u; c < D; c = c + 1u) {
            dq_acc[c] = g0 * k[i * D + c];
        }
        for (var n = 1u; n <= K; n = n + 1u) {
            let j = (i + B - shift_of(n, step)) % B;
            let z = negative_logit(sp, score(i, j));
            let gn = w * exp(z.x - lse) * z.y;
            g[i * (K + 1u) + n] = gn;
            for (var c = 0u; c < D; c = c + 1u) {
                dq_acc[c] = dq_acc[c] + gn * k[j * D + c];
            }
        }
        for (var c = 0u; c < D; c = c + 1u) {
            dq[i * D + c] = dq_acc[c];
        }
    }
    let total = workgroup_sum(lid, part);
    if (lid == 0u && wg < chunk.wgs) {
        partials[partial_index(chunk, 0u, wg)] = total;
    }
}

//// kernel items
// dk[j] = g[j][0] · û_j + Σ_k g[r][k] · û_r with r = (j + s_k) mod B: every row whose k-th
// negative is item j (gathered, so no atomics).
@group(0) @binding(0) var<uniform> chunk: Chunk;
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
    var acc: array<f32, D>;
    let g0 = g[j * (K + 1u)];
    for (var c = 0u; c < D; c = c + 1u) {
        acc[c] = g0 * q[j * D + c];
    }
    for (var n = 1u; n <= K; n = n + 1u) {
        let r = (j + shifts[n - 1u]) % B;
        let gr = g[r * (K + 1u) + n];
        for (var c = 0u; c < D; c = c + 1u) {
            acc[c] = acc[c] + gr * q[r * D + c];
        }
    }
    for (var c = 0u; c < D; c = c + 1u) {
        dk[j * D + c] = acc[c];
    }
}

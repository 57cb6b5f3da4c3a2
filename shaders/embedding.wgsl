// Shared by the embedding families (retrieval.wgsl, metric.wgsl, mining.wgsl): the `prep` pass
// that writes the rows a similarity reads (normalised under cosine), the keys of id and label
// columns, and the `apply` pass after the combine that scales a row's gradient by the term's
// coefficient and takes it through the normalisation into the raw input's gradient.
//
// `apply` calls `grad_component(r, c)`, which the importing family defines: the gradient with
// respect to component c of similarity-ready row r, before the coefficient.

//#import common.wgsl
//#import weights.wgsl

// Dimension of the rows.
const D: u32 = 64u; // @spec
// Rows of the input `prep` or `apply` handles, and where `prep` writes them in `rows`.
const N: u32 = 1u; // @spec
const OUT_OFF: u32 = 0u; // @spec
// x̂ = x / max(‖x‖, 1e-12) (PyTorch F.normalize) before the similarity.
const COSINE: bool = true; // @spec
// `apply`: the term's coefficient in the scalars; add to a gradient already written this step.
const COEF: u32 = 0u; // @spec
const ACCUMULATE: bool = false; // @spec
// How an id or label column is held (`column_key`): 0 absent, 1 f32, 2 i32, 3 u32, 4 i64.
const ID_F32: u32 = 1u;
const ID_I32: u32 = 2u;
const ID_U32: u32 = 3u;
const ID_I64: u32 = 4u;

@group(0) @binding(20) var<storage, read> chunk: Chunk;
@group(0) @binding(21) var<storage, read> input: array<f32>;
@group(0) @binding(22) var<storage, read_write> rows: array<f32>;
@group(0) @binding(23) var<storage, read> scalars: array<f32>;
@group(0) @binding(24) var<storage, read_write> grad: array<f32>;

//#standalone
fn grad_component(r: u32, c: u32) -> f32 {
    return 0.0;
}
//#end

// The denominator of a row whose squared norm is `norm2`.
fn norm_denominator(norm2: f32) -> f32 {
    return max(sqrt(norm2), 1e-12);
}

// A 64-bit key of one value of an id or label column, from its words (`hi` only for i64):
// equal values give equal keys (f32 −0 and 0 too).
fn column_key(kind: u32, lo: u32, hi: u32) -> vec2<u32> {
    switch kind {
        case 1u: {
            let x = bitcast<f32>(lo);
            return vec2<u32>(bitcast<u32>(select(x, 0.0, x == 0.0)), 0u);
        }
        case 2u: {
            return vec2<u32>(lo, select(0u, 0xffffffffu, bitcast<i32>(lo) < 0));
        }
        case 3u: {
            return vec2<u32>(lo, 0u);
        }
        case 4u: {
            return vec2<u32>(lo, hi);
        }
        default: {
            return vec2<u32>(0u, 0u);
        }
    }
}

// Row r of `input` ([N, D]) → row OUT_OFF + r of `rows`, normalised when COSINE.
@compute @workgroup_size(256)
fn prep(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= N) {
        return;
    }
    var scale = 1.0;
    if (COSINE) {
        var n2 = 0.0;
        for (var c = 0u; c < D; c = c + 1u) {
            let x = input[r * D + c];
            n2 = n2 + x * x;
        }
        scale = 1.0 / norm_denominator(n2);
    }
    let out = (OUT_OFF + r) * D;
    for (var c = 0u; c < D; c = c + 1u) {
        rows[out + c] = input[r * D + c] * scale;
    }
}

// grad[r] (+)= coefficient · J(r)ᵀ g(r) for the N rows of one input, where g(r) is the row's
// gradient with respect to the similarity-ready row (`grad_component`) and J the Jacobian of
// the normalisation (identity for dot).
@compute @workgroup_size(256)
fn apply(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= N) {
        return;
    }
    let coef = scalars[COEF];
    var dot_xg = 0.0;
    var n2 = 0.0;
    if (COSINE) {
        for (var c = 0u; c < D; c = c + 1u) {
            let x = input[r * D + c];
            n2 = n2 + x * x;
            dot_xg = dot_xg + x * grad_component(r, c);
        }
    }
    let n = norm_denominator(n2);
    for (var c = 0u; c < D; c = c + 1u) {
        var g = grad_component(r, c);
        if (COSINE) {
            if (sqrt(n2) > 1e-12) {
                // (g − x̂ (x̂·g)) / ‖x‖ with x̂ = x/‖x‖.
                g = (g - input[r * D + c] * dot_xg / n2) / n;
            } else {
                g = g / 1e-12;
            }
        }
        if (ACCUMULATE) {
            grad[r * D + c] = grad[r * D + c] + coef * g;
        } else {
            grad[r * D + c] = coef * g;
        }
    }
}

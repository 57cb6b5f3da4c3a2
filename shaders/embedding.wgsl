// Shared by the embedding families (retrieval, metric, mining): the rows a similarity reads, and
// the pass after the combine that turns a row's gradient into the gradient of the raw input.
// Rust prepends common.wgsl and the constants of the pass (D, N, COSINE, ...); one section below
// is the pass (a line "//// kernel" and its name starts each).

// x̂ = x / max(‖x‖, 1e-12) (PyTorch F.normalize): the denominator of row `norm2` = ‖x‖².
fn norm_denominator(norm2: f32) -> f32 {
    return max(sqrt(norm2), 1e-12);
}


//// kernel prep
// Row r of `input` ([N, D]) → row OUT_OFF + r of `rows`, normalised when COSINE.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows: array<f32>;

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

//// kernel apply
// grad[r] (+)= coefficient · J(r)ᵀ g(r) for the N rows of one input, where g(r) is the row's
// gradient with respect to the similarity-ready row (GRAD_EXPR, over the bound `parts`) and J the
// Jacobian of the normalisation (identity for dot).
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> scalars: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read> input: array<f32>;
//// bindings

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

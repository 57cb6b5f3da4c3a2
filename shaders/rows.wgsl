// The fused row kernel: every per-row term over the same B rows in one forward and one backward
// pass, each tensor read once per pass whatever the number of terms (docs/LOSSES.md, "Per-row
// terms"; host side src/losses/rows/). The term list is what varies, so it alone is generated
// and spliced in (`//#splice terms`): the tensors' bindings, one accumulator per term and
//   fn forward_row(r: u32)               this row's terms into the accumulators (and, fused,
//                                        their gradients)
//   fn write_partials(lid: u32, wg: u32) each term's workgroup sum into its partial slot
//   fn backward_row(r: u32)              this row's gradients, scaled by the terms' coefficients
// which call the loss functions of binary.wgsl and ghm.wgsl. The default below is one
// classification term, so that the file stands alone.

//#import binary.wgsl
//#import ghm.wgsl

@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;
// Batch-wide terms' factors (GHM-C β, OHEM selection and scale, F1 weights), f32 bits.
@group(0) @binding(2) var<storage, read> aux: array<u32>;
@group(0) @binding(3) var<storage, read> scalars: array<f32>;

fn aux_f32(i: u32) -> f32 {
    return bitcast<f32>(aux[i]);
}

//#splice terms
@group(0) @binding(10) var<storage, read> in0: array<f32>;
@group(0) @binding(11) var<storage, read> in1: array<f32>;
@group(0) @binding(12) var<storage, read_write> grad0: array<f32>;

// Each term's (Σ f·l, Σ f, #{f ≠ 0}, 0) over this invocation's rows.
var<private> acc0: vec4<f32>;

fn forward_row(r: u32) {
    let lg0 = sigmoid_ce(in0[r], in1[r]);
    acc0 = acc0 + vec4<f32>(lg0.x, 1.0, 1.0, 0.0);
}

fn write_partials(lid: u32, wg: u32) {
    let sum0 = workgroup_sum(lid, acc0);
    if (lid == 0u && wg < chunk.wgs) { partials[partial_index(chunk, 0u, wg)] = sum0; }
}

fn backward_row(r: u32) {
    grad0[r] = scalars[10] * sigmoid_ce(in0[r], in1[r]).y;
}
//#end

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    // Each invocation sums several rows before the barrier-bound workgroup reduction; the rows
    // of one step of the loop stay contiguous across the workgroup, for coalesced loads.
    for (var j = 0u; j < ROWS_PER_INVOCATION; j = j + 1u) {
        let r = (wg * ROWS_PER_INVOCATION + j) * WG + lid;
        if (wg < chunk.wgs && r < chunk.rows) {
            forward_row(r);
        }
    }
    write_partials(lid, wg);
}

// One invocation per row.
@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= chunk.rows) {
        return;
    }
    backward_row(r);
}

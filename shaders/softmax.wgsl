// Softmax cross-entropy helpers (docs/LOSSES.md, "Softmax cross-entropy"): a one-sweep log-sum-exp
// kept as (running max, Σ exp(z - max)) (Milakov & Gimelshein 2018), and its reduction over the
// invocations that share a row. The row kernels are below.

//#import common.wgsl

fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Merges the running pairs of aligned segments of `width` invocations (one row each); every
// invocation of the segment gets the row's pair. Fixed tree with barriers, as workgroup_sum.
fn segment_lse(lid: u32, width: u32, acc: vec2<f32>) -> vec2<f32> {
    reduce_buf[lid] = vec4<f32>(acc, 0.0, 0.0);
    workgroupBarrier();
    let lane = lid % width;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (s < width && lane < s) {
            let merged = lse_merge(reduce_buf[lid].xy, reduce_buf[lid + s].xy);
            reduce_buf[lid] = vec4<f32>(merged, 0.0, 0.0);
        }
        workgroupBarrier();
    }
    let total = reduce_buf[lid - lane].xy;
    workgroupBarrier();
    return total;
}

// The row kernels (docs/LOSSES.md, "Softmax cross-entropy"; host side src/losses/softmax.rs):
// every softmax term on the same logits [B, C] shares them. R invocations per row (a power of
// two up to the workgroup, chosen from C) sweep the row once; rows wider than the workgroup are
// strided, so C is limited only by one binding. The terms are generated and spliced in: their
// bindings, private sums, and
//   fn forward_begin()                             start the terms' running sums
//   fn forward_visit(c: u32, base: u32, xv: f32)   one logit into the terms' running sums
//   fn forward_reduce(lid: u32)                    merge the sums of a row's R invocations
//   fn forward_visit2(c: u32, base: u32, xv: f32)  (SECOND_SWEEP) one logit against the lses
//   fn forward_reduce2(lid: u32)                   (SECOND_SWEEP) merge the second sweep's sums
//   fn forward_row(row: u32, base: u32)            the row's losses into `part{k}`, stats written
//   fn write_partials(lid: u32, wg: u32)           each term's workgroup sum into its slot
//   fn backward_setup(row: u32)                    the row's label, weight, lse, coefficient
//   fn backward_element(c: u32, e: u32, xv: f32) -> f32   d total / d logit e of the row

// Classes, invocations per row, rows per workgroup.
const C: u32 = 2u; // @spec
const R: u32 = 1u; // @spec
const RPW: u32 = WG / R;
// The backward pass adds to a gradient another term wrote this step.
const ACCUMULATE: bool = false; // @spec
// A distillation term needs a second sweep over the row, against the row's final lse
// (src/losses/softmax/kd.rs).
const SECOND_SWEEP: bool = false; // @spec

@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> scalars: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

//#splice terms
// Each term's partial sums of this invocation's row (one variable per term: a private array
// indexed in a loop stays in memory on llvmpipe).
var<private> part0: vec4<f32>;
var<private> lse0: vec2<f32>;

fn forward_begin() {
    lse0 = vec2<f32>(NEG_BIG, 0.0);
}

fn forward_visit(c: u32, base: u32, xv: f32) {
    lse0 = lse_push(lse0, xv);
}

fn forward_reduce(lid: u32) {
    lse0 = segment_lse(lid, R, lse0);
}

fn forward_visit2(c: u32, base: u32, xv: f32) {}

fn forward_reduce2(lid: u32) {}

fn forward_row(row: u32, base: u32) {
    part0 = vec4<f32>(lse0.x + log(lse0.y), 1.0, 1.0, 0.0);
}

fn write_partials(lid: u32, wg: u32) {
    let sum0 = workgroup_sum(lid, part0);
    if (lid == 0u && wg < chunk.wgs) { partials[partial_index(chunk, 0u, wg)] = sum0; }
}

fn backward_setup(row: u32) {}

fn backward_element(c: u32, e: u32, xv: f32) -> f32 {
    return scalars[10] * xv;
}
//#end

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let row = wg * RPW + lid / R;
    let lane = lid % R;
    let row_active = wg < chunk.wgs && row < chunk.rows;
    forward_begin();
    if (row_active) {
        let base = row * C;
        for (var c = lane; c < C; c = c + R) {
            forward_visit(c, base, logits[base + c]);
        }
    }
    forward_reduce(lid);
    if (SECOND_SWEEP) {
        if (row_active) {
            let base = row * C;
            for (var c = lane; c < C; c = c + R) {
                forward_visit2(c, base, logits[base + c]);
            }
        }
        forward_reduce2(lid);
    }
    if (row_active && lane == 0u) {
        forward_row(row, row * C);
    }
    write_partials(lid, wg);
}

// Row-mapped like the forward pass: the row's label, weight, lse and coefficient are loaded
// once, then its R invocations stride over the classes (consecutive lanes, consecutive
// elements).
@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let row = wg * RPW + lid / R;
    let lane = lid % R;
    if (wg >= chunk.wgs || row >= chunk.rows) {
        return;
    }
    let base = row * C;
    backward_setup(row);
    for (var c = lane; c < C; c = c + R) {
        let e = base + c;
        let g = backward_element(c, e, logits[e]);
        if (ACCUMULATE) {
            grad[e] = grad[e] + g;
        } else {
            grad[e] = g;
        }
    }
}

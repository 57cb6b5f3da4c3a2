// Kernels of the two-tower example (examples/two_tower.rs): the trainer's side of a step, around
// lossfuse's loss. Bindings 0–2 belong to `gather`, 4–10 to `adagrad`; each pipeline is built with
// an automatic layout, which holds only the bindings its entry point uses.

// Embedding dimension and the Adagrad step, set per pipeline (pipeline-overridable constants).
override D: u32 = 32u;
override LR: f32 = 0.05;
override EPS: f32 = 1e-8;

// ---- gather: out[r] = table[ids[r]], the batch's rows of an embedding table ([B, D]).
@group(0) @binding(0) var<storage, read> gather_ids: array<u32>;
@group(0) @binding(1) var<storage, read> gather_table: array<f32>;
@group(0) @binding(2) var<storage, read_write> gather_out: array<f32>;

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if (e >= arrayLength(&gather_out)) {
        return;
    }
    let r = e / D;
    let c = e % D;
    gather_out[e] = gather_table[gather_ids[r] * D + c];
}

// ---- adagrad: one invocation per (distinct table row touched by the batch, component).
// The host groups the batch rows by id (segments, rows in increasing order), so an id that occurs
// several times in the batch gets the sum of its rows' gradients, added in a fixed order, and
// exactly one invocation writes each table element: no atomics, no races, bit-reproducible.
struct Segments {
    count: u32,
}
@group(0) @binding(4) var<uniform> seg: Segments;
// Table row of segment s.
@group(0) @binding(5) var<storage, read> seg_row: array<u32>;
// Segment s holds members[seg_start[s] .. seg_start[s + 1]].
@group(0) @binding(6) var<storage, read> seg_start: array<u32>;
// Batch rows, grouped by segment.
@group(0) @binding(7) var<storage, read> members: array<u32>;
// d loss / d gathered rows [B, D], from lossfuse (`StepOutput::grad`).
@group(0) @binding(8) var<storage, read> grad: array<f32>;
@group(0) @binding(9) var<storage, read_write> table: array<f32>;
// Adagrad's running sum of squared gradients, one per table element.
@group(0) @binding(10) var<storage, read_write> accum: array<f32>;

@compute @workgroup_size(64)
fn adagrad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if (e >= seg.count * D) {
        return;
    }
    let s = e / D;
    let c = e % D;
    var g = 0.0;
    for (var m = seg_start[s]; m < seg_start[s + 1u]; m = m + 1u) {
        g = g + grad[members[m] * D + c];
    }
    let at = seg_row[s] * D + c;
    let a = accum[at] + g * g;
    accum[at] = a;
    table[at] = table[at] - LR * g / (sqrt(a) + EPS);
}

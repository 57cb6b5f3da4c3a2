// Shared by every lossfuse kernel: stable numerics (docs/LOSSES.md: max-subtraction, log1p, softplus of
// -|x|), the chunk a dispatch covers, and a deterministic workgroup reduction.

const WG: u32 = 256u;
// Stands in for -inf in running maxima: WGSL has no infinity literal, and exp(NEG_BIG - m) is 0
// for any finite m.
const NEG_BIG: f32 = -3.4e38;

// The step's status words in `scalars` (mirrored in src/combine.rs): the count of class ids out
// of range (device buffers), and the first input value a GPU check refused: the value check's
// index + 1 (u32 bits; 0: none) and its element. A step with either commits no state.
const S_INVALID: u32 = 3u;
const S_NONFINITE: u32 = 4u;
const S_NONFINITE_AT: u32 = 5u;

// Whether the step was refused on the GPU, from its status words.
fn step_refused(invalid: f32, nonfinite: f32) -> bool {
    return invalid != 0.0 || bitcast<u32>(nonfinite) != 0u;
}

// The rows a dispatch covers: tensors are bound from `row_base`, so indices are chunk-relative.
// `wgs` is the number of workgroups that do work (the grid is 2-D and may have spare ones).
// Partial sums of the group's k-th term go to partials[wg_base + k * term_stride + workgroup]:
// `wg_base` places this chunk after the previous chunks of the group. Mirrored by `Chunk` in
// src/kernel.rs. A kernel with parameters of its own declares a struct whose first member is
// `chunk: Chunk` (e.g. `SelectRound` in select.wgsl).
// Kernels bind it as read-only storage, never as a uniform buffer: lavapipe of Mesa 22.3
// (Debian 12) inlines uniform-buffer values that decide a branch or a loop bound into the
// shader and recompiles it at every dispatch without freeing the result (about 1 MB and
// several ms a step; docs/ARCHITECTURE.md, "Driver defects").
struct Chunk {
    row_base: u32,
    rows: u32,
    wgs: u32,
    wg_base: u32,
    term_stride: u32,
}

fn partial_index(chunk: Chunk, k: u32, wg: u32) -> u32 {
    return chunk.wg_base + k * chunk.term_stride + wg;
}

// Linear workgroup index of a 2-D grid (more than 65,535 workgroups need the second dimension).
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// log(1 + x) without losing x when it is tiny (Goldberg's trick; WGSL has no log1p).
fn log1p_f(x: f32) -> f32 {
    let u = 1.0 + x;
    if (u == 1.0) {
        return x;
    }
    return log(u) * (x / (u - 1.0));
}

// softplus(z) = max(z, 0) + log1p(exp(-|z|)): never overflows.
fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log1p_f(exp(-abs(z)));
}

// (softplus(z), σ(z)) from one exp(-|z|): the same arithmetic as the two functions apart.
fn softplus_sigmoid(z: f32) -> vec2<f32> {
    let e = exp(-abs(z));
    let s = 1.0 / (1.0 + e);
    return vec2<f32>(max(z, 0.0) + log1p_f(e), select(e * s, s, z >= 0.0));
}

// σ(x) through exp(-|x|), accurate in both tails.
fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, x >= 0.0);
}

// Adds e^z to the running (max, Σ e^{z − max}) of an online log-sum-exp (Milakov & Gimelshein
// 2018); start from (NEG_BIG, 0).
fn lse_push(acc: vec2<f32>, z: f32) -> vec2<f32> {
    if (z > acc.x) {
        return vec2<f32>(z, acc.y * exp(acc.x - z) + 1.0);
    }
    return vec2<f32>(acc.x, acc.y + exp(z - acc.x));
}

// The log-sum-exp of a running pair.
fn lse_value(acc: vec2<f32>) -> f32 {
    return acc.x + log(acc.y);
}

// PCG-RXS-M-XS hash; mirrors src/rng.rs exactly (32-bit integer arithmetic only).
fn pcg_hash(x: u32) -> u32 {
    let s = x * 747796405u + 2891336453u;
    let word = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (word >> 22u) ^ word;
}

var<workgroup> reduce_buf: array<vec4<f32>, WG>;

// Sum over the workgroup by a fixed tree with barriers: deterministic, and correct whatever the
// subgroup size. Every invocation of the workgroup must call it.
fn workgroup_sum(lid: u32, value: vec4<f32>) -> vec4<f32> {
    reduce_buf[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            reduce_buf[lid] = reduce_buf[lid] + reduce_buf[lid + s];
        }
        workgroupBarrier();
    }
    let total = reduce_buf[0];
    workgroupBarrier();
    return total;
}

// Sum over aligned segments of `width` invocations (a power of two): each segment's total is
// returned to all its invocations. Same fixed tree as `workgroup_sum`.
fn segment_sum(lid: u32, width: u32, value: vec4<f32>) -> vec4<f32> {
    reduce_buf[lid] = value;
    workgroupBarrier();
    let lane = lid % width;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (s < width && lane < s) {
            reduce_buf[lid] = reduce_buf[lid] + reduce_buf[lid + s];
        }
        workgroupBarrier();
    }
    let total = reduce_buf[lid - lane];
    workgroupBarrier();
    return total;
}

// A u32 whose unsigned order is the float order of `v` (negative floats reversed, -0 below +0),
// so that a radix selection over the bits finds the largest floats.
fn order_key(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// Whether a row is among the k selected by `select.wgsl`: keys above the k-th key `threshold`,
// and of the keys equal to it those up to index `last_tie` (lowest indices first).
fn select_kept(key: u32, index: u32, threshold: u32, last_tie: u32) -> bool {
    return key > threshold || (key == threshold && index <= last_tie);
}

// a and b agree on the bits from `shift` up (always true for shift ≥ 32).
fn high_bits_equal(a: u32, b: u32, shift: u32) -> bool {
    if (shift >= 32u) {
        return true;
    }
    return (a >> shift) == (b >> shift);
}

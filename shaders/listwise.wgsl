// The listwise terms (docs/LOSSES.md §6a; EasyRec `listwise_rank_loss`, `listwise_distill_loss`
// in easy_rec/python/loss/listwise_loss.py). Host side: src/losses/listwise/mod.rs; reference:
// src/reference/listwise.rs.
//
// After the session grouping (session.wgsl) a per-session softmax is a segmented reduction over
// the sorted rows, in passes whose loops stay bounded (llvmpipe stops an invocation after 65,535
// loop iterations; docs/ARCHITECTURE.md, "Driver defects"):
// - `list_gather`: each sorted row's (z, target, x): z = (x·|w| + b)/T;
// - `list_block`: the first row of a session within a block of WG sorted rows sums that part
//   (≤ WG rows) into `stats`;
// - `list_session`: the first row of each session merges its block parts (≤ B/WG + 1 of them;
//   the host caps B), keeps the totals at its own place, and adds (l_S, 1, 1, 0) to SLOT;
// - `list_grad_rows`: every row's dl_S/dz (and with SCALE the partials (Σ g·x, Σ g) to
//   SCALE_SLOT, for d total/d(w, b));
// - `list_apply` (after the combine): coefficient · g · |w|/T into the logits' gradient.
// A part's stats are (max z, Σ e^{z − max}, target max, A) and (Q, 0, 0, 0): with raw or distill
// targets a, A = Σ a and Q = Σ a·z; with label logits u = y/T, A = Σ e^{u − max u} and
// Q = Σ e^{u − max u}·z.

//#import grouping.wgsl

// 0 raw labels (listwise_rank_loss), 1 label logits (softmax_S(y/T)), 2 distill
// (log1p(c) − log(clip(y, 1, c)), normalised).
const TARGETS: u32 = 0u; // @spec
const CLIP_MAX: f32 = 512.0; // @spec
const TEMPERATURE: f32 = 1.0; // @spec
// scale_logits: x·|w| + b with (w, b) at state words SCALE_STATE and SCALE_STATE + 3.
const SCALE: bool = false; // @spec
const SCALE_STATE: u32 = 0u; // @spec
// The partial slots of the loss and of (Σ g·x, Σ g); the coefficient and the w used this step in
// the scalars.
const SLOT: u32 = 0u; // @spec
const SCALE_SLOT: u32 = 1u; // @spec
const COEF: u32 = 0u; // @spec
const SCALE_W: u32 = 0u; // @spec
// The pass after the combine adds to a gradient another term wrote this step.
const ACCUMULATE: bool = false; // @spec

@group(0) @binding(0) var<storage, read> chunk: Chunk;
// Sorted rows: (z, target, x, 0).
@group(0) @binding(1) var<storage, read_write> rows_out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rows: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<u32>;
// Two vec4 per sorted row: a session part's stats (see the top).
@group(0) @binding(6) var<storage, read_write> stats: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> stats_in: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> partials: array<vec4<f32>>;
// dl_S/dz per sorted row, before the coefficient.
@group(0) @binding(9) var<storage, read_write> list_grad: array<f32>;
@group(0) @binding(10) var<storage, read> list_grad_in: array<f32>;
@group(0) @binding(11) var<storage, read> scalars: array<f32>;
@group(0) @binding(12) var<storage, read_write> grad: array<f32>;

// A session part: the online log-sum-exp of z, the targets' (max, A) and Q.
struct Part {
    lse: vec2<f32>,
    target_max: f32,
    a: f32,
    q: f32,
}

fn empty_part() -> Part {
    return Part(vec2<f32>(NEG_BIG, 0.0), select(0.0, NEG_BIG, TARGETS == 1u), 0.0, 0.0);
}

// Adds the row (z, t) to a part.
fn push(p: Part, z: f32, t: f32) -> Part {
    var out = p;
    out.lse = lse_push(p.lse, z);
    if (TARGETS == 1u) {
        // Label logits: A and Q are sums of e^{u − max}, rescaled when the max grows.
        if (t > p.target_max) {
            let r = exp(p.target_max - t);
            out.target_max = t;
            out.a = p.a * r + 1.0;
            out.q = p.q * r + z;
        } else {
            let e = exp(t - p.target_max);
            out.a = p.a + e;
            out.q = p.q + e * z;
        }
    } else {
        out.a = p.a + t;
        out.q = p.q + t * z;
    }
    return out;
}

// The union of two parts of one session.
fn merge(p: Part, o: Part) -> Part {
    var out = p;
    let m = max(p.lse.x, o.lse.x);
    out.lse = vec2<f32>(m, p.lse.y * exp(p.lse.x - m) + o.lse.y * exp(o.lse.x - m));
    if (TARGETS == 1u) {
        let mt = max(p.target_max, o.target_max);
        let rp = exp(p.target_max - mt);
        let ro = exp(o.target_max - mt);
        out.target_max = mt;
        out.a = p.a * rp + o.a * ro;
        out.q = p.q * rp + o.q * ro;
    } else {
        out.a = p.a + o.a;
        out.q = p.q + o.q;
    }
    return out;
}

fn load_part(at: u32) -> Part {
    let s = stats[2u * at];
    return Part(s.xy, s.z, s.w, stats[2u * at + 1u].x);
}

fn store_part(at: u32, p: Part) {
    stats[2u * at] = vec4<f32>(p.lse, p.target_max, p.a);
    stats[2u * at + 1u] = vec4<f32>(p.q, 0.0, 0.0, 0.0);
}

// The learned (w, b) from the state (1, 0 without SCALE).
// (`state` is bound only with SCALE, hence the preprocessor branch.)
fn scale_wb() -> vec2<f32> {
//#if SCALE
    return vec2<f32>(bitcast<f32>(state[SCALE_STATE]), bitcast<f32>(state[SCALE_STATE + 3u]));
//#else
    return vec2<f32>(1.0, 0.0);
//#endif
}

// The row's target before the per-session softmax or normalisation.
fn row_target(y: f32) -> f32 {
    if (TARGETS == 1u) {
        return y / TEMPERATURE;
    }
    if (TARGETS == 2u) {
        // EasyRec: clip_by_value(labels, 1, c), then log1p(c) − log(labels).
        return log1p_f(CLIP_MAX) - log(clamp(y, 1.0, CLIP_MAX));
    }
    return y;
}

@compute @workgroup_size(256)
fn list_gather(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let r = batch_row(p);
    let x = logits[r];
    let wb = scale_wb();
    let z = (x * abs(wb.x) + wb.y) / TEMPERATURE;
    rows_out[p] = vec4<f32>(z, row_target(labels[r]), x, 0.0);
}

@compute @workgroup_size(256)
fn list_block(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let range = session_range(p, chunk.rows);
    let block_start = wg * WG;
    // Only the session's first row in this block sums the part: at most WG rows.
    if (p != max(range.x, block_start)) {
        return;
    }
    let end = min(range.y, block_start + WG);
    var part = empty_part();
    for (var i = p; i < end; i = i + 1u) {
        let row = rows[i];
        part = push(part, row.x, row.y);
    }
    store_part(p, part);
}

// l_S from a session's totals: A·lse − Q (raw), lse − Q/A (normalised targets).
fn session_loss(t: Part) -> f32 {
    let lse = lse_value(t.lse);
    if (TARGETS == 0u) {
        return t.a * lse - t.q;
    }
    return lse - t.q / t.a;
}

@compute @workgroup_size(256)
fn list_session(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    var acc = vec4<f32>(0.0);
    if (wg < chunk.wgs && p < chunk.rows) {
        let range = session_range(p, chunk.rows);
        if (p == range.x) {
            // Merge the session's block parts: its first block's is at p, each later block's
            // at that block's first row. At most B/WG + 1 iterations (the host caps B).
            var total = load_part(p);
            for (var b = p / WG + 1u; b * WG < range.y; b = b + 1u) {
                total = merge(total, load_part(b * WG));
            }
            store_part(p, total);
            acc = vec4<f32>(session_loss(total), 1.0, 1.0, 0.0);
        }
    }
    let sum = workgroup_sum(lid, acc);
    if (lid == 0u && wg < chunk.wgs) {
        partials[partial_index(chunk, SLOT, wg)] = sum;
    }
}

@compute @workgroup_size(256)
fn list_grad_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    var acc = vec4<f32>(0.0);
    if (wg < chunk.wgs && p < chunk.rows) {
        let range = session_range(p, chunk.rows);
        let s = stats_in[2u * range.x];
        let row = rows[p];
        let softmax = exp(row.x - s.x) / s.y;
        var g = 0.0;
        if (TARGETS == 0u) {
            g = s.w * softmax - row.y;
        } else if (TARGETS == 1u) {
            g = softmax - exp(row.y - s.z) / s.w;
        } else {
            g = softmax - row.y / s.w;
        }
        list_grad[p] = g;
        acc = vec4<f32>(g * row.z, g, 0.0, 0.0);
    }
    // (`partials` is bound to this pass only with SCALE.)
//#if SCALE
    let sum = workgroup_sum(lid, acc);
    if (lid == 0u && wg < chunk.wgs) {
        partials[partial_index(chunk, SCALE_SLOT, wg)] = sum;
    }
//#endif
}

@compute @workgroup_size(256)
fn list_apply(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    var dz_dx = 1.0 / TEMPERATURE;
    if (SCALE) {
        // The w this step used (the combine pass copied it before `weigh` stepped it).
        dz_dx = abs(scalars[SCALE_W]) / TEMPERATURE;
    }
    let g = scalars[COEF] * list_grad_in[p] * dz_dx;
    let at = batch_row(p);
    if (ACCUMULATE) {
        grad[at] = grad[at] + g;
    } else {
        grad[at] = g;
    }
}

// The pairwise-in-session terms (docs/LOSSES.md, "Pairwise-in-session terms"): pair_wise_loss,
// pairwise_logistic_loss, pairwise_focal_loss and pairwise_hinge_loss, and OHEM over pairs.
// Host side: src/losses/pairwise.rs; reference: src/reference/pairwise.rs.
//
// After the session grouping (session.wgsl) `pair_gather` puts each row's (x, y, w, batch row)
// in sorted order; `pair_sweep` visits every pair of every session from both ends (sweep.wgsl):
// the higher row adds the pair's weighted loss to the partials, and each row sums its own d/dx
// over its pairs into `pair_grad`, so no float atomics are needed. With OHEM the same sweep,
// specialised as SELECT_SWEEP, counts the radix-select histograms of the pair values (no
// per-pair buffer); the picks are select.wgsl's. After the combine, `pair_apply` scatters
// coefficient · pair_grad into the logits' gradient.

//#import binary.wgsl
//#import grouping.wgsl
//#import select_words.wgsl
//#import sweep.wgsl
//#import weights.wgsl

// The pair loss, as a function of d = (x_i − x_j)/T for a pair whose row i has the higher label:
// 0 softplus(−(d − MARGIN)) (pair_wise_loss; pairwise_logistic_loss without its label margin),
// 1 the same with the label gap (y_i − y_j)/T added to MARGIN, 2 binary focal with label 1 on d,
// 3 relu((y_i − y_j) − d), 4 relu(MARGIN − d). For the hinge (3, 4) the label gap is of the
// labels times LABEL_SCALE (1/T with label_is_logits, else 1), and with USE_EXPONENT d and the
// gap are between σ of the scaled logits and labels and the loss is relu(e^a − 1) (a ≤ 88).
const PAIR_KIND: u32 = 0u; // @spec
const TEMPERATURE: f32 = 1.0; // @spec
const LABEL_SCALE: f32 = 1.0; // @spec
const USE_EXPONENT: bool = false; // @spec
const MARGIN: f32 = 0.0; // @spec
const GAMMA: f32 = 2.0; // @spec
// Focal α (< 0: unset) and hinge: pairs with d ≥ HINGE are removed when HAS_HINGE.
const ALPHA: f32 = -1.0; // @spec
const HINGE: f32 = 0.0; // @spec
const HAS_HINGE: bool = false; // @spec
// OHEM over pairs: the loss sweep keeps the selected pairs; RATIO_UNITS is the keep ratio.
const OHEM: bool = false; // @spec
const RATIO_UNITS: u32 = 1000000000u; // @spec the keep ratio in units of 10^-9
// The term's partial slot in its group, and its gradient coefficient in the scalars.
const SLOT: u32 = 0u; // @spec
const COEF: u32 = 0u; // @spec
// The pass after the combine adds to a gradient another term wrote this step.
const ACCUMULATE: bool = false; // @spec
// The sweep counts OHEM histograms instead of summing losses.
const SELECT_SWEEP: bool = false; // @spec

// One dispatch of a sweep; mirrored in src/losses/pairwise.rs.
struct PairSweep {
    chunk: Chunk,
    // First word of the OHEM selection's state in `aux`.
    state: u32,
    // B: a pair's index is i·B + j over batch rows.
    batch: u32,
    // The selection round (SELECT_SWEEP), and its index digits.
    round: u32,
    digits: u32,
}

// The gather and apply passes' chunk; the sweeps bind theirs in `sweep_params`.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> sweep_params: PairSweep;
// Sorted rows: (x, y, w, batch row).
@group(0) @binding(2) var<storage, read_write> rows_out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> logits: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<f32>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;
// Each sorted row's Σ over its pairs of d(weighted pair loss)/dx, before the coefficient.
@group(0) @binding(7) var<storage, read_write> pair_grad: array<f32>;
@group(0) @binding(8) var<storage, read_write> aux: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read> scalars: array<f32>;
@group(0) @binding(10) var<storage, read_write> grad: array<f32>;

// softplus(−(d − margin)) and its derivative, from one exp.
fn pair_logistic(d: f32, margin: f32) -> vec3<f32> {
    let f = softplus_sigmoid(margin - d);
    return vec3<f32>(f.x, -f.y, 1.0);
}

// relu(margin − d), or relu(e^min(a, 88) − 1) with USE_EXPONENT (EasyRec's clip: flat beyond);
// the derivative at the kink is 0, as the reference's.
fn pair_hinge(d: f32, margin: f32) -> vec3<f32> {
    let a = margin - d;
    if (a <= 0.0) {
        return vec3<f32>(0.0, 0.0, 1.0);
    }
    if (USE_EXPONENT) {
        let slope = select(0.0, -exp(a), a < 88.0);
        return vec3<f32>(exp(min(a, 88.0)) - 1.0, slope, 1.0);
    }
    return vec3<f32>(a, -1.0, 1.0);
}

// A row's Σ dl/dd times d(score)/dx: divided by T, and times σ'(x/T) with USE_EXPONENT.
fn through_score(row_grad: f32, x: f32) -> f32 {
    if (USE_EXPONENT) {
        let p = sigmoid(x / TEMPERATURE);
        return row_grad * (p * (1.0 - p)) / TEMPERATURE;
    }
    return row_grad / TEMPERATURE;
}

// Binary focal with label 1 on d (alpha < 0: none); pairs with d ≥ hinge are removed when
// `has_hinge`.
fn pair_focal(d: f32, gamma: f32, alpha: f32, hinge: f32, has_hinge: bool) -> vec3<f32> {
    if (has_hinge && d >= hinge) {
        return vec3<f32>(0.0);
    }
    let f = focal(d, 1.0, 1.0, gamma, alpha);
    return vec3<f32>(f.x, f.y, 1.0);
}

// (l, dl/dd, 1) of the term's loss, or (0, 0, 0) when the pair does not count at all.
fn pair_loss(d: f32, yi: f32, yj: f32) -> vec3<f32> {
    switch PAIR_KIND {
        case 0u: {
            return pair_logistic(d, MARGIN);
        }
        case 1u: {
            return pair_logistic(d, MARGIN + (yi - yj) / TEMPERATURE);
        }
        case 2u: {
            return pair_focal(d, GAMMA, ALPHA, HINGE, HAS_HINGE);
        }
        case 3u: {
            return pair_hinge(d, yi - yj);
        }
        default: {
            return pair_hinge(d, MARGIN);
        }
    }
}

// The pair loss of the higher row `hi` against `lo`.
fn pair_of(hi: vec4<f32>, lo: vec4<f32>) -> vec3<f32> {
    if (USE_EXPONENT) {
        let d = sigmoid(hi.x / TEMPERATURE) - sigmoid(lo.x / TEMPERATURE);
        return pair_loss(d, sigmoid(hi.y * LABEL_SCALE), sigmoid(lo.y * LABEL_SCALE));
    }
    return pair_loss((hi.x - lo.x) / TEMPERATURE, hi.y * LABEL_SCALE, lo.y * LABEL_SCALE);
}

@compute @workgroup_size(256)
fn pair_gather(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let r = batch_row(p);
    rows_out[p] = vec4<f32>(logits[r], labels[r], sample_weight(r), f32(r));
}

var<workgroup> tile: array<vec4<f32>, 256>;
var<workgroup> sweep_span: vec2<u32>;
var<workgroup> local_hist: array<atomic<u32>, 256>;
var<workgroup> local_count: atomic<u32>;

// Sorted rows one sweep invocation holds (1..=8, consecutive): each visited row is loaded from
// the tile once for all of them (on CPU adapters a load costs about 100 FMAs). The visits are
// written out per held row, not looped, because llvmpipe's loop limiter counts every iteration.
const RB: u32 = 1u; // @spec

// What one invocation carries through its sweep: its held rows, their session ranges and
// gradients, and the loss partials of all of them.
var<private> held: array<vec4<f32>, RB>;
var<private> held_range: array<vec2<u32>, RB>;
var<private> held_grad: array<f32, RB>;
var<private> acc: vec4<f32>;
var<private> threshold: u32;
var<private> last_tie: u32;
var<private> pair_count: u32;
var<private> prefix: u32;
var<private> index_prefix: u32;
var<private> round: u32;
var<private> digits: u32;
var<private> batch: u32;

fn sweep_stage(lid: u32, first: u32, n: u32) {
    if (lid < n) {
        tile[lid] = rows[first + lid];
    }
}

// A pair visited from held row `k`: the loss (from the higher row) and this row's gradient.
fn visit_loss(k: u32, o: vec4<f32>) {
    let me = held[k];
    let up = me.y > o.y;
    if (up || o.y > me.y) {
        let hi = select(o, me, up);
        let lo = select(me, o, up);
        let pl = pair_of(hi, lo);
        if (!OHEM) {
            if (up) {
                acc = acc + vec4<f32>(me.z * pl.x, me.z * pl.z, select(0.0, pl.z, me.z != 0.0), pl.z);
                held_grad[k] = held_grad[k] + me.z * pl.y;
            } else {
                held_grad[k] = held_grad[k] - o.z * pl.y;
            }
        } else {
            // Kept: among the k largest values (ties by pair index) and positive.
            let v = hi.z * pl.x;
            let index = u32(hi.w) * batch + u32(lo.w);
            if (pl.z != 0.0 && v > 0.0 && select_kept(order_key(v), index, threshold, last_tie)) {
                if (up) {
                    acc = acc + vec4<f32>(v, 0.0, 1.0, 0.0);
                    held_grad[k] = held_grad[k] + me.z * pl.y;
                } else {
                    held_grad[k] = held_grad[k] - o.z * pl.y;
                }
            }
        }
    }
}

// A pair visited from its higher row, held row `k`, in one OHEM histogram round over the pair
// values w_i·l.
fn visit_select(k: u32, o: vec4<f32>) {
    let me = held[k];
    if (me.y > o.y) {
        let pl = pair_of(me, o);
        if (pl.z != 0.0) {
            pair_count = pair_count + 1u;
            let key = order_key(me.z * pl.x);
            if (round < VALUE_ROUNDS) {
                let shift = 24u - 8u * round;
                if (round == 0u || high_bits_equal(key, prefix, shift + 8u)) {
                    atomicAdd(&local_hist[(key >> shift) & 255u], 1u);
                }
            } else if (key == prefix) {
                let index = u32(me.w) * batch + u32(o.w);
                let shift = 8u * (digits - 1u - (round - VALUE_ROUNDS));
                if (high_bits_equal(index, index_prefix, shift + 8u)) {
                    atomicAdd(&local_hist[(index >> shift) & 255u], 1u);
                }
            }
        }
    }
}

// Visits `item` from held row `k` when it lies in that row's session.
fn visit_held(k: u32, item: u32, o: vec4<f32>) {
    let range = held_range[k];
    if (item >= range.x && item < range.y) {
        if (SELECT_SWEEP) {
            visit_select(k, o);
        } else {
            visit_loss(k, o);
        }
    }
}

fn sweep_visit(item: u32, slot: u32) {
    let o = tile[slot];
    visit_held(0u, item, o);
    if (RB > 1u) {
        visit_held(1u, item, o);
    }
    if (RB > 2u) {
        visit_held(2u, item, o);
    }
    if (RB > 3u) {
        visit_held(3u, item, o);
    }
    if (RB > 4u) {
        visit_held(4u, item, o);
    }
    if (RB > 5u) {
        visit_held(5u, item, o);
    }
    if (RB > 6u) {
        visit_held(6u, item, o);
    }
    if (RB > 7u) {
        visit_held(7u, item, o);
    }
}

// The select sweep's end: the workgroup's histogram and pair count into the selection state.
fn finish_select(lid: u32, wg: u32) {
    let state = sweep_params.state;
    if (pair_count != 0u) {
        atomicAdd(&local_count, pair_count);
    }
    workgroupBarrier();
    let c = atomicLoad(&local_hist[lid]);
    if (c != 0u) {
        atomicAdd(&aux[state + SEL_HIST + lid], c);
    }
    if (lid == 0u && round == 0u) {
        let n = atomicLoad(&local_count);
        if (n != 0u) {
            atomicAdd(&aux[state + SEL_COUNT], n);
        }
        if (wg == 0u) {
            atomicStore(&aux[state + SEL_RATIO], RATIO_UNITS);
        }
    }
}

// Loads the invocation's RB sorted rows from `first` on (ranges empty beyond the chunk); returns
// the union of their sessions' ranges, which is what the invocation visits.
fn load_held(first: u32, rows_in_chunk: u32) -> vec2<u32> {
    var span = vec2<u32>(0xffffffffu, 0u);
    for (var k = 0u; k < RB; k = k + 1u) {
        let p = first + k;
        held_grad[k] = 0.0;
        held_range[k] = vec2<u32>(0u, 0u);
        if (p < rows_in_chunk) {
            held[k] = rows[p];
            held_range[k] = session_range(p, rows_in_chunk);
            span = vec2<u32>(min(span.x, held_range[k].x), max(span.y, held_range[k].y));
        }
    }
    return select(vec2<u32>(0u, 0u), span, span.x < span.y);
}

@compute @workgroup_size(256)
fn pair_sweep(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let sweep_chunk = sweep_params.chunk;
    let state = sweep_params.state;
    round = sweep_params.round;
    digits = sweep_params.digits;
    batch = sweep_params.batch;
    let wg = linear_workgroup(wid, nwg);
    let first = (wg * WG + lid) * RB;
    let valid = wg < sweep_chunk.wgs && first < sweep_chunk.rows;
    // An index round of a selection that needs none does nothing.
    let idle = SELECT_SWEEP && round >= VALUE_ROUNDS && atomicLoad(&aux[state + SEL_DONE]) == 1u;
    var range = vec2<u32>(0u, 0u);
    if (valid && !idle) {
        range = load_held(first, sweep_chunk.rows);
    }
    // The workgroup's span of sorted rows: its first row's session start to its last row's end
    // (sessions are contiguous, so the ranges of the rows between lie inside).
    if (lid == 0u) {
        sweep_span.x = range.x;
    }
    let last = first + RB >= sweep_chunk.rows || lid == WG - 1u;
    if (valid && last) {
        sweep_span.y = range.y;
    }
    let s = workgroupUniformLoad(&sweep_span);
    if (SELECT_SWEEP) {
        prefix = atomicLoad(&aux[state + SEL_PREFIX]);
        index_prefix = atomicLoad(&aux[state + SEL_INDEX]);
    } else if (OHEM) {
        threshold = atomicLoad(&aux[state + SEL_PREFIX]);
        last_tie = atomicLoad(&aux[state + SEL_INDEX]);
    }
    sweep(lid, valid, s, range);
    if (SELECT_SWEEP) {
        finish_select(lid, wg);
        return;
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u && wg < sweep_chunk.wgs) {
        partials[partial_index(sweep_chunk, SLOT, wg)] = total;
    }
    if (valid) {
        for (var k = 0u; k < RB; k = k + 1u) {
            if (first + k < sweep_chunk.rows) {
                pair_grad[first + k] = through_score(held_grad[k], held[k].x);
            }
        }
    }
}

@compute @workgroup_size(256)
fn pair_apply(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let g = scalars[COEF] * pair_grad[p];
    let at = batch_row(p);
    if (ACCUMULATE) {
        grad[at] = grad[at] + g;
    } else {
        grad[at] = g;
    }
}

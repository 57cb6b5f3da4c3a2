// Circle loss and multi-similarity loss (docs/LOSSES.md, "Retrieval and embedding terms") over
// the cosine matrix S of a batch of normalised embeddings, never stored: one invocation per row
// i visits the rows j through the tile sweep (sweep.wgsl). Host side: src/losses/metric.rs;
// reference: src/reference/metric.rs.
//
// Constants: D (embedding.wgsl), TC and TILED (sweep.wgsl), CIRCLE (else multi-similarity),
// MARGIN and GAMMA (circle), ALPHA, BETA, LAMB, MINING and EPS (multi-similarity). Pair (i, j), j ≠ i, is a
// positive when the rows have the same key (label and session), a negative otherwise. A
// dispatch visits the rows of a `MetricRange` (llvmpipe stops any invocation's loops after
// 65,535 iterations in all, so the rows are split into ranges); the forward pass carries its
// sums from one range to the next. The batch size is the chunk's `rows`, not a constant: loops
// whose trip count the shader compiler can see get unrolled, and GL llvmpipe then takes minutes
// to compile them.

//#import embedding.wgsl
//#import sweep.wgsl

const TILE_FLOATS: u32 = 16384u; // @spec
const CIRCLE: bool = true; // @spec
const MARGIN: f32 = 0.25; // @spec
const GAMMA: f32 = 32.0; // @spec
const ALPHA: f32 = 2.0; // @spec
const BETA: f32 = 50.0; // @spec
const LAMB: f32 = 1.0; // @spec
// Multi-similarity's pair mining (the `mine` sweep finds each row's bounds first) and its ε.
const MINING: bool = false; // @spec
const EPS: f32 = 0.1; // @spec
// The mining sweep (`mine`, else the forward or gradient sweep).
const MINE: bool = false; // @spec
// The gradient sweep (else the forward one).
const BACKWARD: bool = false; // @spec
// rowinfo: how the labels are held (embedding.wgsl's ID_*); whether a session tensor is bound,
// and how it is held.
const LABEL_KIND: u32 = 1u; // @spec
const HAS_SESSION: bool = false; // @spec
const SESSION_KIND: u32 = 3u; // @spec

// One dispatch of a sweep; mirrored in src/losses/metric.rs.
struct MetricRange {
    chunk: Chunk,
    // The range of rows j visited: [first, first + count).
    first: u32,
    count: u32,
    // Forward: bit 0 the first range (start the sums), bit 1 the last (finish the rows).
    flags: u32,
}

@group(0) @binding(0) var<storage, read> range: MetricRange;
@group(0) @binding(1) var<storage, read> e: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> row_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<f32>>;
// The running sums between the dispatches of one row's columns: (max, Σ) of the negatives and
// the positives, and their counts.
@group(0) @binding(6) var<storage, read_write> carry: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> counts: array<vec2<u32>>;
@group(0) @binding(8) var<storage, read_write> de: array<f32>;
@group(0) @binding(9) var<storage, read_write> w_out: array<f32>;
@group(0) @binding(10) var<storage, read_write> keys_out: array<vec4<u32>>;
// Each row's mining bounds (max S over its negatives, min S over its positives).
@group(0) @binding(11) var<storage, read_write> bounds: array<vec2<f32>>;
@group(0) @binding(25) var<storage, read> labels: array<u32>;
@group(0) @binding(26) var<storage, read> session: array<u32>;

var<workgroup> tile: array<f32, TILE_FLOATS>;
var<workgroup> tile_key: array<vec4<u32>, TC>;
var<workgroup> tile_stats: array<vec4<f32>, TC>;
var<workgroup> tile_bounds: array<vec2<f32>, TC>;

// The bounds of a row with neither positives nor negatives: nothing is mined against an empty
// set (the paper's max and min over it are −∞ and +∞).
const BIG: f32 = 3.0e38;

// The key of value r of a column held as `kind` (embedding.wgsl's ID_*).
fn key_of_labels(r: u32) -> vec2<u32> {
    if (LABEL_KIND == ID_I64) {
        return column_key(LABEL_KIND, labels[2u * r], labels[2u * r + 1u]);
    }
    return column_key(LABEL_KIND, labels[r], 0u);
}

fn key_of_session(r: u32) -> vec2<u32> {
//#if HAS_SESSION
    if (SESSION_KIND == ID_I64) {
        return column_key(SESSION_KIND, session[2u * r], session[2u * r + 1u]);
    }
    return column_key(SESSION_KIND, session[r], 0u);
//#else
    return vec2<u32>(0u, 0u);
//#endif
}

// rowinfo: each row's weight and key (label, session).
@compute @workgroup_size(256)
fn rowinfo(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= N) {
        return;
    }
    w_out[r] = sample_weight(r);
    keys_out[r] = vec4<u32>(key_of_labels(r), key_of_session(r));
}

// The exponent a pair contributes to its row's positive (or negative) log-sum-exp.
fn pair_exponent(s: f32, positive: bool) -> f32 {
    if (CIRCLE) {
        if (positive) {
            let a_p = max(1.0 + MARGIN - s, 0.0);
            return -GAMMA * a_p * (s - (1.0 - MARGIN));
        }
        let a_n = max(s + MARGIN, 0.0);
        return GAMMA * a_n * (s - MARGIN);
    }
    let sc = max(s, 0.0);
    if (positive) {
        return -ALPHA * (sc - LAMB);
    }
    return BETA * (sc - LAMB);
}

// d(row loss)/dS for one pair, given the row's stats (lse_neg, lse_pos, factor, _) where factor
// is w_i times the derivative of the outer function (0 for rows that do not count).
fn pair_gradient(s: f32, positive: bool, st: vec4<f32>) -> f32 {
    let x = pair_exponent(s, positive);
    if (CIRCLE) {
        // a_p and a_n are detached: d/dS of −γ a_p (S − (1 − m)) is −γ a_p.
        if (positive) {
            return st.z * exp(x - st.y) * (-GAMMA * max(1.0 + MARGIN - s, 0.0));
        }
        return st.z * exp(x - st.x) * (GAMMA * max(s + MARGIN, 0.0));
    }
    if (s <= 0.0) {
        return 0.0; // S = max(cos, 0) is flat there
    }
    if (positive) {
        return -st.z * exp(x - st.y);
    }
    return st.z * exp(x - st.x);
}

// Whether row i's sum keeps the pair at S = s (Wang et al. 2019, §3.3), by row i's bounds: a
// positive when max(s, 0) < max_neg + ε, a negative when max(s, 0) > min_pos − ε.
fn kept(s: f32, positive: bool, bnd: vec2<f32>) -> bool {
    if (!MINING) {
        return true;
    }
    let sc = max(s, 0.0);
    if (positive) {
        return sc < bnd.x + EPS;
    }
    return sc > bnd.y - EPS;
}

// Row j (at slot c of the tile): from the staged tile, or straight from the buffer where TILED
// is false.
fn other_elem(j: u32, c: u32, x: u32) -> f32 {
    if (TILED) {
        return tile[c * D + x];
    }
    return e[j * D + x];
}

fn other_key(j: u32, c: u32) -> vec4<u32> {
    if (TILED) {
        return tile_key[c];
    }
    return keys[j];
}

fn other_stats(j: u32, c: u32) -> vec4<f32> {
    if (TILED) {
        return tile_stats[c];
    }
    return stats[j];
}

fn other_bounds(j: u32, c: u32) -> vec2<f32> {
    if (TILED) {
        return tile_bounds[c];
    }
    return bounds[j];
}

// What one invocation carries through its sweep.
var<private> ev: array<f32, D>;
var<private> acc: array<f32, D>;
var<private> row: u32;
var<private> my_key: vec4<u32>;
var<private> my_stats: vec4<f32>;
// This row's mining bounds: read (forward and gradient sweeps) or being found (`mine`).
var<private> my_bounds: vec2<f32>;
var<private> neg: vec2<f32>;
var<private> pos: vec2<f32>;
var<private> n_pos: u32;
var<private> n_neg: u32;

fn sweep_stage(lid: u32, first: u32, n: u32) {
    for (var x = lid; x < n * D; x = x + WG) {
        tile[x] = e[first * D + x];
    }
    for (var c = lid; c < n; c = c + WG) {
        tile_key[c] = keys[first + c];
//#if BACKWARD
        tile_stats[c] = stats[first + c];
//#if MINING
        tile_bounds[c] = bounds[first + c];
//#endif
//#endif
    }
}

//#if BACKWARD
// de[i] += (G_ij + G_ji) ê_j, G_ij = d l_i / d S_ij (S is symmetric).
fn sweep_visit(j: u32, c: u32) {
    if (j == row) {
        return;
    }
    let other = other_stats(j, c);
    if (my_stats.z == 0.0 && other.z == 0.0) {
        return;
    }
    var s = 0.0;
    for (var x = 0u; x < D; x = x + 1u) {
        s = s + ev[x] * other_elem(j, c, x);
    }
    let positive = all(other_key(j, c) == my_key);
    var g = 0.0;
    if (my_stats.z != 0.0 && kept(s, positive, my_bounds)) {
        g = pair_gradient(s, positive, my_stats);
    }
    if (other.z != 0.0 && kept(s, positive, other_pair_bounds(j, c))) {
        g = g + pair_gradient(s, positive, other);
    }
    for (var x = 0u; x < D; x = x + 1u) {
        acc[x] = acc[x] + g * other_elem(j, c, x);
    }
}

// Row j's bounds, where they exist (MINING).
fn other_pair_bounds(j: u32, c: u32) -> vec2<f32> {
//#if MINING
    return other_bounds(j, c);
//#else
    return vec2<f32>(0.0);
//#endif
}
//#else
//#if MINE
// The pair's S into this row's bounds.
fn sweep_visit(j: u32, c: u32) {
    if (j == row) {
        return;
    }
    var s = 0.0;
    for (var x = 0u; x < D; x = x + 1u) {
        s = s + ev[x] * other_elem(j, c, x);
    }
    let sc = max(s, 0.0);
    if (all(other_key(j, c) == my_key)) {
        my_bounds.y = min(my_bounds.y, sc);
    } else {
        my_bounds.x = max(my_bounds.x, sc);
    }
}
//#else
// The pair's exponent into this row's positive or negative log-sum-exp.
fn sweep_visit(j: u32, c: u32) {
    if (j == row) {
        return;
    }
    var s = 0.0;
    for (var x = 0u; x < D; x = x + 1u) {
        s = s + ev[x] * other_elem(j, c, x);
    }
    let positive = all(other_key(j, c) == my_key);
    if (!kept(s, positive, my_bounds)) {
        return;
    }
    let v = pair_exponent(s, positive);
    if (positive) {
        pos = lse_push(pos, v);
        n_pos = n_pos + 1u;
    } else {
        neg = lse_push(neg, v);
        n_neg = n_neg + 1u;
    }
}
//#endif
//#endif

// Row i's stats and partials once its last range is visited.
fn finish_row(i: u32) -> vec4<f32> {
    var part = vec4<f32>(0.0);
    let w = row_w[i];
    let lse_n = lse_value(neg);
    let lse_p = lse_value(pos);
    var st = vec4<f32>(lse_n, lse_p, 0.0, 0.0);
    if (CIRCLE) {
        if (n_pos > 0u && n_neg > 0u) {
            let z = lse_n + lse_p;
            st.z = w * sigmoid(z);
            st.w = 1.0;
            part = vec4<f32>(w * softplus(z), w, select(0.0, 1.0, w != 0.0), 1.0);
        }
    } else {
        let l = lse_p / ALPHA + lse_n / BETA;
        st.z = w;
        st.w = 1.0;
        part = vec4<f32>(w * l, w, select(0.0, 1.0, w != 0.0), 1.0);
    }
    stats[i] = st;
    return part;
}

// stats[i] = (lse_neg, lse_pos, factor, valid); per-workgroup partials (Σ w·l, Σ w, #{w ≠ 0},
// #counted rows).
@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = range.chunk;
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let b = ch.rows;
    let live = wg < ch.wgs && i < b;
    row = min(i, b - 1u);
    for (var c = 0u; c < D; c = c + 1u) {
        ev[c] = e[row * D + c];
    }
    my_key = keys[row];
    my_bounds = row_bounds(row);
    // Multi-similarity's log(1 + Σ e^x) is the log-sum-exp of {0} ∪ {x}: start at (0, 1).
    neg = select(vec2<f32>(0.0, 1.0), vec2<f32>(NEG_BIG, 0.0), CIRCLE);
    pos = neg;
    if ((range.flags & 1u) == 0u) {
        let cv = carry[row];
        neg = cv.xy;
        pos = cv.zw;
        let cn = counts[row];
        n_pos = cn.x;
        n_neg = cn.y;
    }
    let span = vec2<u32>(range.first, range.first + range.count);
    sweep(lid, live, span, span);
    var part = vec4<f32>(0.0);
    let last = (range.flags & 2u) != 0u;
    if (live && !last) {
        carry[i] = vec4<f32>(neg, pos);
        counts[i] = vec2<u32>(n_pos, n_neg);
    }
    if (live && last) {
        part = finish_row(i);
    }
    let total = workgroup_sum(lid, part);
    if (lid == 0u && wg < ch.wgs && last) {
        partials[partial_index(ch, 0u, wg)] = total;
    }
}

// de[i] = Σ_j (G_ij + G_ji) ê_j over this range; scaled by the term's coefficient after the
// combine.
@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = range.chunk;
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let b = ch.rows;
    let live = wg < ch.wgs && i < b;
    row = min(i, b - 1u);
    for (var c = 0u; c < D; c = c + 1u) {
        ev[c] = e[row * D + c];
    }
    my_key = keys[row];
    my_stats = stats[row];
    my_bounds = row_bounds(row);
    let span = vec2<u32>(range.first, range.first + range.count);
    sweep(lid, live, span, span);
    if (live) {
        for (var x = 0u; x < D; x = x + 1u) {
            if (range.first == 0u) {
                de[i * D + x] = acc[x];
            } else {
                de[i * D + x] = de[i * D + x] + acc[x];
            }
        }
    }
}

// Row r's mining bounds (not read without MINING).
fn row_bounds(r: u32) -> vec2<f32> {
//#if MINING
    return bounds[r];
//#else
    return vec2<f32>(0.0);
//#endif
}

// bounds[i] = (max S over the negatives, min S over the positives) of row i, carried over the
// ranges; the forward and gradient sweeps then keep only the mined pairs.
@compute @workgroup_size(256)
fn mine(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = range.chunk;
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let b = ch.rows;
    let live = wg < ch.wgs && i < b;
    row = min(i, b - 1u);
    for (var c = 0u; c < D; c = c + 1u) {
        ev[c] = e[row * D + c];
    }
    my_key = keys[row];
    my_bounds = vec2<f32>(-BIG, BIG);
    if ((range.flags & 1u) == 0u) {
        my_bounds = bounds[row];
    }
    let span = vec2<u32>(range.first, range.first + range.count);
    sweep(lid, live, span, span);
    if (live) {
        bounds[i] = my_bounds;
    }
}

fn grad_component(r: u32, c: u32) -> f32 {
    return de[r * D + c];
}

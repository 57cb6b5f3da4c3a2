// Softmax over columns for in-batch and cross-batch softmax and the contrastive terms
// (docs/LOSSES.md, "Retrieval and embedding terms"), flash-attention style: no score matrix is
// ever stored. One invocation per loss row i streams the columns through the tile sweep
// (sweep.wgsl) with an online log-sum-exp; the gradient passes recompute the scores. Host side:
// src/losses/retrieval.rs; reference: src/reference/retrieval.rs.
//
// Constants: D (embedding.wgsl), TC and TILED (sweep.wgsl), INV_T (1/T), NT_XENT (the rows are
// [a; b]: column i is not a negative of row i, and row i's positive is column (i + B) mod 2B;
// else it is column i), HIT_MASK (accidental hits by id), and for a memory bank BANK_M (rows),
// BANK_STATE (the state word of its head; the fill count follows), WARMUP (steps before the bank
// is used). The loss rows and batch columns are the chunk's `rows`, not a constant: loops whose
// trip count the shader compiler can see get unrolled, and GL llvmpipe then takes minutes to
// compile them.
//
// A sweep covers a `ColumnRange`: `count` columns of one source, the batch or a part of the
// bank, starting at column `source_first` of the source's embeddings and at index `first` of
// its log_q and id arrays. The bank's embeddings are split into parts that each fit one
// binding; every source is split into ranges short enough for llvmpipe, which stops any
// invocation's loops after 65,535 iterations in all (its loop limiter).

//#import embedding.wgsl
//#import sweep.wgsl

const TILE_FLOATS: u32 = 16384u; // @spec
const INV_T: f32 = 1.0; // @spec
const NT_XENT: bool = false; // @spec
const HIT_MASK: bool = false; // @spec
const BANK_M: u32 = 1u; // @spec
const BANK_STATE: u32 = 0u; // @spec
const WARMUP: u32 = 0u; // @spec
// sweep_rows: the gradient sweep dq (else the log-sum-exp sweep).
const GRAD: bool = false; // @spec
// The sweep is `grad_cols` (else `sweep_rows`).
const GRAD_COLS: bool = false; // @spec
// `apply` of the user/view_a rows (else of the item/view_b rows); NT-Xent applies both to each.
const APPLY_ROWS: bool = true; // @spec
const ROW_OFF: u32 = 0u; // @spec
const POS_SHIFT: u32 = 0u; // @spec
const NK: u32 = 1u; // @spec
// rowinfo: the term binds log_q; it binds item_ids, held as ID_KIND (embedding.wgsl's ID_*).
const HAS_LOG_Q: bool = false; // @spec
const HAS_IDS: bool = false; // @spec
const ID_KIND: u32 = 3u; // @spec

// One dispatch of a sweep, or of the bank write; mirrored in src/losses/retrieval.rs.
struct ColumnRange {
    chunk: Chunk,
    // Index of the range's first column in the source's log_q and id arrays (bank_write: the
    // part's first slot).
    first: u32,
    // Columns in the range (bank_write: the part's rows).
    count: u32,
    // The range's first column in the source's embeddings.
    source_first: u32,
    // 1 when the source is a part of the bank.
    bank: u32,
}

@group(0) @binding(0) var<storage, read> range: ColumnRange;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> cols: array<f32>;
@group(0) @binding(4) var<storage, read> col_bias: array<f32>;
@group(0) @binding(5) var<storage, read> col_ids: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> row_ids: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;
@group(0) @binding(9) var<storage, read> k: array<f32>;
@group(0) @binding(10) var<storage, read> row_w: array<f32>;
@group(0) @binding(11) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> dk: array<f32>;
@group(0) @binding(13) var<storage, read_write> bank: array<f32>;
@group(0) @binding(14) var<storage, read_write> bank_bias: array<f32>;
@group(0) @binding(15) var<storage, read_write> bank_ids: array<vec2<u32>>;
@group(0) @binding(16) var<storage, read_write> state_rw: array<u32>;
@group(0) @binding(17) var<storage, read_write> w_out: array<f32>;
@group(0) @binding(18) var<storage, read_write> bias_out: array<f32>;
@group(0) @binding(19) var<storage, read_write> ids_out: array<vec2<u32>>;
@group(0) @binding(25) var<storage, read> log_q: array<f32>;
@group(0) @binding(26) var<storage, read> item_ids: array<u32>;

var<workgroup> tile: array<f32, TILE_FLOATS>;
var<workgroup> tile_bias: array<f32, TC>;
var<workgroup> tile_id: array<vec2<u32>, TC>;
var<workgroup> tile_w: array<f32, TC>;
var<workgroup> shared_count: u32;

fn positive_of(i: u32, n: u32) -> u32 {
    if (NT_XENT) {
        return (i + n / 2u) % n;
    }
    return i;
}

// rowinfo: each batch row's weight, log_q and item id (NT-Xent: also at row r + N, the other
// view of example r).
@compute @workgroup_size(256)
fn rowinfo(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= N) {
        return;
    }
    let w = sample_weight(r);
    var bias = 0.0;
//#if HAS_LOG_Q
    bias = log_q[r];
//#endif
    var id = vec2<u32>(0u, 0u);
//#if HAS_IDS
    if (ID_KIND == ID_I64) {
        id = column_key(ID_KIND, item_ids[2u * r], item_ids[2u * r + 1u]);
    } else {
        id = column_key(ID_KIND, item_ids[r], 0u);
    }
//#endif
    w_out[r] = w;
    bias_out[r] = bias;
    ids_out[r] = id;
    if (NT_XENT) {
        w_out[r + N] = w;
        bias_out[r + N] = bias;
        ids_out[r + N] = id;
    }
}

// What one invocation carries through its sweep: RB rows (sweep_rows: loss rows; grad_cols:
// batch columns), row r of the invocation being row base + r·WG of the pass, so that each
// column (or loss row) the sweep visits is loaded once for all RB of them.
const RB: u32 = 1u; // @spec
const RB_FLOATS: u32 = RB * D;
var<private> qv: array<f32, RB_FLOATS>;
var<private> dq_acc: array<f32, RB_FLOATS>;
var<private> acc: array<vec2<f32>, RB>;
var<private> lse: array<f32, RB>;
var<private> rows_r: array<u32, RB>;
var<private> pos_r: array<u32, RB>;
var<private> id_r: array<vec2<u32>, RB>;
var<private> bias_r: array<f32, RB>;

// s[r] = the dot product of the invocation's row r with a visited row, each element of which
// `visited(x)` loads once.
var<private> dots: array<f32, RB>;

// Adds p[r] · visited for every r (the gradient sweeps); p[r] = 0 for a masked pair adds 0.
var<private> coefs: array<f32, RB>;

//#if GRAD_COLS
// Loss row i (at slot c of the tile): component x, lse, weight, id.
fn row_elem(i: u32, c: u32, x: u32) -> f32 {
    if (TILED) {
        return tile[c * D + x];
    }
    return q[i * D + x];
}

fn row_lse(i: u32, c: u32) -> f32 {
    if (TILED) {
        return tile_bias[c];
    }
    return stats[i].x;
}

fn row_weight(i: u32, c: u32) -> f32 {
    if (TILED) {
        return tile_w[c];
    }
    return row_w[i];
}

fn row_id(i: u32, c: u32, n_all: u32) -> vec2<u32> {
    if (TILED) {
        return tile_id[c];
    }
    return row_ids[i % n_all];
}

fn sweep_stage(lid: u32, first: u32, n: u32) {
    let n_all = range.chunk.rows;
    for (var e = lid; e < n * D; e = e + WG) {
        tile[e] = q[first * D + e];
    }
    for (var c = lid; c < n; c = c + WG) {
        let i = first + c;
        tile_bias[c] = stats[i].x;
        tile_w[c] = row_w[i];
        tile_id[c] = row_ids[i % n_all];
    }
}

// This invocation's columns against loss row i: dk_r += w_i p_ir q_i.
fn sweep_visit(i: u32, c: u32) {
    let n_all = range.chunk.rows;
    let w = row_weight(i, c);
    let id = row_id(i, c, n_all);
    let lse_i = row_lse(i, c);
    for (var r = 0u; r < RB; r = r + 1u) {
        dots[r] = 0.0;
    }
    for (var x = 0u; x < D; x = x + 1u) {
        let v = row_elem(i, c, x);
        for (var r = 0u; r < RB; r = r + 1u) {
            dots[r] = dots[r] + qv[r * D + x] * v;
        }
    }
    for (var r = 0u; r < RB; r = r + 1u) {
        let col = rows_r[r];
        let masked = (NT_XENT && i == col)
            || (HIT_MASK && col != positive_of(i, n_all) && all(id == id_r[r]))
            || w == 0.0;
        coefs[r] = select(w * exp(dots[r] - bias_r[r] - lse_i), 0.0, masked);
    }
    for (var x = 0u; x < D; x = x + 1u) {
        let v = row_elem(i, c, x);
        for (var r = 0u; r < RB; r = r + 1u) {
            dq_acc[r * D + x] = dq_acc[r * D + x] + coefs[r] * v;
        }
    }
}
//#else
// Column j of the range (at slot c of the tile), component x; its bias and id.
fn col_elem(j: u32, c: u32, x: u32) -> f32 {
    if (TILED) {
        return tile[c * D + x];
    }
    return cols[(range.source_first + j) * D + x];
}

fn col_bias_of(j: u32, c: u32) -> f32 {
    if (TILED) {
        return tile_bias[c];
    }
    return col_bias[range.first + j];
}

fn col_id_of(j: u32, c: u32) -> vec2<u32> {
    if (TILED) {
        return tile_id[c];
    }
    return col_ids[range.first + j];
}

fn sweep_stage(lid: u32, first: u32, n: u32) {
    for (var e = lid; e < n * D; e = e + WG) {
        tile[e] = cols[(range.source_first + first) * D + e];
    }
    for (var c = lid; c < n; c = c + WG) {
        tile_bias[c] = col_bias[range.first + first + c];
        tile_id[c] = col_ids[range.first + first + c];
    }
}

// Whether column j (global jg) is left out of loss row r's softmax.
fn column_masked(r: u32, jg: u32, id: vec2<u32>) -> bool {
    if (range.bank == 0u) {
        return (NT_XENT && jg == rows_r[r]) || (HIT_MASK && jg != pos_r[r] && all(id == id_r[r]));
    }
    return HIT_MASK && all(id == id_r[r]);
}

// The invocation's loss rows against column j of the range: the online log-sum-exp, or (GRAD)
// dq.
fn sweep_visit(j: u32, c: u32) {
    let jg = range.source_first + j;
    let id = col_id_of(j, c);
    let b = col_bias_of(j, c);
    for (var r = 0u; r < RB; r = r + 1u) {
        dots[r] = 0.0;
    }
    for (var x = 0u; x < D; x = x + 1u) {
        let v = col_elem(j, c, x);
        for (var r = 0u; r < RB; r = r + 1u) {
            dots[r] = dots[r] + qv[r * D + x] * v;
        }
    }
    for (var r = 0u; r < RB; r = r + 1u) {
        let masked = column_masked(r, jg, id);
        let s = dots[r] - b;
        if (GRAD) {
            coefs[r] = select(exp(s - lse[r]), 0.0, masked);
        } else if (!masked) {
            acc[r] = lse_push(acc[r], s);
        }
    }
    if (GRAD) {
        for (var x = 0u; x < D; x = x + 1u) {
            let v = col_elem(j, c, x);
            for (var r = 0u; r < RB; r = r + 1u) {
                dq_acc[r * D + x] = dq_acc[r * D + x] + coefs[r] * v;
            }
        }
    }
}
//#endif

// The similarity-ready row element the invocation holds: of k (grad_cols' columns) or q.
fn held_elem(r: u32, c: u32) -> f32 {
//#if GRAD_COLS
    return k[r * D + c];
//#else
    return q[r * D + c];
//#endif
}

// Loads the invocation's RB rows (held_elem), scaled by 1/T: row r is row base + r·WG, clamped
// into [0, n) (a clamped row's results are not written).
fn load_rows(base: u32, n: u32) {
    for (var r = 0u; r < RB; r = r + 1u) {
        let rr = min(base + r * WG, n - 1u);
        rows_r[r] = rr;
        for (var c = 0u; c < D; c = c + 1u) {
            qv[r * D + c] = held_elem(rr, c) * INV_T;
            dq_acc[r * D + c] = 0.0;
        }
        id_r[r] = row_ids[rr];
    }
}

// Writes (or, after the first range, adds) the invocation's accumulated rows into dk
// (grad_cols) or dq.
fn store_rows(base: u32, n: u32, first: bool) {
    for (var r = 0u; r < RB; r = r + 1u) {
        let i = base + r * WG;
        if (i >= n) {
            continue;
        }
        for (var x = 0u; x < D; x = x + 1u) {
            let v = dq_acc[r * D + x];
//#if GRAD_COLS
            dk[i * D + x] = select(dk[i * D + x] + v, v, first);
//#else
            dq[i * D + x] = select(dq[i * D + x] + v, v, first);
//#endif
        }
    }
}

// GRAD false: stats[i] = online (max, Σ exp) of row i's logits over this range's columns,
// started by the batch's first range and carried through the others. GRAD true:
// dq[i] (+)= Σ_j p_ij · col_j over this range's columns, p_ij = exp(s_ij − lse_i).
@compute @workgroup_size(256)
fn sweep_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let base = wg * WG * RB + lid;
    let nq = range.chunk.rows;
    let live = wg < range.chunk.wgs && base < nq;
    let in_bank = range.bank == 1u;
    // The first range of the batch starts the row's sums; the others carry them on.
    let init = !in_bank && range.source_first == 0u;
    // How many columns this range has: all of it for the batch, the filled rows for the bank
    // (none during warm-up). Read through workgroup memory so that the tile loop is uniform.
    if (lid == 0u) {
        var n = range.count;
        if (in_bank) {
            let fill = state[BANK_STATE + 1u];
            n = select(min(range.count, fill - min(fill, range.first)), 0u, state[0] < WARMUP);
        }
        shared_count = n;
    }
    let ncols = workgroupUniformLoad(&shared_count);
    load_rows(base, nq);
    for (var r = 0u; r < RB; r = r + 1u) {
        let rr = rows_r[r];
        pos_r[r] = positive_of(rr, nq);
        acc[r] = vec2<f32>(NEG_BIG, 0.0);
        if (GRAD) {
            lse[r] = stats[rr].x;
        } else if (!init) {
            acc[r] = stats[rr];
        }
    }
    sweep(lid, live, vec2<u32>(0u, ncols), vec2<u32>(0u, ncols));
    if (!live) {
        return;
    }
    if (GRAD) {
        store_rows(base, nq, init);
        return;
    }
    for (var r = 0u; r < RB; r = r + 1u) {
        let i = base + r * WG;
        if (i < nq) {
            stats[i] = acc[r];
        }
    }
}

// l_i = lse_i − s_i,pos(i); stats[i] becomes (lse_i, l_i); per-workgroup partials
// (Σ w·l, Σ w, #{w ≠ 0}, #rows).
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    var part = vec4<f32>(0.0);
    if (wg < chunk.wgs && i < chunk.rows) {
        let pos = positive_of(i, chunk.rows);
        var s = 0.0;
        for (var c = 0u; c < D; c = c + 1u) {
            s = s + q[i * D + c] * INV_T * k[pos * D + c];
        }
        s = s - col_bias[pos];
        let lse = lse_value(stats[i]);
        let l = lse - s;
        stats[i] = vec2<f32>(lse, l);
        let w = row_w[i];
        part = vec4<f32>(w * l, w, select(0.0, 1.0, w != 0.0), 1.0);
    }
    let total = workgroup_sum(lid, part);
    if (lid == 0u && wg < chunk.wgs) {
        partials[partial_index(chunk, 0u, wg)] = total;
    }
}

// dk[j] = Σ_i w_i · p_ij · q_i over this range of loss rows, for the batch columns (the bank
// gets none): each invocation sweeps the rows for its RB columns.
@compute @workgroup_size(256)
fn grad_cols(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let base = wg * WG * RB + lid;
    let n_all = range.chunk.rows;
    let live = wg < range.chunk.wgs && base < n_all;
    load_rows(base, n_all);
    for (var r = 0u; r < RB; r = r + 1u) {
        bias_r[r] = col_bias[rows_r[r]];
    }
    let first = range.first;
    sweep(lid, live, vec2<u32>(first, first + range.count), vec2<u32>(first, first + range.count));
    if (live) {
        store_rows(base, n_all, first == 0u);
    }
}

// The gradient of a loss row (APPLY_ROWS) or a column, with respect to its similarity-ready row,
// before the coefficient; NT-Xent's rows are both (q and k are the same rows).
fn grad_component(r: u32, c: u32) -> f32 {
//#if NT_XENT
    let z = r + ROW_OFF;
    let g_row = row_w[z] * (dq[z * D + c] - q[((z + POS_SHIFT) % NK) * D + c]);
    let i = (z + NK - POS_SHIFT) % NK;
    return (g_row + dk[z * D + c] - row_w[i] * q[i * D + c]) * INV_T;
//#else
//#if APPLY_ROWS
    return row_w[r] * (dq[r * D + c] - k[((r + POS_SHIFT) % NK) * D + c]) * INV_T;
//#else
    let i = (r + NK - POS_SHIFT) % NK;
    return (dk[r * D + c] - row_w[i] * q[i * D + c]) * INV_T;
//#endif
//#endif
}

// After the step's loss: batch row i goes to slot (head + i) mod M of the bank (only the last M
// rows when B > M, so that no slot is written twice); this pass writes the slots of its part
// [first, first + count).
@compute @workgroup_size(256)
fn bank_write(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let batch = range.chunk.rows;
    if (wg >= range.chunk.wgs || i >= batch) {
        return;
    }
    // A refused step (class ids out of range, a bad value in a device buffer) changes no bank.
    if (step_refused(scalars[S_INVALID], scalars[S_NONFINITE])) {
        return;
    }
    if (batch > BANK_M && i < batch - BANK_M) {
        return;
    }
    let slot = (state[BANK_STATE] + i % BANK_M) % BANK_M;
    if (slot < range.first || slot >= range.first + range.count) {
        return;
    }
    let at = slot - range.first;
    for (var c = 0u; c < D; c = c + 1u) {
        bank[at * D + c] = k[i * D + c];
    }
    bank_bias[slot] = col_bias[i];
    bank_ids[slot] = row_ids[i];
}

// head ← (head + B) mod M, fill ← min(fill + B, M), once every part is written.
@compute @workgroup_size(1)
fn bank_advance() {
    if (step_refused(scalars[S_INVALID], scalars[S_NONFINITE])) {
        return;
    }
    let batch = chunk.rows;
    let head = state_rw[BANK_STATE];
    state_rw[BANK_STATE] = (head + batch % BANK_M) % BANK_M;
    let fill = state_rw[BANK_STATE + 1u];
    state_rw[BANK_STATE + 1u] = min(fill, BANK_M) + min(batch, BANK_M - min(fill, BANK_M));
}

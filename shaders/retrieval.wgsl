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

// What one invocation carries through its sweep.
var<private> qv: array<f32, D>;
var<private> dq_acc: array<f32, D>;
var<private> acc: vec2<f32>;
var<private> lse: f32;
var<private> row: u32;
var<private> pos: u32;
var<private> my_id: vec2<u32>;
var<private> bias: f32;

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

// Column `row` (this invocation's batch column) against loss row i: dk += w_i p_ij q_i.
fn sweep_visit(i: u32, c: u32) {
    let n_all = range.chunk.rows;
    let w = row_weight(i, c);
    let masked = (NT_XENT && i == row)
        || (HIT_MASK && row != positive_of(i, n_all) && all(row_id(i, c, n_all) == my_id));
    if (masked || w == 0.0) {
        return;
    }
    var s = 0.0;
    for (var x = 0u; x < D; x = x + 1u) {
        s = s + qv[x] * row_elem(i, c, x);
    }
    let p = w * exp(s - bias - row_lse(i, c));
    for (var x = 0u; x < D; x = x + 1u) {
        dq_acc[x] = dq_acc[x] + p * row_elem(i, c, x);
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

// Loss row `row` against column j of the range: the online log-sum-exp, or (GRAD) dq.
fn sweep_visit(j: u32, c: u32) {
    let jg = range.source_first + j;
    var masked = false;
    if (range.bank == 0u) {
        masked = (NT_XENT && jg == row)
            || (HIT_MASK && jg != pos && all(col_id_of(j, c) == my_id));
    } else {
        masked = HIT_MASK && all(col_id_of(j, c) == my_id);
    }
    if (masked) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < D; k = k + 1u) {
        s = s + qv[k] * col_elem(j, c, k);
    }
    s = s - col_bias_of(j, c);
    if (GRAD) {
        let p = exp(s - lse);
        for (var k = 0u; k < D; k = k + 1u) {
            dq_acc[k] = dq_acc[k] + p * col_elem(j, c, k);
        }
    } else {
        acc = lse_push(acc, s);
    }
}
//#endif

// GRAD false: stats[i] = online (max, Σ exp) of row i's logits over this range's columns,
// started by the batch's first range and carried through the others. GRAD true:
// dq[i] (+)= Σ_j p_ij · col_j over this range's columns, p_ij = exp(s_ij − lse_i).
@compute @workgroup_size(256)
fn sweep_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let nq = range.chunk.rows;
    let live = wg < range.chunk.wgs && i < nq;
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
    row = min(i, nq - 1u);
    for (var c = 0u; c < D; c = c + 1u) {
        qv[c] = q[row * D + c] * INV_T;
    }
    my_id = row_ids[row];
    pos = positive_of(row, nq);
    acc = vec2<f32>(NEG_BIG, 0.0);
    if (GRAD) {
        lse = stats[row].x;
    } else if (!init) {
        acc = stats[row];
    }
    sweep(lid, live, vec2<u32>(0u, ncols), vec2<u32>(0u, ncols));
    if (live) {
        if (GRAD) {
            for (var k = 0u; k < D; k = k + 1u) {
                if (init) {
                    dq[i * D + k] = dq_acc[k];
                } else {
                    dq[i * D + k] = dq[i * D + k] + dq_acc[k];
                }
            }
        } else {
            stats[i] = acc;
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
// gets none): one invocation per column sweeps the rows.
@compute @workgroup_size(256)
fn grad_cols(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let j = wg * WG + lid;
    let n_all = range.chunk.rows;
    let live = wg < range.chunk.wgs && j < n_all;
    row = min(j, n_all - 1u);
    for (var c = 0u; c < D; c = c + 1u) {
        qv[c] = k[row * D + c] * INV_T;
    }
    bias = col_bias[row];
    my_id = row_ids[row];
    let first = range.first;
    sweep(lid, live, vec2<u32>(first, first + range.count), vec2<u32>(first, first + range.count));
    if (live) {
        for (var x = 0u; x < D; x = x + 1u) {
            if (first == 0u) {
                dk[j * D + x] = dq_acc[x];
            } else {
                dk[j * D + x] = dk[j * D + x] + dq_acc[x];
            }
        }
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

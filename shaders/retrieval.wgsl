// Softmax over columns for in-batch and cross-batch softmax and the contrastive terms
// (LOSSES.md, "Retrieval and embedding terms"), flash-attention style: no score matrix is ever
// stored. One invocation per loss row i streams the columns a tile of TC at a time through
// workgroup memory with an online log-sum-exp; the gradient passes recompute the scores.
//
// Rust prepends common.wgsl, embedding.wgsl's shared part and the constants: D (dimension), TC
// (columns per tile), INV_T (1/T), NT_XENT (the rows are [a; b]: column i is not a negative of
// row i, and row i's positive is column (i + B) mod 2B; else it is column i), HIT_MASK
// (accidental hits by id), and for a memory bank BANK_M (rows), BANK_STATE (the state word of its
// head; the fill count follows), WARMUP (steps before the bank is used). The loss rows and batch
// columns (as many of each) are the chunk's `rows`, not a constant: loops whose trip count the
// shader compiler can see get unrolled, and GL llvmpipe then takes minutes to compile them.
//
// A pass covers a range of p1 columns of one source: the batch or a part of the bank (bit 0 of p2),
// starting at column p2 >> 1 of the source's embeddings and at index p0 of its log_q and id
// arrays. The bank's embeddings are split into parts that each fit one binding; every source is
// split into ranges short enough for llvmpipe, which stops any invocation's loops after 65,535
// iterations in all (its loop limiter), so no dispatch asks more of one invocation.

// TILED: columns are staged through workgroup memory a tile at a time (barriers in the loop);
// otherwise each invocation reads them from the storage buffer. GL llvmpipe takes minutes to
// compile a loop over a tile inside a loop with barriers, so GL reads them directly.
var<workgroup> tile: array<f32, TILE_FLOATS>;
var<workgroup> tile_bias: array<f32, TC>;
var<workgroup> tile_id: array<vec2<u32>, TC>;
var<workgroup> shared_count: u32;

fn positive_of(i: u32, n: u32) -> u32 {
    if (NT_XENT) {
        return (i + n / 2u) % n;
    }
    return i;
}

//// kernel sweep_rows
// GRAD false: stats[i] = online (max, Σ exp) of row i's logits over this source's columns,
// started by the batch source and carried through the bank's parts. GRAD true:
// dq[i] (+)= Σ_j p_ij · col_j over this source's columns, p_ij = exp(s_ij − lse_i).
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> cols: array<f32>;
@group(0) @binding(4) var<storage, read> col_bias: array<f32>;
@group(0) @binding(5) var<storage, read> col_ids: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> row_ids: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;

// Column j of the source's embeddings (at c in the current tile), component x; the bias and id of
// the range's column j (`off`: the range's first index in the log_q and id arrays).
fn col_elem(j: u32, c: u32, x: u32) -> f32 {
    if (TILED) {
        return tile[c * D + x];
    }
    return cols[j * D + x];
}

fn col_bias_of(j: u32, c: u32, off: u32) -> f32 {
    if (TILED) {
        return tile_bias[c];
    }
    return col_bias[off + j];
}

fn col_id_of(j: u32, c: u32, off: u32) -> vec2<u32> {
    if (TILED) {
        return tile_id[c];
    }
    return col_ids[off + j];
}

@compute @workgroup_size(256)
fn sweep_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let nq = chunk.rows;
    let live = wg < chunk.wgs && i < nq;
    let bank = (chunk.p2 & 1u) == 1u;
    let first = chunk.p2 >> 1u;
    // The first range of the batch starts the row's sums; the others carry them on.
    let init = !bank && first == 0u;
    // How many columns this range has: all of it for the batch, the filled rows for the bank
    // (none during warm-up). Read through workgroup memory so that the tile loop is uniform.
    if (lid == 0u) {
        var n = chunk.p1;
        if (bank) {
            let fill = state[BANK_STATE + 1u];
            n = select(min(chunk.p1, fill - min(fill, chunk.p0)), 0u, state[0] < WARMUP);
        }
        shared_count = n;
    }
    let ncols = workgroupUniformLoad(&shared_count);
    let row = min(i, nq - 1u);
    var qv: array<f32, D>;
    for (var c = 0u; c < D; c = c + 1u) {
        qv[c] = q[row * D + c] * INV_T;
    }
    let my_id = row_ids[row];
    let pos = positive_of(row, nq);
    var acc = vec2<f32>(NEG_BIG, 0.0);
    var dq_acc: array<f32, D>;
    var lse = 0.0;
    if (GRAD) {
        lse = stats[row].x;
    } else if (!init) {
        acc = stats[row];
    }
    let off = chunk.p0;
    let span = select(max(ncols, 1u), TC, TILED);
    for (var base = 0u; base < ncols; base = base + span) {
        let n = min(span, ncols - base);
        if (TILED) {
            for (var e = lid; e < n * D; e = e + WG) {
                tile[e] = cols[(first + base) * D + e];
            }
            for (var c = lid; c < n; c = c + WG) {
                tile_bias[c] = col_bias[off + base + c];
                tile_id[c] = col_ids[off + base + c];
            }
            workgroupBarrier();
        }
        if (live) {
            for (var c = 0u; c < n; c = c + 1u) {
                let j = base + c;
                let jg = first + j;
                var masked = false;
                if (!bank) {
                    masked = (NT_XENT && jg == row)
                        || (HIT_MASK && jg != pos && all(col_id_of(j, c, off) == my_id));
                } else {
                    masked = HIT_MASK && all(col_id_of(j, c, off) == my_id);
                }
                if (masked) {
                    continue;
                }
                var s = 0.0;
                for (var k = 0u; k < D; k = k + 1u) {
                    s = s + qv[k] * col_elem(jg, c, k);
                }
                s = s - col_bias_of(j, c, off);
                if (GRAD) {
                    let p = exp(s - lse);
                    for (var k = 0u; k < D; k = k + 1u) {
                        dq_acc[k] = dq_acc[k] + p * col_elem(jg, c, k);
                    }
                } else {
                    acc = lse_push(acc, s);
                }
            }
        }
        if (TILED) {
            workgroupBarrier();
        }
    }
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

//// kernel finish
// l_i = lse_i − s_i,pos(i); stats[i] becomes (lse_i, l_i); per-workgroup partials
// (Σ w·l, Σ w, #{w ≠ 0}, #rows).
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> col_bias: array<f32>;
@group(0) @binding(4) var<storage, read> row_w: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

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

//// kernel grad_cols
// dk[j] = Σ_i w_i · p_ij · q_i over the loss rows, for the batch columns (the bank gets none):
// one invocation per column streams the rows through workgroup memory.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> col_bias: array<f32>;
@group(0) @binding(4) var<storage, read> ids: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read> row_w: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;

var<workgroup> tile_w: array<f32, TC>;

// Loss row i (at c in the current tile): component x, lse, weight, id.
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
    return ids[i % n_all];
}

@compute @workgroup_size(256)
fn grad_cols(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let j = wg * WG + lid;
    let n_all = chunk.rows;
    let live = wg < chunk.wgs && j < n_all;
    let col = min(j, n_all - 1u);
    var kv: array<f32, D>;
    for (var c = 0u; c < D; c = c + 1u) {
        kv[c] = k[col * D + c] * INV_T;
    }
    let bias = col_bias[col];
    let my_id = ids[col];
    var acc: array<f32, D>;
    // This dispatch's range of loss rows [p0, p0 + p1) (see the top of the file).
    let first = chunk.p0;
    let count = chunk.p1;
    let span = select(max(count, 1u), TC, TILED);
    for (var base = 0u; base < count; base = base + span) {
        let n = min(span, count - base);
        if (TILED) {
            for (var e = lid; e < n * D; e = e + WG) {
                tile[e] = q[(first + base) * D + e];
            }
            for (var c = lid; c < n; c = c + WG) {
                let i = first + base + c;
                tile_bias[c] = stats[i].x;
                tile_w[c] = row_w[i];
                tile_id[c] = ids[i % n_all];
            }
            workgroupBarrier();
        }
        if (live) {
            for (var c = 0u; c < n; c = c + 1u) {
                let i = first + base + c;
                let w = row_weight(i, c);
                let masked = (NT_XENT && i == col)
                    || (HIT_MASK && col != positive_of(i, n_all) && all(row_id(i, c, n_all) == my_id));
                if (masked || w == 0.0) {
                    continue;
                }
                var s = 0.0;
                for (var x = 0u; x < D; x = x + 1u) {
                    s = s + kv[x] * row_elem(i, c, x);
                }
                let p = w * exp(s - bias - row_lse(i, c));
                for (var x = 0u; x < D; x = x + 1u) {
                    acc[x] = acc[x] + p * row_elem(i, c, x);
                }
            }
        }
        if (TILED) {
            workgroupBarrier();
        }
    }
    if (live) {
        for (var x = 0u; x < D; x = x + 1u) {
            if (first == 0u) {
                dk[j * D + x] = acc[x];
            } else {
                dk[j * D + x] = dk[j * D + x] + acc[x];
            }
        }
    }
}

//// kernel bank_write
// After the step's loss: batch row i goes to slot (head + i) mod M of the bank (only the last M
// rows when B > M, so that no slot is written twice); this pass writes the slots in its part
// [p0, p0 + p1).
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> col_bias: array<f32>;
@group(0) @binding(4) var<storage, read> ids: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> bank: array<f32>;
@group(0) @binding(6) var<storage, read_write> bank_bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> bank_ids: array<vec2<u32>>;

@compute @workgroup_size(256)
fn bank_write(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let batch = chunk.rows;
    if (wg >= chunk.wgs || i >= batch) {
        return;
    }
    if (batch > BANK_M && i < batch - BANK_M) {
        return;
    }
    let slot = (state[BANK_STATE] + i % BANK_M) % BANK_M;
    if (slot < chunk.p0 || slot >= chunk.p0 + chunk.p1) {
        return;
    }
    let at = slot - chunk.p0;
    for (var c = 0u; c < D; c = c + 1u) {
        bank[at * D + c] = k[i * D + c];
    }
    bank_bias[slot] = col_bias[i];
    bank_ids[slot] = ids[i];
}

//// kernel bank_advance
// head ← (head + B) mod M, fill ← min(fill + B, M), once every part is written.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;

@compute @workgroup_size(1)
fn bank_advance() {
    let batch = chunk.rows;
    let head = state[BANK_STATE];
    state[BANK_STATE] = (head + batch % BANK_M) % BANK_M;
    let fill = state[BANK_STATE + 1u];
    state[BANK_STATE + 1u] = min(fill, BANK_M) + min(batch, BANK_M - min(fill, BANK_M));
}

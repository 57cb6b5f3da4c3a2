// Circle loss and multi-similarity loss (LOSSES.md, "Retrieval and embedding terms") over the
// cosine matrix S of a batch of normalised embeddings, never stored: one invocation per row i
// streams the rows j a tile of TC at a time through workgroup memory.
//
// Rust prepends common.wgsl, embedding.wgsl's shared part and the constants: D, TC, CIRCLE
// (else multi-similarity), MARGIN and GAMMA (circle), ALPHA, BETA and LAMB (multi-similarity).
// Pair (i, j), j ≠ i, is a positive when the rows have the same key (label and session), a
// negative otherwise. A dispatch visits the columns [p0, p0 + p1) (llvmpipe stops any
// invocation's loops after 65,535 iterations in all, so the columns are split into ranges); the
// forward pass carries its sums from one range to the next (p2: bit 0 first range, bit 1 last). The batch size is the chunk's `rows`, not a constant: loops whose trip
// count the shader compiler can see get unrolled, and GL llvmpipe then takes minutes to compile.

// TILED: rows are staged through workgroup memory a tile at a time (barriers in the loop);
// otherwise each invocation reads them from the storage buffer. GL llvmpipe takes minutes to
// compile a loop over a tile inside a loop with barriers, so GL reads them directly.
var<workgroup> tile: array<f32, TILE_FLOATS>;
var<workgroup> tile_key: array<vec4<u32>, TC>;
var<workgroup> tile_stats: array<vec4<f32>, TC>;

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

// Column j (tile slot c) of the sweep: from the staged tile, or straight from the buffer where
// TILED is false. Every kernel below binds `e` and `keys`.
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

//// kernel forward
// stats[i] = (lse_neg, lse_pos, factor, valid); per-workgroup partials (Σ w·l, Σ w, #{w ≠ 0},
// #counted rows).
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> e: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> row_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<f32>>;
// The running sums between the dispatches of one row's columns: (max, Σ) of the negatives and
// the positives, and their counts.
@group(0) @binding(6) var<storage, read_write> carry: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> counts: array<vec2<u32>>;

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let b = chunk.rows;
    let live = wg < chunk.wgs && i < b;
    let row = min(i, b - 1u);
    var ev: array<f32, D>;
    for (var c = 0u; c < D; c = c + 1u) {
        ev[c] = e[row * D + c];
    }
    let my_key = keys[row];
    // Multi-similarity's log(1 + Σ e^x) is the log-sum-exp of {0} ∪ {x}: start at (0, 1).
    var neg = select(vec2<f32>(0.0, 1.0), vec2<f32>(NEG_BIG, 0.0), CIRCLE);
    var pos = neg;
    var n_pos = 0u;
    var n_neg = 0u;
    let first = chunk.p0;
    let count = chunk.p1;
    if ((chunk.p2 & 1u) == 0u) {
        let cv = carry[row];
        neg = cv.xy;
        pos = cv.zw;
        let cn = counts[row];
        n_pos = cn.x;
        n_neg = cn.y;
    }
    let span = select(max(count, 1u), TC, TILED);
    for (var base = 0u; base < count; base = base + span) {
        let n = min(span, count - base);
        if (TILED) {
            for (var x = lid; x < n * D; x = x + WG) {
                tile[x] = e[(first + base) * D + x];
            }
            for (var c = lid; c < n; c = c + WG) {
                tile_key[c] = keys[first + base + c];
            }
            workgroupBarrier();
        }
        if (live) {
            for (var c = 0u; c < n; c = c + 1u) {
                let j = first + base + c;
                if (j == row) {
                    continue;
                }
                var s = 0.0;
                for (var x = 0u; x < D; x = x + 1u) {
                    s = s + ev[x] * other_elem(j, c, x);
                }
                let positive = all(other_key(j, c) == my_key);
                let v = pair_exponent(s, positive);
                if (positive) {
                    pos = lse_push(pos, v);
                    n_pos = n_pos + 1u;
                } else {
                    neg = lse_push(neg, v);
                    n_neg = n_neg + 1u;
                }
            }
        }
        if (TILED) {
            workgroupBarrier();
        }
    }
    var part = vec4<f32>(0.0);
    let last = (chunk.p2 & 2u) != 0u;
    if (live && !last) {
        carry[i] = vec4<f32>(neg, pos);
        counts[i] = vec2<u32>(n_pos, n_neg);
    }
    if (live && last) {
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
    }
    let total = workgroup_sum(lid, part);
    if (lid == 0u && wg < chunk.wgs && last) {
        partials[partial_index(chunk, 0u, wg)] = total;
    }
}

//// kernel backward
// de[i] = Σ_j (G_ij + G_ji) ê_j, G_ij = d l_i / d S_ij (S is symmetric, so S_ij reaches both
// rows' losses); scaled by the term's coefficient after the combine.
@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> e: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> stats: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> de: array<f32>;

fn other_stats(j: u32, c: u32) -> vec4<f32> {
    if (TILED) {
        return tile_stats[c];
    }
    return stats[j];
}

@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let i = wg * WG + lid;
    let b = chunk.rows;
    let live = wg < chunk.wgs && i < b;
    let row = min(i, b - 1u);
    var ev: array<f32, D>;
    for (var c = 0u; c < D; c = c + 1u) {
        ev[c] = e[row * D + c];
    }
    let my_key = keys[row];
    let my_stats = stats[row];
    var acc: array<f32, D>;
    let first = chunk.p0;
    let count = chunk.p1;
    let span = select(max(count, 1u), TC, TILED);
    for (var base = 0u; base < count; base = base + span) {
        let n = min(span, count - base);
        if (TILED) {
            for (var x = lid; x < n * D; x = x + WG) {
                tile[x] = e[(first + base) * D + x];
            }
            for (var c = lid; c < n; c = c + WG) {
                tile_key[c] = keys[first + base + c];
                tile_stats[c] = stats[first + base + c];
            }
            workgroupBarrier();
        }
        if (live) {
            for (var c = 0u; c < n; c = c + 1u) {
                let j = first + base + c;
                if (j == row) {
                    continue;
                }
                let other = other_stats(j, c);
                if (my_stats.z == 0.0 && other.z == 0.0) {
                    continue;
                }
                var s = 0.0;
                for (var x = 0u; x < D; x = x + 1u) {
                    s = s + ev[x] * other_elem(j, c, x);
                }
                let positive = all(other_key(j, c) == my_key);
                var g = 0.0;
                if (my_stats.z != 0.0) {
                    g = pair_gradient(s, positive, my_stats);
                }
                if (other.z != 0.0) {
                    g = g + pair_gradient(s, positive, other);
                }
                for (var x = 0u; x < D; x = x + 1u) {
                    acc[x] = acc[x] + g * other_elem(j, c, x);
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
                de[i * D + x] = acc[x];
            } else {
                de[i * D + x] = de[i * D + x] + acc[x];
            }
        }
    }
}

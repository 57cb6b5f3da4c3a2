// `jrc_loss` (joint ranking-calibration, EasyRec `jrc_loss`; docs/LOSSES.md, "jrc_loss").
// Host side: src/losses/jrc.rs; reference: src/reference/jrc.rs.
//
// After the session grouping (session.wgsl) `jrc_gather` puts each row's (z0, z1, y, w) in
// sorted order. With SAME_LABEL one sweep (sweep.wgsl) gives every row its session's
// log-sum-exp of both columns and label counts, hence its listwise loss and d ge/dz. Without
// it a first sweep gives each row the log-sum-exp over itself and the opposite-label rows of its
// session (E_i, written beside the row in `rows_out`), and a second (OPPOSITE_GRADIENT) sums,
// for each row, what it receives through the other rows' E. The calibration CE is per row.
// Partials: ce in slot SLOT ((Σ w·ce, Σ w, #{w ≠ 0}, 0)), ge in GE_SLOT (Σ L_i, divided by B).
// After the combine, `jrc_apply` scatters both parts' gradients into the logits' gradient.

//#import grouping.wgsl
//#import sweep.wgsl
//#import weights.wgsl

// Each row competes with every row of its session (else only with the opposite-label rows).
const SAME_LABEL: bool = true; // @spec
// The second sweep without SAME_LABEL: the gradient through the other rows' E.
const OPPOSITE_GRADIENT: bool = false; // @spec
// The partial slots of the calibration and listwise parts.
const SLOT: u32 = 0u; // @spec
const GE_SLOT: u32 = 1u; // @spec
// The two parts' gradient coefficients in the scalars.
const COEF: u32 = 0u; // @spec
const COEF2: u32 = 0u; // @spec
// The pass after the combine adds to a gradient another term wrote this step.
const ACCUMULATE: bool = false; // @spec

@group(0) @binding(0) var<storage, read> chunk: Chunk;
// Sorted rows: (z0, z1, y, w); with E_i in .w after the opposite-label softmax.
@group(0) @binding(1) var<storage, read_write> rows_out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rows: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<f32>>;
// d ge/dz per sorted row, before the coefficient.
@group(0) @binding(6) var<storage, read_write> jrc_grad: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> scalars: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad: array<f32>;
@group(0) @binding(9) var<storage, read> jrc_rows: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> jrc_grad_in: array<vec2<f32>>;

// log(e^a + e^b) without overflow.
fn lse2(a: f32, b: f32) -> f32 {
    return max(a, b) + log1p_f(exp(-abs(a - b)));
}

// The row's softmax CE over its two columns, with its sample weight: (w·ce, w, w ≠ 0, 0).
fn jrc_ce_partial(row: vec4<f32>) -> vec4<f32> {
    let ce = lse2(row.x, row.y) - select(row.x, row.y, row.z == 1.0);
    return vec4<f32>(row.w * ce, row.w, select(0.0, 1.0, row.w != 0.0), 0.0);
}

// d(w·ce)/dz: w·(softmax − onehot(y)).
fn jrc_ce_grad(row: vec4<f32>) -> vec2<f32> {
    let lse = lse2(row.x, row.y);
    let onehot = select(vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0), row.z == 1.0);
    return row.w * (vec2<f32>(exp(row.x - lse), exp(row.y - lse)) - onehot);
}

@compute @workgroup_size(256)
fn jrc_gather(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let r = batch_row(p);
    rows_out[p] = vec4<f32>(logits[2u * r], logits[2u * r + 1u], labels[r], sample_weight(r));
}

var<workgroup> tile: array<vec4<f32>, 256>;
var<workgroup> sweep_span: vec2<u32>;

// What one invocation carries through its sweep.
var<private> me: vec4<f32>;
var<private> lse0: vec2<f32>;
var<private> lse1: vec2<f32>;
var<private> positives: f32;
var<private> negatives: f32;
var<private> column1: bool;
var<private> lse: vec2<f32>;
var<private> row_grad: vec2<f32>;

fn sweep_stage(lid: u32, first: u32, n: u32) {
    if (lid < n) {
        tile[lid] = rows[first + lid];
    }
}

fn sweep_visit(item: u32, slot: u32) {
    let o = tile[slot];
//#if SAME_LABEL
    lse1 = lse_push(lse1, o.y);
    lse0 = lse_push(lse0, o.x);
    if (o.z == 1.0) {
        positives = positives + 1.0;
    } else {
        negatives = negatives + 1.0;
    }
//#else
//#if OPPOSITE_GRADIENT
    // Rows hold E_i in .w: this row's logit in the column of every opposite-label row i.
    if (o.z != me.z) {
        if (o.z == 1.0) {
            row_grad.y = row_grad.y + exp(me.y - o.w);
        } else {
            row_grad.x = row_grad.x + exp(me.x - o.w);
        }
    }
//#else
    if (o.z != me.z) {
        lse = lse_push(lse, select(o.x, o.y, column1));
    }
//#endif
//#endif
}

// Writes the two parts' partial sums of the workgroup.
fn write_partials(lid: u32, wg: u32, sweep_chunk: Chunk, ce_acc: vec4<f32>, ge_acc: vec4<f32>) {
    let ce_sum = workgroup_sum(lid, ce_acc);
    let ge_sum = workgroup_sum(lid, ge_acc);
    if (lid == 0u && wg < sweep_chunk.wgs) {
        partials[partial_index(sweep_chunk, SLOT, wg)] = ce_sum;
        partials[partial_index(sweep_chunk, GE_SLOT, wg)] = ge_sum;
    }
}

// The row's results once its session is swept.
fn finish_row(lid: u32, wg: u32, p: u32, valid: bool) {
//#if SAME_LABEL
    var ce_acc = vec4<f32>(0.0);
    var ge_acc = vec4<f32>(0.0);
    if (valid) {
        let l1 = lse1.x + log(lse1.y);
        let l0 = lse0.x + log(lse0.y);
        let positive = me.z == 1.0;
        ce_acc = jrc_ce_partial(me);
        ge_acc = vec4<f32>(select(l0 - me.x, l1 - me.y, positive), 0.0, 0.0, 0.0);
        jrc_grad[p] = vec2<f32>(
            select(-1.0, 0.0, positive) + negatives * exp(me.x - l0),
            select(0.0, -1.0, positive) + positives * exp(me.y - l1),
        );
    }
    write_partials(lid, wg, chunk, ce_acc, ge_acc);
//#else
//#if OPPOSITE_GRADIENT
    if (valid) {
        if (me.z == 1.0) {
            row_grad.y = row_grad.y + exp(me.y - me.w) - 1.0;
        } else {
            row_grad.x = row_grad.x + exp(me.x - me.w) - 1.0;
        }
        jrc_grad[p] = row_grad;
    }
//#else
    var ce_acc = vec4<f32>(0.0);
    var ge_acc = vec4<f32>(0.0);
    if (valid) {
        let e = lse.x + log(lse.y);
        rows_out[p] = vec4<f32>(me.x, me.y, me.z, e);
        ce_acc = jrc_ce_partial(me);
        ge_acc = vec4<f32>(e - select(me.x, me.y, column1), 0.0, 0.0, 0.0);
    }
    write_partials(lid, wg, chunk, ce_acc, ge_acc);
//#endif
//#endif
}

@compute @workgroup_size(256)
fn jrc_sweep(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    let valid = wg < chunk.wgs && p < chunk.rows;
    var range = vec2<u32>(0u, 0u);
    if (valid) {
        me = rows[p];
        range = session_range(p, chunk.rows);
    }
    // The workgroup's span of sorted rows: its first row's session start to its last row's end.
    if (lid == 0u) {
        sweep_span.x = range.x;
    }
    if (valid && (lid == WG - 1u || p == chunk.rows - 1u)) {
        sweep_span.y = range.y;
    }
    let s = workgroupUniformLoad(&sweep_span);
    lse1 = vec2<f32>(NEG_BIG, 0.0);
    lse0 = vec2<f32>(NEG_BIG, 0.0);
    column1 = me.z == 1.0;
    lse = vec2<f32>(select(me.x, me.y, column1), 1.0);
    sweep(lid, valid, s, range);
    finish_row(lid, wg, p, valid);
}

@compute @workgroup_size(256)
fn jrc_apply(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let g = scalars[COEF] * jrc_ce_grad(jrc_rows[p]) + scalars[COEF2] * jrc_grad_in[p];
    let at = batch_row(p) * 2u;
    if (ACCUMULATE) {
        grad[at] = grad[at] + g.x;
        grad[at + 1u] = grad[at + 1u] + g.y;
    } else {
        grad[at] = g.x;
        grad[at + 1u] = g.y;
    }
}

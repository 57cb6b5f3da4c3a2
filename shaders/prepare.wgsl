// The prepare dispatch of a row group with batch-wide terms (one workgroup, after the statistics
// pass and any selection): turns the statistics into the per-row factors the loss pass reads from
// `aux`, folding each term's normaliser in so that its partial sums are already its value.
// The terms are generated per group (src/losses/statistics.rs) and spliced in:
//   fn prepare_sums(lid: u32)   the F1 terms' statistics, summed over the workgroups (barriers)
//   fn prepare_terms()          each term's factors, from the functions below (one invocation)

//#import common.wgsl

@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> aux: array<u32>;
@group(0) @binding(3) var<storage, read> state: array<u32>;

fn set_aux_f32(i: u32, x: f32) {
    aux[i] = bitcast<u32>(x);
}

// Sum of the statistics slot `slot` over every workgroup of the group's statistics pass.
fn slot_sum(lid: u32, slot: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < chunk.term_stride; i = i + WG) {
        acc = acc + partials[chunk.wg_base + slot * chunk.term_stride + i];
    }
    return workgroup_sum(lid, acc);
}

// GHM-C: from the valid-row count n_k of every bin (aux[hist ..], zeroed here for the next step),
// β'_k = β_k / tot = 1 / (d_k · n_nonempty) with d_k = n_k, or with momentum the EMA acc_k of the
// counts (committed state at state[acc ..]; the new values go to aux[pending ..] and become state
// only when the step succeeds). Empty bins get 0.
fn ghm_prepare(hist: u32, beta: u32, pending: u32, acc: u32, bins: u32, momentum: f32) {
    var nonempty = 0u;
    for (var k = 0u; k < bins; k = k + 1u) {
        if (aux[hist + k] != 0u) {
            nonempty = nonempty + 1u;
        }
    }
    for (var k = 0u; k < bins; k = k + 1u) {
        let n = aux[hist + k];
        var a = bitcast<f32>(state[acc + k]);
        var b = 0.0;
        if (n != 0u) {
            var d = f32(n);
            if (momentum > 0.0) {
                a = momentum * a + (1.0 - momentum) * f32(n);
                d = a;
            }
            b = 1.0 / (d * f32(nonempty));
        }
        set_aux_f32(beta + k, b);
        set_aux_f32(pending + k, a);
        aux[hist + k] = 0u;
    }
}

// F1-reweighted: from s0 = (tp, n_pos, Σ_pos w·CE, Σ_neg w·CE) and s1 = (Σ_pos w, Σ_neg w,
// #pos w≠0, #neg w≠0) writes aux[out] = neg_w, aux[out+1] = 1/D, aux[out+2] = dL/dneg_w ·
// dneg_w/dtp (the gradient every logit gets through tp, per σ(1 − σ)). docs/LOSSES.md, "F1-reweighted".
fn f1_prepare(out: u32, s0: vec4<f32>, s1: vec4<f32>, beta_square: f32, reduction: u32, rows: f32) {
    let tp = s0.x;
    let n_pos = s0.y;
    let den = (beta_square - 1.0) * n_pos + tp + 1e-8;
    let neg_w = tp / den;
    let dneg_dtp = ((beta_square - 1.0) * n_pos + 1e-8) / (den * den);
    var d = 1.0;
    if (reduction == 0u) {
        d = s1.z + select(0.0, s1.w, neg_w != 0.0);
    } else if (reduction == 1u) {
        d = s1.x + neg_w * s1.y;
    } else if (reduction == 2u) {
        d = rows;
    }
    var inv_d = 0.0;
    var through_tp = 0.0;
    if (d != 0.0) {
        inv_d = 1.0 / d;
        var dl = s0.w * inv_d;
        if (reduction == 1u) {
            dl = dl - (s0.z + neg_w * s0.w) * s1.y * inv_d * inv_d;
        }
        through_tp = dl * dneg_dtp;
    }
    set_aux_f32(out, neg_w);
    set_aux_f32(out + 1u, inv_d);
    set_aux_f32(out + 2u, through_tp);
}

// OHEM: the kept rows with a positive value are min(k, #positive) (the k largest are all positive
// when at least k are); their mean divides by that count. aux[positive] is zeroed for the next step.
fn ohem_prepare(positive: u32, scale: u32, k: u32) {
    let count = min(k, aux[positive]);
    var s = 0.0;
    if (count != 0u) {
        s = 1.0 / f32(count);
    }
    set_aux_f32(scale, s);
    aux[positive] = 0u;
}

// ziln_loss: from the count of positive labels (aux[base], zeroed here for the next step) the
// factors its row function reads: aux[base+1] = 1/B, aux[base+2] = 1/(#positive + 1e-8) (EasyRec
// num_pos = reduce_sum(positive) + 1e-8, in f32).
fn ziln_prepare(base: u32, rows: f32) {
    set_aux_f32(base + 1u, 1.0 / rows);
    set_aux_f32(base + 2u, 1.0 / (f32(aux[base]) + 1e-8));
    aux[base] = 0u;
}

//#splice terms
fn prepare_sums(lid: u32) {}

fn prepare_terms() {}
//#end

@compute @workgroup_size(256)
fn prepare(@builtin(local_invocation_index) lid: u32) {
    prepare_sums(lid);
    if (lid != 0u) {
        return;
    }
    prepare_terms();
}

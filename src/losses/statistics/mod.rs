//! The batch-wide terms (`ghm_c`, `f1_reweighted_loss`, and `binary_focal_loss` with OHEM;
//! docs/LOSSES.md, "Gradient-density terms" and "Batch-wide terms"; reference
//! `src/reference/ghm.rs`, `f1.rs`, `combine.rs`) and the passes a row group runs before its
//! loss pass when some of its terms need a quantity of the whole batch (GHM-C's bin counts,
//! OHEM's k-th largest value, F1's Σσ(x), `ziln_loss`'s count of positive labels):
//!
//! 1. the statistics pass (`shaders/statistics.wgsl`) reads the tensors of those terms once:
//!    GHM-C counts valid rows per bin (workgroup atomics, then one global add per bin), OHEM
//!    writes each row's order key (`order_key(w·l)`) and counts the positive values, F1 sums σ(x)
//!    and the class sums into per-workgroup partials, ZILN counts the labels > 0 (reading only
//!    its labels: [`RowTerm::statistics_tensors`]);
//! 2. OHEM terms run the selection ([`super::select`]) over their keys;
//! 3. one `prepare` workgroup (`shaders/prepare.wgsl`) turns all of it into the factors the loss
//!    pass reads.
//!
//! Everything stays on the GPU, in the step's single submission. With these terms the group reads
//! its tensors twice (statistics, then loss and gradient), three times when the gradient scale
//! depends on this step's values (flooding, EMA reweighting).

pub(crate) mod params;

use super::common::TermAux;
use super::family::{
    wrong_params, Family, Form, LossType, Resolved, Role, RoleKind, RowLoss, RowTerm,
};
use super::params::ParamSpec;
use super::rows::kernel::{row_term, Buffers, RowKernel, FIRST_BINDING, ROWS_PER_INVOCATION};
use super::rows::{check_columns, row_form, smoothed};
use super::select;
use crate::batch::Shapes;
use crate::combine::reduction_code;
use crate::config::{LossTerm, Reduction};
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Params, PassSpec, Shader, Work, WG};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::{f32_literal, Specialization};
pub(crate) use params::BatchWide;
use params::{F1Params, GhmParams};
use std::fmt::Write;

fn lit(x: f64) -> String {
    f32_literal(x as f32)
}

const ROLES: &[Role] = &[
    Role::required("logits", RoleKind::Logits),
    Role::required("labels", RoleKind::BinaryLabels),
];

/// GHM-C's loss per row: sigmoid CE on the unsmoothed label, weighted by β of its bin.
static GHM_ROW: RowLoss = RowLoss {
    call: |_, v| format!("sigmoid_ce({}, {})", v("logits"), v("labels")),
    grads: &[("logits", "y")],
    reference: |_, x| {
        let (l, g) = crate::reference::binary::sigmoid_ce(x[0], x[1], 0.0, None);
        (l, [g, 0.0])
    },
    default_reduction: Reduction::NonzeroMean,
};

/// `ghm_c` (Li et al. AAAI 2019; mmdetection `GHMC`).
static GHM_TYPE: LossType = LossType {
    name: "ghm_c",
    roles: ROLES,
    params: ParamSpec::of::<GhmParams>(),
    regression: false,
    family: &GhmFamily,
};

/// F1-reweighted's loss per row: sigmoid CE on the smoothed label.
static F1_ROW: RowLoss = RowLoss {
    call: |p, v| {
        let p: &F1Params = p.as_any().downcast_ref().expect("f1_reweighted_loss");
        format!(
            "sigmoid_ce({}, {})",
            v("logits"),
            smoothed(p.label_smoothing, v("labels"))
        )
    },
    grads: &[("logits", "y")],
    reference: |p, x| {
        let p: &F1Params = p.as_any().downcast_ref().expect("f1_reweighted_loss");
        let (l, g) = crate::reference::binary::sigmoid_ce(x[0], x[1], p.label_smoothing, None);
        (l, [g, 0.0])
    },
    default_reduction: Reduction::NonzeroMean,
};

/// `f1_reweighted_loss` (EasyRec `F1_REWEIGHTED_LOSS`).
static F1_TYPE: LossType = LossType {
    name: "f1_reweighted_loss",
    roles: ROLES,
    params: ParamSpec::of::<F1Params>(),
    regression: false,
    family: &F1Family,
};

/// The loss types of this family (OHEM focal is `binary_focal_loss`'s, in [`super::rows`]).
pub(crate) static LOSS_TYPES: &[&LossType] = &[&GHM_TYPE, &F1_TYPE];

struct GhmFamily;

impl Family for GhmFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let p: &GhmParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let b = check_columns(term, &GHM_TYPE, shapes)?;
        let bw = BatchWide::Ghm {
            bins: p.bins,
            momentum: p.momentum,
        };
        Ok((row_form(term, ROLES, &GHM_ROW, Some(bw)), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        state: TermState,
    ) -> Result<TermValue> {
        let p: &GhmParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::rows::ghm(term, batch, p.bins, p.momentum, state.ghm_acc)
    }

    fn validate(&self, term: &LossTerm) -> Result<()> {
        if term.reduction.is_some() {
            return Err(Error::term(
                &term.name,
                "'reduction' does not apply to ghm_c: it is normalised by the number of valid \
                 rows (mmdetection GHMC)",
            ));
        }
        Ok(())
    }
}

struct F1Family;

impl Family for F1Family {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let p: &F1Params = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let b = check_columns(term, &F1_TYPE, shapes)?;
        let bw = BatchWide::F1 {
            beta_square: p.f1_beta_square,
        };
        Ok((row_form(term, ROLES, &F1_ROW, Some(bw)), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        let p: &F1Params = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::rows::f1(term, batch, p)
    }
}

/// The row's factor of batch-wide term `k` (`f{k}`; F1 also `e{k}`, the gradient every row gets
/// through tp); `w{k}` and `lg{k}` are in scope, and `key{k}` for OHEM.
pub(crate) fn factor(
    k: usize,
    row: &dyn RowTerm,
    bw: BatchWide,
    aux: &TermAux,
    v: &dyn Fn(&str) -> String,
) -> String {
    let input = |role: &str| v(&row.role_tensor(role).expect("a batch-wide term's role"));
    match bw {
        BatchWide::Ohem { .. } => {
            let (state, _, scale) = ohem_words(aux.base);
            format!(
                "let kept{k} = select_kept(key{k}, chunk.row_base + r, aux[{}u], aux[{}u]);\n\
                 let f{k} = select(0.0, w{k} * aux_f32({scale}u), kept{k} && key{k} > 0x80000000u);",
                state + select::PREFIX,
                state + select::INDEX,
            )
        }
        BatchWide::Ghm { bins, .. } => format!(
            "let f{k} = select(0.0, aux_f32({}u + ghm_bin(ghm_g({}, {}), {bins}u)) * w{k}, w{k} > 0.0);",
            ghm_words(aux.base, bins).1,
            input("logits"),
            input("labels"),
        ),
        BatchWide::F1 { .. } => format!(
            "let f{k} = select(aux_f32({}u), 1.0, {} == 1.0) * w{k} * aux_f32({}u);\n\
             let e{k} = aux_f32({}u) * sigmoid({x}) * sigmoid(-{x});",
            aux.base,
            input("labels"),
            aux.base + 1,
            aux.base + 2,
            x = input("logits"),
        ),
        // The row function already scales by the factors of `prelude`.
        BatchWide::Ziln => format!("let f{k} = w{k};"),
    }
}

/// What the row function of batch-wide term `k` reads of the batch-wide data before it is
/// called, as WGSL lines defining `bw{k}` (empty for terms whose factor applies after the row
/// function): `ziln_loss`'s (1/B, 1/(#positive + 1e-8)).
pub(crate) fn prelude(k: usize, bw: BatchWide, aux: &TermAux) -> Option<String> {
    match bw {
        BatchWide::Ziln => Some(format!(
            "let bw{k} = vec2<f32>(aux_f32({}u), aux_f32({}u));",
            aux.base + 1,
            aux.base + 2
        )),
        _ => None,
    }
}

/// Words of `aux` a batch-wide term needs.
pub(crate) fn aux_words(bw: BatchWide) -> u32 {
    match bw {
        BatchWide::Ohem { .. } => select::STATE_WORDS + 2,
        BatchWide::Ghm { bins, .. } => 2 * bins,
        BatchWide::F1 { .. } => 3,
        // The count of positives, 1/B, 1/(count + 1e-8).
        BatchWide::Ziln => 3,
    }
}

/// OHEM region: (selection state, count of positive values, scale 1/count).
pub(crate) fn ohem_words(base: u32) -> (u32, u32, u32) {
    let positive = base + select::STATE_WORDS;
    (base, positive, positive + 1)
}

/// GHM-C region: (bin counts, β/tot per bin).
pub(crate) fn ghm_words(base: u32, bins: u32) -> (u32, u32) {
    (base, base + bins)
}

/// The statistics pass, the selections and the prepare dispatch of a row group (empty when no
/// term needs them), and how many partial slots per workgroup the statistics use (after the
/// group's term slots).
pub(crate) fn passes(
    group: &RowKernel,
    rows: u64,
    buffers: Buffers,
    label: &str,
) -> (Vec<PassSpec>, usize) {
    let chosen: Vec<usize> = (0..group.terms.len())
        .filter(|&k| row_term(&group.terms[k]).batch_wide().is_some())
        .collect();
    if chosen.is_empty() {
        return (Vec::new(), 0);
    }
    let terms: Vec<Resolved> = chosen.iter().map(|&k| group.terms[k].clone()).collect();
    let aux: Vec<TermAux> = chosen.iter().map(|&k| group.aux[k]).collect();
    let kernel = RowKernel::statistics(&terms, aux);
    let first_slot = group.terms.len();
    // F1 terms take two statistics slots each, in order.
    let mut f1_slots = Vec::new();
    for (k, t) in terms.iter().enumerate() {
        if matches!(bw(t), BatchWide::F1 { .. }) {
            f1_slots.push((k, first_slot + 2 * f1_slots.len()));
        }
    }
    let slot_of = |k: usize| f1_slots.iter().find(|(j, _)| *j == k).unwrap().1;

    let mut binds = vec![
        bind("chunk", Bind::Chunk),
        internal("partials", buffers.partials),
        internal("aux", buffers.aux),
    ];
    let generated = kernel.bindings(FIRST_BINDING, Some("read_write"), false);
    binds.extend(generated.binds);
    let spec =
        Specialization::new().splice("terms", stats_splice(&kernel, &generated.wgsl, &slot_of));
    let mut out = vec![PassSpec {
        label: format!("{label} statistics"),
        shader: Shader::File("statistics.wgsl", spec),
        entry: "statistics",
        binds,
        work: Work::Rows {
            rows_per_wg: WG * ROWS_PER_INVOCATION,
        },
        reads: kernel.inputs.names.clone(),
        params: Params::none(),
    }];

    // Selections of the OHEM terms.
    for (k, t) in terms.iter().enumerate() {
        if let BatchWide::Ohem { ratio } = bw(t) {
            let a = kernel.aux[k];
            out.extend(select::passes(
                &format!("ohem[{}]", t.term.name),
                buffers.aux,
                a.keys.expect("OHEM keys"),
                a.base,
                select::keep_count(rows, ratio),
                rows,
            ));
        }
    }

    // Prepare.
    let spec = Specialization::new().splice("terms", prepare_splice(&kernel, &f1_slots, rows));
    out.push(PassSpec {
        label: format!("{label} prepare"),
        shader: Shader::File("prepare.wgsl", spec),
        entry: "prepare",
        binds: vec![
            bind("chunk", Bind::Chunk),
            internal("partials", buffers.partials),
            internal("aux", buffers.aux),
            internal("state", buffers.state),
        ],
        work: Work::Single,
        reads: Vec::new(),
        params: Params::none(),
    });
    (out, 2 * f1_slots.len())
}

/// statistics.wgsl's `terms` splice: the `bindings`, the terms' counters and sums, `stats_begin`,
/// `stats_row` and `stats_end`. `slot_of(k)` is F1 term k's first partial slot.
fn stats_splice(kernel: &RowKernel, bindings: &str, slot_of: &dyn Fn(usize) -> usize) -> String {
    let mut s = bindings.to_string();
    stats_begin(kernel, &mut s);
    stats_row(kernel, &mut s);
    stats_end(kernel, &mut s, slot_of);
    s
}

/// The terms' counters and sums, and `stats_begin`, which zeroes the workgroup counters.
fn stats_begin(kernel: &RowKernel, s: &mut String) {
    let terms = kernel.terms;
    for (k, t) in terms.iter().enumerate() {
        let _ = match bw(t) {
            BatchWide::Ghm { bins, .. } => {
                writeln!(s, "var<workgroup> ghm_hist{k}: array<atomic<u32>, {bins}>;")
            }
            BatchWide::Ohem { .. } | BatchWide::Ziln => writeln!(
                s,
                "var<workgroup> positive{k}: atomic<u32>;\nvar<private> count{k}: u32;"
            ),
            BatchWide::F1 { .. } => writeln!(
                s,
                "var<private> sa{k}: vec4<f32>;\nvar<private> sb{k}: vec4<f32>;"
            ),
        };
    }
    s.push_str("\nfn stats_begin(lid: u32) {\n");
    for (k, t) in terms.iter().enumerate() {
        let _ = match bw(t) {
            BatchWide::Ghm { bins, .. } => writeln!(
                s,
                "    for (var i = lid; i < {bins}u; i = i + WG) {{ atomicStore(&ghm_hist{k}[i], 0u); }}"
            ),
            BatchWide::Ohem { .. } | BatchWide::Ziln => {
                writeln!(s, "    if (lid == 0u) {{ atomicStore(&positive{k}, 0u); }}")
            }
            _ => Ok(()),
        };
    }
}

/// `stats_row`: one row's contributions to each term's statistics.
fn stats_row(kernel: &RowKernel, s: &mut String) {
    let terms = kernel.terms;
    let value = |n: &str| kernel.value(n);
    s.push_str("}\n\nfn stats_row(r: u32) {\n");
    let indent = "    ";
    kernel.load(s, indent);
    kernel.weights(s, indent);
    let mut key_index = 0;
    for (k, t) in terms.iter().enumerate() {
        let x = || value(&row_term(t).role_tensor("logits").expect("logits"));
        let y = || value(&row_term(t).role_tensor("labels").expect("labels"));
        let _ = match bw(t) {
            BatchWide::Ghm { bins, .. } => writeln!(
                s,
                "{indent}if (w{k} > 0.0) {{ atomicAdd(&ghm_hist{k}[ghm_bin(ghm_g({}, {}), {bins}u)], 1u); }}",
                x(),
                y()
            ),
            BatchWide::Ohem { .. } => {
                key_index += 1;
                writeln!(
                    s,
                    "{indent}let v{k}_ = w{k} * {}.x;\n{indent}keys{}[r] = order_key(v{k}_);\n{indent}count{k} = count{k} + select(0u, 1u, v{k}_ > 0.0);",
                    row_term(t).call(&value, ""),
                    key_index - 1
                )
            }
            BatchWide::F1 { .. } => writeln!(
                s,
                "{indent}let ce{k} = w{k} * {}.x;\n\
                 {indent}let pos{k} = {} == 1.0;\n\
                 {indent}let nz{k} = select(0.0, 1.0, w{k} != 0.0);\n\
                 {indent}sa{k} = sa{k} + vec4<f32>(sigmoid({}), select(0.0, 1.0, pos{k}), select(0.0, ce{k}, pos{k}), select(ce{k}, 0.0, pos{k}));\n\
                 {indent}sb{k} = sb{k} + vec4<f32>(select(0.0, w{k}, pos{k}), select(w{k}, 0.0, pos{k}), select(0.0, nz{k}, pos{k}), select(nz{k}, 0.0, pos{k}));",
                row_term(t).call(&value, ""),
                y(),
                x()
            ),
            BatchWide::Ziln => writeln!(
                s,
                "{indent}count{k} = count{k} + select(0u, 1u, {} > 0.0);",
                y()
            ),
        };
    }
}

/// `stats_end`: the workgroup's counts into `aux`, its sums into `partials` (F1 term k at
/// `slot_of(k)`).
fn stats_end(kernel: &RowKernel, s: &mut String, slot_of: &dyn Fn(usize) -> usize) {
    let terms = kernel.terms;
    s.push_str("}\n\nfn stats_end(lid: u32, wg: u32) {\n");
    for (k, t) in terms.iter().enumerate() {
        if let BatchWide::Ohem { .. } | BatchWide::Ziln = bw(t) {
            let _ = writeln!(s, "    atomicAdd(&positive{k}, count{k});");
        }
    }
    s.push_str("    workgroupBarrier();\n");
    for (k, t) in terms.iter().enumerate() {
        let base = kernel.aux[k].base;
        let _ = match bw(t) {
            BatchWide::Ghm { bins, .. } => writeln!(
                s,
                "    for (var i = lid; i < {bins}u; i = i + WG) {{\n        let c = atomicLoad(&ghm_hist{k}[i]);\n        if (c != 0u && wg < chunk.wgs) {{ atomicAdd(&aux[{base}u + i], c); }}\n    }}"
            ),
            BatchWide::Ohem { .. } => writeln!(
                s,
                "    if (lid == 0u && wg < chunk.wgs) {{ atomicAdd(&aux[{}u], atomicLoad(&positive{k})); }}",
                ohem_words(base).1
            ),
            BatchWide::F1 { .. } => {
                let slot = slot_of(k);
                writeln!(
                    s,
                    "    let ta{k} = workgroup_sum(lid, sa{k});\n    let tb{k} = workgroup_sum(lid, sb{k});\n    if (lid == 0u && wg < chunk.wgs) {{\n        partials[partial_index(chunk, {slot}u, wg)] = ta{k};\n        partials[partial_index(chunk, {}u, wg)] = tb{k};\n    }}",
                    slot + 1
                )
            }
            BatchWide::Ziln => writeln!(
                s,
                "    if (lid == 0u && wg < chunk.wgs) {{ atomicAdd(&aux[{base}u], atomicLoad(&positive{k})); }}"
            ),
        };
    }
    s.push_str("}\n");
}

/// prepare.wgsl's `terms` splice: `prepare_sums` (the F1 terms' statistics over every
/// workgroup, at their `f1_slots`) and `prepare_terms` (each term's factors).
fn prepare_splice(kernel: &RowKernel, f1_slots: &[(usize, usize)], rows: u64) -> String {
    let mut p = String::new();
    for &(k, _) in f1_slots {
        let _ = writeln!(
            p,
            "var<private> fa{k}: vec4<f32>;\nvar<private> fb{k}: vec4<f32>;"
        );
    }
    p.push_str("\nfn prepare_sums(lid: u32) {\n");
    for &(k, slot) in f1_slots {
        let _ = writeln!(
            p,
            "    fa{k} = slot_sum(lid, {slot}u);\n    fb{k} = slot_sum(lid, {}u);",
            slot + 1
        );
    }
    p.push_str("}\n\nfn prepare_terms() {\n");
    for (k, t) in kernel.terms.iter().enumerate() {
        let a = kernel.aux[k];
        let _ = match bw(t) {
            BatchWide::Ghm { bins, momentum } => {
                let (hist, beta) = ghm_words(a.base, bins);
                writeln!(
                    p,
                    "    ghm_prepare({hist}u, {beta}u, {}u, {}u, {bins}u, {}); // {}",
                    a.pending,
                    a.acc,
                    lit(momentum),
                    t.term.name
                )
            }
            BatchWide::F1 { beta_square } => writeln!(
                p,
                "    f1_prepare({}u, fa{k}, fb{k}, {}, {}u, {}); // {}",
                a.base,
                lit(beta_square),
                reduction_code(t.term.effective_reduction()),
                lit(rows as f64),
                t.term.name
            ),
            BatchWide::Ohem { ratio } => {
                let (_, positive, scale) = ohem_words(a.base);
                writeln!(
                    p,
                    "    ohem_prepare({positive}u, {scale}u, {}u); // {}",
                    select::keep_count(rows, ratio),
                    t.term.name
                )
            }
            BatchWide::Ziln => writeln!(
                p,
                "    ziln_prepare({}u, {}); // {}",
                a.base,
                lit(rows as f64),
                t.term.name
            ),
        };
    }
    p.push_str("}\n");
    p
}

/// The batch-wide quantity of a term of a row group's statistics.
fn bw(t: &Resolved) -> BatchWide {
    row_term(t)
        .batch_wide()
        .expect("only batch-wide terms have statistics")
}

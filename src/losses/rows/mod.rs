//! The per-row terms and the fused row kernel (`shaders/rows.wgsl`; loss functions in
//! `shaders/binary.wgsl`; reference `src/reference/rows.rs` and `src/reference/binary.rs`):
//! `classification` with one logit, `l2_loss`, `sigmoid_l2_loss`, `cross_entropy_loss`,
//! `binary_focal_loss`, `esmm` and `order_calibrate_loss`, and with them the batch-wide terms of
//! [`super::statistics`]. Every per-row term over the same B rows is evaluated in one forward and
//! one backward pass; each tensor is read once per pass whatever the number of terms, so adding
//! a term adds arithmetic, not passes.
//!
//! A plain per-row term is a [`RowLoss`] (its WGSL call, its gradient components and its f64
//! reference per row) and a [`LossType`] (its name, roles and parameters) in this file, beside
//! its WGSL function in binary.wgsl; nothing else names it.

pub(crate) mod params;

use super::common::{coef_index, weight_expr, Inputs, TermAux};
use super::family::{
    wrong_params, Family, Form, LossType, NoParams, ParamSpec, Resolved, Role, RoleKind, RowLoss,
    RowTerm,
};
use super::shapes::{expect_vector, rows_of, spec};
use super::statistics::{self, BatchWide};
use crate::batch::{DType, Shapes};
use crate::config::{LossTerm, Reduction, TermParams};
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Binding, Params, PassSpec, Shader, Source, Work, WG};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::{f32_literal, Specialization};
use params::{ClassificationParams, FocalParams};
use std::fmt::Write;
use std::sync::Arc;

fn lit(x: f64) -> String {
    f32_literal(x as f32)
}

/// `(y * (1 − ls) + 0.5·ls)`: binary label smoothing of the WGSL value `y`.
pub(crate) fn smoothed(label_smoothing: f64, y: String) -> String {
    if label_smoothing == 0.0 {
        y
    } else {
        format!(
            "({y} * {} + {})",
            lit(1.0 - label_smoothing),
            lit(0.5 * label_smoothing)
        )
    }
}

const LOGITS: Role = Role::required("logits", RoleKind::Logits);
const BINARY_LABELS: Role = Role::required("labels", RoleKind::BinaryLabels);
const REAL_LABELS: Role = Role::required("labels", RoleKind::RealLabels);

/// The roles of `classification` with one logit per row: its labels are binary.
const SIGMOID_ROLES: &[Role] = &[LOGITS, BINARY_LABELS];

/// Sigmoid CE of `classification` with one logit (with label smoothing and pos_weight).
pub(crate) static SIGMOID_CE: RowLoss = RowLoss {
    call: |p, v| {
        let p: &ClassificationParams = p.as_any().downcast_ref().expect("classification");
        let y = smoothed(p.label_smoothing, v("labels"));
        match p.pos_weight {
            None => format!("sigmoid_ce({}, {y})", v("logits")),
            Some(pw) => format!("sigmoid_ce_pos_weight({}, {y}, {})", v("logits"), lit(pw)),
        }
    },
    grads: &[("logits", "y")],
    reference: |p, x| {
        let p: &ClassificationParams = p.as_any().downcast_ref().expect("classification");
        let (l, g) =
            crate::reference::binary::sigmoid_ce(x[0], x[1], p.label_smoothing, p.pos_weight);
        (l, [g, 0.0])
    },
};

static L2: RowLoss = RowLoss {
    call: |_, v| format!("l2({}, {})", v("predictions"), v("labels")),
    grads: &[("predictions", "y")],
    reference: |_, x| {
        let (l, g) = crate::reference::binary::l2(x[0], x[1]);
        (l, [g, 0.0])
    },
};

/// `l2_loss`: (x − y)².
static L2_TYPE: LossType = LossType {
    name: "l2_loss",
    roles: &[Role::required("predictions", RoleKind::Logits), REAL_LABELS],
    params: ParamSpec::of::<NoParams>(),
    regression: true,
    family: &L2,
};

static SIGMOID_L2: RowLoss = RowLoss {
    call: |_, v| format!("sigmoid_l2({}, {})", v("logits"), v("labels")),
    grads: &[("logits", "y")],
    reference: |_, x| {
        let (l, g) = crate::reference::binary::sigmoid_l2(x[0], x[1]);
        (l, [g, 0.0])
    },
};

/// `sigmoid_l2_loss`: (σ(x) − y)².
static SIGMOID_L2_TYPE: LossType = LossType {
    name: "sigmoid_l2_loss",
    roles: &[LOGITS, REAL_LABELS],
    params: ParamSpec::of::<NoParams>(),
    regression: true,
    family: &SIGMOID_L2,
};

static PROB_CE: RowLoss = RowLoss {
    call: |_, v| format!("prob_ce({}, {})", v("probabilities"), v("labels")),
    grads: &[("probabilities", "y")],
    reference: |_, x| {
        let (l, g) = crate::reference::binary::prob_ce(x[0], x[1]);
        (l, [g, 0.0])
    },
};

/// `cross_entropy_loss`: binary CE on probabilities with ε = 1e-7.
static PROB_CE_TYPE: LossType = LossType {
    name: "cross_entropy_loss",
    roles: &[
        Role::required("probabilities", RoleKind::Probabilities),
        BINARY_LABELS,
    ],
    params: ParamSpec::of::<NoParams>(),
    regression: false,
    family: &PROB_CE,
};

static ESMM: RowLoss = RowLoss {
    call: |_, v| {
        format!(
            "esmm({}, {}, {}, {})",
            v("ctr_logits"),
            v("cvr_logits"),
            v("ctr_labels"),
            v("ctcvr_labels")
        )
    },
    grads: &[("ctr_logits", "y"), ("cvr_logits", "z")],
    reference: |_, x| {
        let (l, da, db) = crate::reference::binary::esmm(x[0], x[1], x[2], x[3]);
        (l, [da, db])
    },
};

/// `esmm` (Ma et al. SIGIR 2018): CE(σ(a), click) + CE(σ(a)σ(b), buy).
static ESMM_TYPE: LossType = LossType {
    name: "esmm",
    roles: &[
        Role::required("ctr_logits", RoleKind::Logits),
        Role::required("cvr_logits", RoleKind::Logits),
        Role::required("ctr_labels", RoleKind::BinaryLabels),
        Role::required("ctcvr_labels", RoleKind::BinaryLabels),
    ],
    params: ParamSpec::of::<NoParams>(),
    regression: false,
    family: &ESMM,
};

static FOCAL: RowLoss = RowLoss {
    call: |p, v| {
        let p: &FocalParams = p.as_any().downcast_ref().expect("binary_focal_loss");
        format!(
            "focal({}, {}, {}, {}, {})",
            v("logits"),
            v("labels"),
            smoothed(p.label_smoothing, v("labels")),
            lit(p.gamma),
            lit(p.alpha.unwrap_or(-1.0)),
        )
    },
    grads: &[("logits", "y")],
    reference: |p, x| {
        let p: &FocalParams = p.as_any().downcast_ref().expect("binary_focal_loss");
        let focal = crate::reference::binary::Focal {
            gamma: p.gamma,
            alpha: p.alpha,
            label_smoothing: p.label_smoothing,
        };
        let (l, g) = crate::reference::binary::focal(x[0], x[1], &focal);
        (l, [g, 0.0])
    },
};

/// `binary_focal_loss` (EasyRec `BINARY_FOCAL_LOSS`), with OHEM when `ohem_ratio` < 1.
static FOCAL_TYPE: LossType = LossType {
    name: "binary_focal_loss",
    roles: &[LOGITS, BINARY_LABELS],
    params: ParamSpec::of::<FocalParams>(),
    regression: false,
    family: &FocalFamily,
};

/// `classification` (EasyRec `CLASSIFICATION`): sigmoid CE for one logit, softmax CE for C ≥ 2.
static CLASSIFICATION_TYPE: LossType = LossType {
    name: "classification",
    roles: &[LOGITS, Role::required("labels", RoleKind::ClassLabels)],
    params: ParamSpec::of::<ClassificationParams>(),
    regression: false,
    family: &ClassificationFamily,
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[
    &CLASSIFICATION_TYPE,
    &L2_TYPE,
    &SIGMOID_L2_TYPE,
    &PROB_CE_TYPE,
    &FOCAL_TYPE,
    &ESMM_TYPE,
];

/// A resolved row term: its loss, parameters, tensors by role, and batch-wide quantity.
#[derive(Debug)]
pub(crate) struct RowInstance {
    pub def: &'static RowLoss,
    pub params: Arc<dyn TermParams>,
    /// (role, tensor), in the loss type's order of roles.
    pub inputs: Vec<(Role, String)>,
    pub batch_wide: Option<BatchWide>,
}

impl std::fmt::Debug for RowLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowLoss")
    }
}

impl RowInstance {
    fn tensor(&self, role: &str) -> &str {
        self.inputs
            .iter()
            .find(|(r, _)| r.name == role)
            .map(|(_, t)| t.as_str())
            .expect("a role of the loss type")
    }
}

impl RowTerm for RowInstance {
    fn call(&self, v: &dyn Fn(&str) -> String) -> String {
        (self.def.call)(&*self.params, &|role| v(self.tensor(role)))
    }

    fn grads(&self) -> Vec<(String, &'static str)> {
        self.def
            .grads
            .iter()
            .map(|(role, comp)| (self.tensor(role).to_string(), *comp))
            .collect()
    }

    fn tensors(&self) -> Vec<String> {
        self.inputs.iter().map(|(_, t)| t.clone()).collect()
    }

    fn batch_wide(&self) -> Option<BatchWide> {
        self.batch_wide
    }

    fn role_tensor(&self, role: &str) -> Option<String> {
        self.inputs
            .iter()
            .find(|(r, _)| r.name == role)
            .map(|(_, t)| t.clone())
    }

    fn bound_roles(&self) -> Vec<(Role, String)> {
        self.inputs.clone()
    }
}

/// Checks a row term's tensors: its first differentiable role an F32 column [B] or [B, 1], every
/// other role a column with the same B (session ids of any integer type, the rest F32). Returns B.
pub(crate) fn check_columns(term: &LossTerm, lt: &LossType, shapes: &Shapes) -> Result<u64> {
    let primary = lt
        .differentiable_roles()
        .next()
        .expect("row terms have a gradient");
    let b = expect_vector(
        shapes,
        term,
        input(term, primary),
        primary,
        None,
        &[DType::F32],
    )?;
    for role in lt.roles {
        let Some(tensor) = term.input(role.name) else {
            continue;
        };
        if role.name == primary {
            continue;
        }
        let dtypes: &[DType] = match role.kind {
            RoleKind::SessionIds => &[DType::I32, DType::U32, DType::I64],
            _ => &[DType::F32],
        };
        expect_vector(shapes, term, tensor, role.name, Some(b), dtypes)?;
    }
    Ok(b)
}

fn input<'a>(term: &'a LossTerm, role: &str) -> &'a str {
    term.input(role)
        .expect("required roles are checked by the config")
}

/// The row form of `term` reading `roles` with `def` and `batch_wide`.
pub(crate) fn row_form(
    term: &LossTerm,
    roles: &[Role],
    def: &'static RowLoss,
    batch_wide: Option<BatchWide>,
) -> Form {
    let inputs = roles
        .iter()
        .filter_map(|r| Some((*r, term.input(r.name)?.to_string())))
        .collect();
    Form::Row(Arc::new(RowInstance {
        def,
        params: term.kind.params_arc(),
        inputs,
        batch_wide,
    }))
}

fn loss_type(term: &LossTerm) -> &'static LossType {
    super::registry::lookup(term.kind.loss_type()).expect("validated config")
}

impl Family for RowLoss {
    fn resolve(&'static self, term: &LossTerm, shapes: &Shapes) -> Result<(Form, u64)> {
        let lt = loss_type(term);
        let b = check_columns(term, lt, shapes)?;
        Ok((row_form(term, lt.roles, self, None), b))
    }

    fn reference(&self, term: &LossTerm, batch: &HostBatch, _: TermState) -> Result<TermValue> {
        crate::reference::rows::evaluate(term, loss_type(term).roles, self, None, batch)
    }
}

/// `binary_focal_loss`: a plain row term, or with OHEM (`ohem_ratio` < 1) a batch-wide one.
struct FocalFamily;

impl Family for FocalFamily {
    fn resolve(&'static self, term: &LossTerm, shapes: &Shapes) -> Result<(Form, u64)> {
        let p: &FocalParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let b = check_columns(term, &FOCAL_TYPE, shapes)?;
        let ohem = (p.ohem_ratio < 1.0).then_some(BatchWide::Ohem {
            ratio: p.ohem_ratio,
        });
        Ok((row_form(term, FOCAL_TYPE.roles, &FOCAL, ohem), b))
    }

    fn reference(&self, term: &LossTerm, batch: &HostBatch, _: TermState) -> Result<TermValue> {
        let p: &FocalParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let ohem = (p.ohem_ratio < 1.0).then_some(p.ohem_ratio);
        crate::reference::rows::evaluate(term, FOCAL_TYPE.roles, &FOCAL, ohem, batch)
    }
}

/// `classification`: sigmoid CE on one logit per row ([B] or [B, 1]), softmax CE on [B, C].
struct ClassificationFamily;

impl Family for ClassificationFamily {
    fn resolve(&'static self, term: &LossTerm, shapes: &Shapes) -> Result<(Form, u64)> {
        let p: &ClassificationParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let logits = spec(shapes, term, input(term, "logits"), "logits")?;
        if rows_of(logits).is_none() {
            if p.pos_weight.is_some() {
                return Err(Error::term(
                    &term.name,
                    format!(
                        "pos_weight applies to one logit per row; logits '{}' have shape {:?}",
                        input(term, "logits"),
                        logits.shape
                    ),
                ));
            }
            return super::softmax::resolve(term, shapes, &p.softmax());
        }
        if p.has_softmax_options() {
            return Err(Error::term(
                &term.name,
                "temperature, ignore_index, class_weights and z_loss apply to softmax \
                 classification (logits [B, C], C >= 2); these logits have one column",
            ));
        }
        let b = expect_vector(
            shapes,
            term,
            input(term, "logits"),
            "logits",
            None,
            &[DType::F32],
        )?;
        expect_vector(
            shapes,
            term,
            input(term, "labels"),
            "labels",
            Some(b),
            &[DType::F32],
        )?;
        Ok((row_form(term, SIGMOID_ROLES, &SIGMOID_CE, None), b))
    }

    fn reference(&self, term: &LossTerm, batch: &HostBatch, _: TermState) -> Result<TermValue> {
        let p: &ClassificationParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::rows::classification(term, batch, p, &SIGMOID_CE, SIGMOID_ROLES)
    }

    fn default_reduction(&self, term: &LossTerm) -> Reduction {
        let weighted = term
            .kind
            .params::<ClassificationParams>()
            .is_some_and(|p| p.class_weights.is_some());
        if weighted {
            Reduction::WeightedMean
        } else {
            Reduction::NonzeroMean
        }
    }
}

/// Rows each invocation of the forward and statistics passes sums before the workgroup reduction
/// (`ROWS_PER_INVOCATION` in binary.wgsl).
pub(crate) const ROWS_PER_INVOCATION: u32 = 8;

/// The first binding index of a row kernel's generated tensor bindings (rows.wgsl,
/// statistics.wgsl).
pub(crate) const FIRST_BINDING: usize = 10;

/// The internal buffers a row group binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buffers {
    pub partials: usize,
    pub scalars: usize,
    pub aux: usize,
    pub state: usize,
}

/// The passes of a row group.
pub(crate) struct RowPasses {
    /// Statistics, selections and prepare, in order (empty without batch-wide terms).
    pub pre: Vec<PassSpec>,
    pub forward: PassSpec,
    /// None when the forward pass writes the gradients itself (fused).
    pub backward: Option<PassSpec>,
    /// Tensors whose gradient the backward pass writes, in binding order.
    pub grads: Vec<String>,
    /// Partial-sum slots per workgroup: one per term, then the statistics slots.
    pub partial_slots: usize,
}

/// The row term of a resolved term of a row group.
pub(crate) fn row_term(term: &Resolved) -> &dyn RowTerm {
    match &term.form {
        Form::Row(r) => &**r,
        _ => unreachable!("row groups hold row terms"),
    }
}

/// The row's factor dL/dl_i·(1/coefficient) of term `k` (`f{k}`) and, for F1, the gradient every
/// row gets through tp (`e{k}`); `w{k}` and `lg{k}` are in scope, and `key{k}` for OHEM.
fn factor(k: usize, term: &Resolved, aux: &TermAux, v: &dyn Fn(&str) -> String) -> String {
    let row = row_term(term);
    match row.batch_wide() {
        Some(bw) => statistics::factor(k, row, bw, aux, v),
        None => format!("let f{k} = w{k};"),
    }
}

/// The tensors the group reads and those whose gradient it writes, each once, in binding order.
fn bound_tensors(terms: &[Resolved]) -> (Inputs, Inputs) {
    let mut inputs = Inputs::default();
    let mut grads = Inputs::default();
    for t in terms {
        for n in row_term(t).tensors() {
            inputs.index(&n);
        }
        for (w, _) in &t.weights {
            inputs.index(w);
        }
        for (g, _) in row_term(t).grads() {
            grads.index(&g);
        }
    }
    (inputs, grads)
}

/// Storage buffers the passes of a row group bind (the largest of its passes).
pub(crate) fn storage_bindings(terms: &[Resolved]) -> u32 {
    let (inputs, grads) = bound_tensors(terms);
    let keys = terms.iter().filter(|t| is_ohem(t)).count() as u32;
    // chunk, partials, scalars and aux (all in a fused forward pass), inputs, OHEM keys, gradients
    4 + inputs.names.len() as u32 + keys + grads.names.len() as u32
}

/// Whether the term selects its rows by OHEM.
pub(crate) fn is_ohem(term: &Resolved) -> bool {
    matches!(row_term(term).batch_wide(), Some(BatchWide::Ohem { .. }))
}

/// Binds every name of `names` by rows (4 bytes each), as inputs (`in<i>`) or as gradients
/// (`grad<i>`).
pub(crate) fn row_binds(names: &[String], grad: bool) -> Vec<Binding> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (var, source) = if grad {
                (format!("grad{i}"), Source::Grad(n.clone()))
            } else {
                (format!("in{i}"), Source::Input(n.clone()))
            };
            bind(
                var,
                Bind::Rows {
                    source,
                    row_bytes: 4,
                },
            )
        })
        .collect()
}

/// What the generated code of a row group shares: the tensors, their WGSL names, the terms and
/// where their batch-wide data lives.
pub(crate) struct RowKernel<'a> {
    pub terms: &'a [Resolved],
    pub inputs: Inputs,
    pub grads: Inputs,
    /// (term index in the group, its keys buffer) for the OHEM terms, in binding order.
    pub keys: Vec<(usize, usize)>,
    pub aux: Vec<TermAux>,
}

impl<'a> RowKernel<'a> {
    /// The kernel of `terms`, with `aux[k]` the batch-wide data of term k.
    pub(crate) fn new(terms: &'a [Resolved], aux: Vec<TermAux>) -> Self {
        let (inputs, grads) = bound_tensors(terms);
        let keys = terms
            .iter()
            .enumerate()
            .filter(|(_, t)| is_ohem(t))
            .map(|(k, _)| (k, aux[k].keys.expect("OHEM terms have a keys buffer")))
            .collect();
        RowKernel {
            terms,
            inputs,
            grads,
            keys,
            aux,
        }
    }

    pub(crate) fn value(&self, name: &str) -> String {
        format!("v{}", self.inputs.position(name))
    }

    /// `@binding` declarations of the inputs from `first`, then (optionally) the OHEM keys and
    /// the gradients; returns the next free binding.
    pub(crate) fn declare(
        &self,
        src: &mut String,
        first: usize,
        keys: Option<&str>,
        with_grads: bool,
    ) -> usize {
        let mut b = first;
        for (i, n) in self.inputs.names.iter().enumerate() {
            let _ = writeln!(
                src,
                "@group(0) @binding({b}) var<storage, read> in{i}: array<f32>; // {n}"
            );
            b += 1;
        }
        if let Some(access) = keys {
            for (j, (k, _)) in self.keys.iter().enumerate() {
                let _ = writeln!(
                    src,
                    "@group(0) @binding({b}) var<storage, {access}> keys{j}: array<u32>; // {}",
                    self.terms[*k].term.name
                );
                b += 1;
            }
        }
        if with_grads {
            for (i, n) in self.grads.names.iter().enumerate() {
                let _ = writeln!(
                    src,
                    "@group(0) @binding({b}) var<storage, read_write> grad{i}: array<f32>; // {n}"
                );
                b += 1;
            }
        }
        b
    }

    /// The binds matching [`RowKernel::declare`].
    pub(crate) fn binds(&self, keys: bool, with_grads: bool) -> Vec<Binding> {
        let mut v = row_binds(&self.inputs.names, false);
        if keys {
            v.extend(self.keys.iter().enumerate().map(|(j, (_, buffer))| {
                let rows = Bind::Rows {
                    source: Source::Internal(*buffer),
                    row_bytes: 4,
                };
                bind(format!("keys{j}"), rows)
            }));
        }
        if with_grads {
            v.extend(row_binds(&self.grads.names, true));
        }
        v
    }

    /// `let v{i} = in{i}[r];` for every input.
    pub(crate) fn load(&self, src: &mut String, indent: &str) {
        for i in 0..self.inputs.names.len() {
            let _ = writeln!(src, "{indent}let v{i} = in{i}[r];");
        }
    }

    /// `w{k}` (sample weight) of every term.
    pub(crate) fn weights(&self, src: &mut String, indent: &str) {
        let value = |n: &str| self.value(n);
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}let w{k} = {}; // {}",
                weight_expr(&t.weights, value),
                t.term.name
            );
        }
    }

    /// `w{k}`, `lg{k}` (loss, derivative), `f{k}` (row factor) and for F1 `e{k}`, of every term.
    fn term_values(&self, src: &mut String, indent: &str) {
        let value = |n: &str| self.value(n);
        self.weights(src, indent);
        for (j, (k, _)) in self.keys.iter().enumerate() {
            let _ = writeln!(src, "{indent}let key{k} = keys{j}[r];");
        }
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(src, "{indent}let lg{k} = {};", row_term(t).call(&value));
            for line in factor(k, t, &self.aux[k], &value).lines() {
                let _ = writeln!(src, "{indent}{line}");
            }
        }
    }

    /// Σ_k coef_k · (f_k · dl_k/dx + e_k) into each gradient.
    fn write_grads(&self, src: &mut String, indent: &str, grad_accumulates: &dyn Fn(&str) -> bool) {
        for i in 0..self.grads.names.len() {
            let _ = writeln!(src, "{indent}var g{i} = 0.0;");
        }
        for (k, t) in self.terms.iter().enumerate() {
            let _ = writeln!(
                src,
                "{indent}{{\n{indent}    let c = scalars[{}];",
                coef_index(t.slot),
            );
            let extra = if matches!(row_term(t).batch_wide(), Some(BatchWide::F1 { .. })) {
                format!(" + e{k}")
            } else {
                String::new()
            };
            for (g, comp) in row_term(t).grads() {
                let i = self.grads.position(&g);
                let _ = writeln!(
                    src,
                    "{indent}    g{i} = g{i} + c * (f{k} * lg{k}.{comp}{extra});"
                );
            }
            let _ = writeln!(src, "{indent}}}");
        }
        for (i, n) in self.grads.names.iter().enumerate() {
            if grad_accumulates(n) {
                let _ = writeln!(src, "{indent}grad{i}[r] = grad{i}[r] + g{i};");
            } else {
                let _ = writeln!(src, "{indent}grad{i}[r] = g{i};");
            }
        }
    }

    /// rows.wgsl's `terms` splice: the tensors' bindings, `forward_row` (with the gradients when
    /// `fused`) and `backward_row`.
    fn splice(&self, fused: bool, grad_accumulates: &dyn Fn(&str) -> bool) -> String {
        let mut src = String::new();
        self.declare(&mut src, FIRST_BINDING, Some("read"), true);
        let indent = "    ";
        src.push_str("\nfn forward_row(r: u32) {\n");
        self.load(&mut src, indent);
        self.term_values(&mut src, indent);
        for k in 0..self.terms.len() {
            let _ = writeln!(
                src,
                "{indent}acc[{k}] = acc[{k}] + vec4<f32>(f{k} * lg{k}.x, f{k}, select(0.0, 1.0, f{k} != 0.0), 0.0);"
            );
        }
        if fused {
            self.write_grads(&mut src, indent, grad_accumulates);
        }
        src.push_str("}\n\nfn backward_row(r: u32) {\n");
        self.load(&mut src, indent);
        self.term_values(&mut src, indent);
        self.write_grads(&mut src, indent, grad_accumulates);
        src.push_str("}\n");
        src
    }

    pub(crate) fn label(&self) -> String {
        format!(
            "rows[{}]",
            self.terms
                .iter()
                .map(|t| t.term.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// Builds the passes of a row group of `rows` rows. `aux_of(slot)` says where a batch-wide term
/// keeps its data. `grad_accumulates(tensor)` says whether an earlier pass already wrote that
/// gradient this step (then this one adds to it). With `fused`, every term's gradient
/// coefficient is known before the step (the `coefficients` dispatch), so the forward pass also
/// writes the gradients and there is no backward pass.
pub(crate) fn passes(
    terms: &[Resolved],
    rows: u64,
    buffers: Buffers,
    aux_of: &dyn Fn(usize) -> TermAux,
    fused: bool,
    grad_accumulates: &dyn Fn(&str) -> bool,
) -> RowPasses {
    let kernel = RowKernel::new(terms, terms.iter().map(|t| aux_of(t.slot)).collect());
    let label = kernel.label();
    let spec = Specialization::new()
        .u32("TERMS", terms.len() as u32)
        .splice("terms", kernel.splice(fused, grad_accumulates));
    let mut binds = vec![
        bind("chunk", Bind::Chunk),
        internal("partials", buffers.partials),
        internal("aux", buffers.aux),
        internal("scalars", buffers.scalars),
    ];
    binds.extend(kernel.binds(true, true));
    // Forward: per-term vec4(Σ f·l, Σ f, #{f ≠ 0}, 0) per workgroup (and, fused, the gradients).
    let forward = PassSpec {
        label: format!(
            "{label} {}",
            if fused { "forward+gradient" } else { "forward" }
        ),
        shader: Shader::File("rows.wgsl", spec.clone()),
        entry: "forward",
        binds: binds.clone(),
        work: Work::Rows {
            rows_per_wg: WG * ROWS_PER_INVOCATION,
        },
        reads: kernel.inputs.names.clone(),
        params: Params::none(),
    };
    // Backward: one invocation per row.
    let backward = (!fused).then(|| PassSpec {
        label: format!("{label} backward"),
        shader: Shader::File("rows.wgsl", spec),
        entry: "backward",
        binds,
        work: Work::Rows { rows_per_wg: WG },
        reads: kernel.inputs.names.clone(),
        params: Params::none(),
    });
    let (pre, stat_slots) = statistics::passes(&kernel, rows, buffers, &label);
    RowPasses {
        pre,
        forward,
        backward,
        grads: kernel.grads.names,
        partial_slots: terms.len() + stat_slots,
    }
}

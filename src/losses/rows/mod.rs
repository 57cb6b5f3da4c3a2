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

pub(crate) mod kernel;
pub(crate) mod params;
pub(crate) mod passes;

use super::family::{wrong_params, Family, Form, LossType, Role, RoleKind, RowLoss, RowTerm};
use super::params::{NoParams, ParamSpec};
use super::shapes::{expect_vector, rows_of, spec};
use super::statistics::params::BatchWide;
use crate::batch::{DType, Shapes};
use crate::config::{LossTerm, Reduction, TermParams};
use crate::error::{Error, Result};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::f32_literal;
use params::{ClassificationParams, FocalParams};
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
    default_reduction: Reduction::NonzeroMean,
};

static L2: RowLoss = RowLoss {
    call: |_, v| format!("l2({}, {})", v("predictions"), v("labels")),
    grads: &[("predictions", "y")],
    reference: |_, x| {
        let (l, g) = crate::reference::binary::l2(x[0], x[1]);
        (l, [g, 0.0])
    },
    default_reduction: Reduction::NonzeroMean,
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
    default_reduction: Reduction::NonzeroMean,
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
    default_reduction: Reduction::NonzeroMean,
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
    default_reduction: Reduction::NonzeroMean,
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
    default_reduction: Reduction::NonzeroMean,
};

static ORDER_CALIBRATE: RowLoss = RowLoss {
    call: |_, v| format!("order_calibrate({}, {})", v("logits"), v("relation_logits")),
    grads: &[("logits", "y"), ("relation_logits", "z")],
    reference: |_, x| {
        let (l, dx, dr) = crate::reference::binary::order_calibrate(x[0], x[1]);
        (l, [dx, dr])
    },
    default_reduction: Reduction::Mean,
};

/// `order_calibrate_loss` (AITM, Xi et al. KDD 2021; EasyRec `ORDER_CALIBRATE_LOSS`): the mean
/// over rows of relu(σ(logits) − σ(relation_logits)).
static ORDER_CALIBRATE_TYPE: LossType = LossType {
    name: "order_calibrate_loss",
    roles: &[LOGITS, Role::required("relation_logits", RoleKind::Logits)],
    params: ParamSpec::of::<NoParams>(),
    regression: false,
    family: &ORDER_CALIBRATE,
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
    &ORDER_CALIBRATE_TYPE,
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
    fn call(&self, v: &dyn Fn(&str) -> String, _: &str) -> String {
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
            RoleKind::SessionIds => &DType::INTEGERS,
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

impl Family for RowLoss {
    fn resolve(
        &'static self,
        lt: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let b = check_columns(term, lt, shapes)?;
        Ok((row_form(term, lt.roles, self, None), b))
    }

    fn reference(
        &self,
        lt: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        crate::reference::rows::evaluate(term, lt.roles, self, None, batch)
    }

    fn default_reduction(&self, _: &LossTerm) -> Reduction {
        self.default_reduction
    }
}

/// `binary_focal_loss`: a plain row term, or with OHEM (`ohem_ratio` < 1) a batch-wide one.
struct FocalFamily;

impl Family for FocalFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let p: &FocalParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let b = check_columns(term, &FOCAL_TYPE, shapes)?;
        let ohem = (p.ohem_ratio < 1.0).then_some(BatchWide::Ohem {
            ratio: p.ohem_ratio,
        });
        Ok((row_form(term, FOCAL_TYPE.roles, &FOCAL, ohem), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        let p: &FocalParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let ohem = (p.ohem_ratio < 1.0).then_some(p.ohem_ratio);
        crate::reference::rows::evaluate(term, FOCAL_TYPE.roles, &FOCAL, ohem, batch)
    }
}

/// `classification`: sigmoid CE on one logit per row ([B] or [B, 1]), softmax CE on [B, C].
struct ClassificationFamily;

impl Family for ClassificationFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let p: &ClassificationParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let logits = spec(shapes, term, input(term, "logits"), "logits")?;
        if rows_of(logits).is_none() {
            if logits.shape.len() != 2 {
                return Err(Error::tensor(
                    input(term, "logits"),
                    Some(&term.name),
                    format!(
                        "classification expects logits [B] or [B, 1] (one logit per row: sigmoid \
                         CE) or [B, C] with C >= 2 (softmax CE), got shape {:?}",
                        logits.shape
                    ),
                ));
            }
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

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
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

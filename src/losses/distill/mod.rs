//! Knowledge-distillation terms (docs/LOSSES.md §10): `kl_divergence_loss` and
//! `binary_cross_entropy_loss` (EasyRec `build_kd_loss` in `easy_rec/python/builders/
//! loss_builder.py`, and its `BINARY_CROSS_ENTROPY_LOSS` without a teacher) and
//! `l2_distill_loss` (AutoFAS, Li et al. KDD 2022). Roles: the student's `logits` and the
//! teacher's `labels`, of one shape.
//!
//! The form follows the shape, as `classification` does: one column ([B] or [B, 1]) is a row
//! term of the fused row group (its WGSL in `shaders/binary.wgsl`), so it adds no pass over
//! logits that other per-row terms read; [B, C] with C ≥ 2 is a softmax form of the softmax group
//! of its logits (`src/losses/softmax/kd.rs`), sharing its passes with every softmax term on the
//! same logits; `binary_cross_entropy_loss` over [B, C] is element-wise (EasyRec takes σ of every
//! element and the mean over all B·C of them), a row term over B·C elements. Reference:
//! `src/reference/distill.rs`.

pub(crate) mod params;

use super::family::{wrong_params, Family, Form, LossType, Role, RoleKind, RowLoss};
use super::params::ParamSpec;
use super::rows::row_form;
use super::shapes::{expect_vector, rows_of, spec};
use super::softmax::params::{Distill, SoftmaxForm, SoftmaxParams};
use crate::batch::{DType, Shapes};
use crate::config::{LossTerm, Reduction, TermParams};
use crate::error::{Error, Result};
use crate::reference::distill as reference;
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::f32_literal;
use params::{BceParams, DistillKind, KlParams, L2DistillParams, Teacher};

const STUDENT_LOGITS: Role = Role::required("logits", RoleKind::Logits);
const STUDENT_PROBS: Role = Role::required("logits", RoleKind::Probabilities);
const TEACHER_LOGITS: Role = Role::required("labels", RoleKind::RealLabels);
const TEACHER_PROBS: Role = Role::required("labels", RoleKind::BinaryLabels);

/// The roles of a term by what its inputs hold: a probability input is checked in [0, 1]; the
/// plain `binary_cross_entropy_loss` (no teacher) reads targets in [0, 1].
fn roles(teacher: Option<Teacher>) -> &'static [Role] {
    static SETS: [[Role; 2]; 4] = [
        [STUDENT_LOGITS, TEACHER_LOGITS],
        [STUDENT_LOGITS, TEACHER_PROBS],
        [STUDENT_PROBS, TEACHER_LOGITS],
        [STUDENT_PROBS, TEACHER_PROBS],
    ];
    let (pred, label) = teacher.map_or((true, false), |k| (k.pred_is_logits, k.label_is_logits));
    &SETS[2 * usize::from(!pred) + usize::from(!label)]
}

/// The WGSL arguments after (x, y): 1/T and the two logit flags.
fn flags(k: &Teacher) -> String {
    format!(
        "{}, {}, {}",
        f32_literal((1.0 / k.temperature) as f32),
        k.pred_is_logits,
        k.label_is_logits
    )
}

static KL_ROW: RowLoss = RowLoss {
    call: |p, v| {
        let k = kl(p).teacher();
        format!("kd_kl({}, {}, {})", v("logits"), v("labels"), flags(&k))
    },
    grads: &[("logits", "y")],
    reference: |p, x| {
        let (l, g) = reference::kl_binary(x[0], x[1], &kl(p).teacher());
        (l, [g, 0.0])
    },
    default_reduction: Reduction::Mean,
};

static BCE_ROW: RowLoss = RowLoss {
    call: |p, v| match bce(p).teacher() {
        Some(k) => format!("kd_bce({}, {}, {})", v("logits"), v("labels"), flags(&k)),
        None => format!("sigmoid_ce({}, {})", v("logits"), v("labels")),
    },
    grads: &[("logits", "y")],
    reference: |p, x| {
        let (l, g) = match bce(p).teacher() {
            Some(k) => reference::bce_teacher(x[0], x[1], &k),
            None => crate::reference::binary::sigmoid_ce(x[0], x[1], 0.0, None),
        };
        (l, [g, 0.0])
    },
    default_reduction: Reduction::Mean,
};

static L2_ROW: RowLoss = RowLoss {
    call: |p, v| {
        let inv_t = f32_literal((1.0 / l2(p).temperature) as f32);
        format!("l2_distill({}, {}, {inv_t})", v("logits"), v("labels"))
    },
    grads: &[("logits", "y")],
    reference: |p, x| {
        let (l, g) = reference::l2_binary(x[0], x[1], l2(p).temperature);
        (l, [g, 0.0])
    },
    default_reduction: Reduction::Mean,
};

fn kl(p: &dyn TermParams) -> &KlParams {
    p.as_any().downcast_ref().expect("kl_divergence_loss")
}

fn bce(p: &dyn TermParams) -> &BceParams {
    p.as_any()
        .downcast_ref()
        .expect("binary_cross_entropy_loss")
}

fn l2(p: &dyn TermParams) -> &L2DistillParams {
    p.as_any().downcast_ref().expect("l2_distill_loss")
}

const ROLES: &[Role] = &[STUDENT_LOGITS, TEACHER_LOGITS];

/// `kl_divergence_loss` (EasyRec `KL_DIVERGENCE_LOSS`, `build_kd_loss`).
static KL_TYPE: LossType = LossType {
    name: "kl_divergence_loss",
    roles: ROLES,
    params: ParamSpec::of::<KlParams>(),
    regression: false,
    family: &DistillFamily(DistillKind::Kl),
};

/// `binary_cross_entropy_loss` (EasyRec `BINARY_CROSS_ENTROPY_LOSS`: `build_kd_loss` with a
/// teacher key, `build` without).
static BCE_TYPE: LossType = LossType {
    name: "binary_cross_entropy_loss",
    roles: ROLES,
    params: ParamSpec::of::<BceParams>(),
    regression: false,
    family: &DistillFamily(DistillKind::Bce),
};

/// `l2_distill_loss` (AutoFAS, Li et al. KDD 2022).
static L2_TYPE: LossType = LossType {
    name: "l2_distill_loss",
    roles: ROLES,
    params: ParamSpec::of::<L2DistillParams>(),
    regression: false,
    family: &DistillFamily(DistillKind::L2),
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&KL_TYPE, &BCE_TYPE, &L2_TYPE];

struct DistillFamily(DistillKind);

impl DistillFamily {
    /// The term's teacher (`None`: the plain `binary_cross_entropy_loss`).
    fn teacher(&self, term: &LossTerm) -> Result<Option<Teacher>> {
        let k = &term.kind;
        match self.0 {
            DistillKind::Kl => k.params::<KlParams>().map(|p| Some(p.teacher())),
            DistillKind::Bce => k.params::<BceParams>().map(BceParams::teacher),
            DistillKind::L2 => k
                .params::<L2DistillParams>()
                .map(|p| Some(Teacher::logits(p.temperature))),
        }
        .ok_or_else(|| wrong_params(term))
    }

    fn row_loss(&self) -> &'static RowLoss {
        match self.0 {
            DistillKind::Kl => &KL_ROW,
            DistillKind::Bce => &BCE_ROW,
            DistillKind::L2 => &L2_ROW,
        }
    }

    /// A [B, C] term: the teacher of the same shape, then the element-wise BCE row form over
    /// B·C elements or the softmax form.
    fn resolve_classes(
        &'static self,
        term: &LossTerm,
        shapes: &Shapes,
        teacher: Option<Teacher>,
        (b, c): (u64, u64),
    ) -> Result<(Form, u64)> {
        let labels = input(term, "labels");
        let s = spec(shapes, term, labels, "labels")?;
        if s.shape != [b as usize, c as usize] || s.dtype != DType::F32 {
            return Err(Error::tensor(
                labels,
                Some(&term.name),
                format!(
                    "role 'labels' (the teacher) expects F32 of the logits' shape [{b}, {c}], got \
                     {:?} {}",
                    s.shape,
                    s.dtype.name()
                ),
            ));
        }
        params::check_weights(term, self.0, teacher, false)?;
        if self.0 == DistillKind::Bce {
            return Ok((row_form(term, roles(teacher), &BCE_ROW, None), b * c));
        }
        let teacher = teacher.expect("kl and l2 distillation always have a teacher");
        let form = SoftmaxForm {
            params: SoftmaxParams {
                temperature: teacher.temperature,
                ..SoftmaxParams::default()
            },
            classes: c,
            ids: false,
            distill: Some(Distill {
                kind: self.0,
                teacher,
            }),
        };
        Ok((Form::Softmax(form), b))
    }
}

fn input<'a>(term: &'a LossTerm, role: &str) -> &'a str {
    term.input(role)
        .expect("required roles are checked by the config")
}

impl Family for DistillFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let teacher = self.teacher(term)?;
        let name = input(term, "logits");
        let logits = spec(shapes, term, name, "logits")?;
        if rows_of(logits).is_some() {
            let b = expect_vector(shapes, term, name, "logits", None, &[DType::F32])?;
            let labels = input(term, "labels");
            expect_vector(shapes, term, labels, "labels", Some(b), &[DType::F32])?;
            params::check_weights(term, self.0, teacher, true)?;
            return Ok((row_form(term, roles(teacher), self.row_loss(), None), b));
        }
        match logits.shape.as_slice() {
            [b, c] if *b >= 1 && *c >= 2 && logits.dtype == DType::F32 => {
                self.resolve_classes(term, shapes, teacher, (*b as u64, *c as u64))
            }
            other => Err(Error::tensor(
                name,
                Some(&term.name),
                format!(
                    "{} expects F32 student logits [B] or [B, 1] (one logit per row: two classes \
                     [1 − p, p]) or [B, C] with C >= 2 and B >= 1 (softmax over the row), got \
                     {other:?} {}",
                    term.kind.loss_type(),
                    logits.dtype.name()
                ),
            )),
        }
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        reference::evaluate(term, batch, self.0, self.teacher(term)?)
    }

    fn default_reduction(&self, _: &LossTerm) -> Reduction {
        // EasyRec: tf.reduce_mean over the rows (elements for BCE over [B, C]).
        Reduction::Mean
    }
}

//! `jrc_loss` (joint ranking-calibration; EasyRec `JRC_LOSS`, docs/LOSSES.md) on the GPU:
//! `shaders/jrc.wgsl`. Reference: `reference/jrc.rs`.
//!
//! After the session grouping, the term gathers (z0, z1, y, w) into sorted order. With
//! `same_label_loss` one sweep gives every row its session's log-sum-exp of both columns and
//! label counts, hence its listwise loss and d ge/dz. Without it, a first sweep gives each row the
//! log-sum-exp over itself and the opposite-label rows of its session (E_i), and a second sweep
//! sums, for each row, what it receives through the other rows' E. The calibration CE is per row.
//! Partials: ce in the term's slot ((Σ w·ce, Σ w, #{w ≠ 0}, 0), reduced as configured), ge in a
//! second slot (Σ L_i, divided by B). The combine pass forms α·ce + (1 − α)·ge, or the learned
//! uncertainty form, and writes a coefficient for each part; `apply` scatters both into the
//! logits gradient.

pub(crate) mod params;

use super::family::{wrong_params, Family, Form, LossType, Resolved, Role, RoleKind, SessionTerm};
use super::params::ParamSpec;
use super::session::{term_shader, SessionCtx, Shared, TermPasses};
use crate::batch::{DType, Shapes};
use crate::combine::{optimizer_words, TermInfo, JRC_STATE_WORDS, KIND_JRC, T_COEF2};
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Binding, Params, PassSpec, Shader, Source, Work, WG};
use crate::layout::{Layout, LayoutBuilder};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::Specialization;
use params::JrcParams;
pub use params::JrcWeighting;
use std::sync::Arc;

/// `jrc_loss` (EasyRec `JRC_LOSS`, Sheng et al. 2023): logits [B, 2], labels 0/1, sessions.
static JRC_TYPE: LossType = LossType {
    name: "jrc_loss",
    roles: &[
        Role::required("logits", RoleKind::Logits),
        Role::required("labels", RoleKind::ZeroOneLabels),
        Role::required("session", RoleKind::SessionIds),
    ],
    params: ParamSpec::of::<JrcParams>(),
    regression: false,
    family: &JrcFamily,
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&JRC_TYPE];

struct JrcFamily;

impl Family for JrcFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let p: &JrcParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let name = term.input("logits").expect("required");
        let logits = super::shapes::spec(shapes, term, name, "logits")?;
        let b = match logits.shape.as_slice() {
            [b, 2] if *b > 0 && logits.dtype == DType::F32 => *b as u64,
            other => {
                return Err(Error::tensor(
                    name,
                    Some(&term.name),
                    format!(
                        "jrc_loss expects logits [B, 2] F32 with B >= 1, got {other:?} {}",
                        logits.dtype.name()
                    ),
                ))
            }
        };
        let labels = term.input("labels").expect("required");
        super::shapes::expect_vector(shapes, term, labels, "labels", Some(b), &[DType::F32])?;
        let session = term.input("session").expect("required");
        let ints = DType::INTEGERS;
        super::shapes::expect_vector(shapes, term, session, "session", Some(b), &ints)?;
        let jrc = JrcTerm {
            alpha: p.alpha,
            same_label_loss: p.same_label_loss,
            weighting: p.weighting.clone(),
        };
        Ok((Form::Session(Arc::new(jrc)), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        state: TermState,
    ) -> Result<TermValue> {
        let p: &JrcParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::jrc::evaluate(term, batch, p, state.jrc_u)
    }
}

impl LossTerm {
    /// Whether this is a `jrc_loss` term that learns its own (u1, u2) (docs/LOSSES.md, JRC with
    /// `loss_weight_strategy = "uncertainty"`), so that d total / d(u1, u2) is reported.
    pub fn learns_jrc_weights(&self) -> bool {
        self.kind
            .params::<JrcParams>()
            .is_some_and(|p| matches!(p.weighting, JrcWeighting::Uncertainty(_)))
    }
}

/// A resolved `jrc_loss` term.
#[derive(Debug)]
pub(crate) struct JrcTerm {
    pub alpha: f64,
    pub same_label_loss: bool,
    pub weighting: JrcWeighting,
}

impl SessionTerm for JrcTerm {
    fn passes(&self, term: &Resolved, ctx: &mut SessionCtx) -> Result<TermPasses> {
        let name = &term.term.name;
        let buffers = JrcBuffers {
            rows: (ctx.alloc)(format!("jrc_rows/{name}"), term.rows * 16)?,
            rows_lse: (ctx.alloc)(format!("jrc_rows_lse/{name}"), term.rows * 16)?,
            grad: (ctx.alloc)(format!("jrc_grad/{name}"), term.rows * 8)?,
        };
        let ge_slot = *ctx.next_slot;
        *ctx.next_slot += 1;
        Ok(passes(
            self,
            term,
            ctx.slot,
            ge_slot,
            ctx.shared,
            buffers,
            ctx.accumulate,
        ))
    }

    fn regions(&self, term: &Resolved, layout: &mut LayoutBuilder) {
        if let JrcWeighting::Uncertainty(_) = self.weighting {
            layout.state(term.slot, "jrc", JRC_STATE_WORDS);
        }
    }

    fn term_info(&self, term: &Resolved, layout: &Layout, info: &mut TermInfo) {
        info.kind = KIND_JRC;
        info.alpha = self.alpha as f32;
        if let JrcWeighting::Uncertainty(opt) = &self.weighting {
            info.jrc_learn = 1;
            info.jrc_state = layout.state(term.slot, "jrc").expect("requested").offset;
            let (code, [lr, b1, b2, eps]) = optimizer_words(opt);
            info.optimizer = code;
            info.learning_rate = lr;
            info.beta1 = b1;
            info.beta2 = b2;
            info.epsilon = eps;
        }
    }
}

/// Internal buffers of one JRC term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JrcBuffers {
    /// The sorted rows: (z0, z1, y, w).
    pub rows: usize,
    /// Without same_label_loss: (z0, z1, y, E_i) per sorted row.
    pub rows_lse: usize,
    /// d ge/dz per sorted row (vec2), before the coefficient.
    pub grad: usize,
}

/// The passes of JRC term `term`: ce partials in slot `slot`, ge partials in `ge_slot`.
fn passes(
    jrc: &JrcTerm,
    term: &Resolved,
    slot: u32,
    ge_slot: u32,
    shared: Shared,
    buffers: JrcBuffers,
    grad_accumulates: bool,
) -> TermPasses {
    let same_label_loss = &jrc.same_label_loss;
    let label = format!("jrc[{}]", term.term.name);
    let coef = super::common::coef_index(term.slot);
    let (common, grouping_binds) = term_shader(&term.weights, shared.grouping);
    let spec = common
        .bool("SAME_LABEL", *same_label_loss)
        .u32("SLOT", slot)
        .u32("GE_SLOT", ge_slot)
        .u32("COEF", coef as u32)
        .u32("COEF2", (coef - crate::combine::T_COEF + T_COEF2) as u32)
        .bool("ACCUMULATE", grad_accumulates)
        .bool("SWEEP_UNROLL", true);
    let pass = |name: &str, entry: &'static str, spec: Specialization, binds: Vec<Binding>| {
        let mut all = grouping_binds.clone();
        all.extend(binds);
        PassSpec {
            label: format!("{label} {name}"),
            shader: Shader::File("jrc.wgsl", spec),
            entry,
            binds: all,
            work: Work::Rows { rows_per_wg: WG },
            reads: Vec::new(),
            params: Params::none(),
        }
    };
    let rows_of = |role: &str, row_bytes: u64| Bind::Rows {
        source: Source::Input(term.input(role).to_string()),
        row_bytes,
    };
    let gather = PassSpec {
        reads: vec![
            term.input("logits").to_string(),
            term.input("labels").to_string(),
        ]
        .into_iter()
        .chain(term.weights.iter().map(|(t, _)| t.clone()))
        .collect(),
        ..pass(
            "gather",
            "jrc_gather",
            spec.clone(),
            vec![
                bind("chunk", Bind::Chunk),
                internal("rows_out", buffers.rows),
                bind("logits", rows_of("logits", 8)),
                bind("labels", rows_of("labels", 4)),
            ],
        )
    };
    let sweep = |name: &str, spec: Specialization, rows: usize, out: Option<usize>| {
        let mut binds = vec![
            bind("chunk", Bind::Chunk),
            internal("partials", shared.partials),
            internal("rows", rows),
            internal("jrc_grad", buffers.grad),
        ];
        binds.extend(out.map(|o| internal("rows_out", o)));
        pass(name, "jrc_sweep", spec, binds)
    };
    let mut forward = vec![gather];
    if *same_label_loss {
        forward.push(sweep("session softmax", spec.clone(), buffers.rows, None));
    } else {
        forward.push(sweep(
            "opposite-label softmax",
            spec.clone(),
            buffers.rows,
            Some(buffers.rows_lse),
        ));
        let gradient = spec.clone().bool("OPPOSITE_GRADIENT", true);
        forward.push(sweep(
            "opposite-label gradient",
            gradient,
            buffers.rows_lse,
            None,
        ));
    }
    let apply = pass(
        "apply",
        "jrc_apply",
        spec,
        vec![
            bind("chunk", Bind::Chunk),
            internal("scalars", shared.scalars),
            bind(
                "grad",
                Bind::Whole(Source::Grad(term.input("logits").to_string())),
            ),
            internal("jrc_rows", buffers.rows),
            internal("jrc_grad_in", buffers.grad),
        ],
    );
    TermPasses {
        forward,
        apply,
        second_slot: Some(ge_slot),
    }
}

//! The listwise terms (`listwise_rank_loss`, `listwise_distill_loss`; docs/LOSSES.md §6a; EasyRec
//! `easy_rec/python/loss/listwise_loss.py`) on the GPU: `shaders/listwise.wgsl`. Reference:
//! `reference/listwise.rs`.
//!
//! A listwise term is a session term: it shares its group's session grouping (one sort per
//! session tensor, [`super::session`]) with the pairwise and JRC terms on that tensor. After the
//! grouping, a per-session softmax is a segmented reduction over the sorted rows, O(B) work and
//! memory, with every loop bounded for llvmpipe's loop limiter:
//! 1. `gather`: each sorted row's (z, label target, x), z = (x·|w| + b)/T (w, b from the state);
//! 2. `block`: the first row of each session within each block of 256 sorted rows sums that
//!    part of its session (≤ 256 iterations): (max z, Σ e^{z − max}, target max, A, Q);
//! 3. `session`: the first row of each session merges its blocks' parts (≤ B/256 + 1
//!    iterations), writes the session's totals and adds l_S and 1 to the partials;
//! 4. `grad`: every row's dl_S/dz, and with `scale_logits` the partials of Σ g·x and Σ g;
//! 5. `apply` (after the combine): coefficient · g · |w|/T into the logits' gradient.
//!
//! The combine pass reduces (Σ l_S, N, N, 0) to Σ l_S / N (`reduction = "sum"`: Σ l_S), forms
//! d total/d(w, b) from the second slot and steps (w, b) with the term's `scale_optimizer`.

pub(crate) mod params;

use super::family::{wrong_params, Family, Form, LossType, Resolved, Role, RoleKind, SessionTerm};
use super::params::ParamSpec;
use super::session::{term_shader, SessionCtx, Shared, TermPasses};
use crate::batch::Shapes;
use crate::combine::{optimizer_words, TermInfo, KIND_LISTWISE, SCALE_STATE_WORDS};
use crate::config::{LossTerm, Reduction, TermParams};
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Binding, Params, PassSpec, Shader, Source, Work, WG};
use crate::layout::{Layout, LayoutBuilder};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::Specialization;
use params::{ListParams, ListSpec, ListTargets, ListwiseDistillParams, ListwiseRankParams};
use std::sync::Arc;

const ROLES: &[Role] = &[
    Role::required("logits", RoleKind::Logits),
    Role::required("labels", RoleKind::RealLabels),
    Role::required("session", RoleKind::SessionIds),
];

/// The spec of parameters of type `P`.
fn spec_of<P: ListParams + 'static>(p: &dyn TermParams) -> Option<ListSpec> {
    p.as_any().downcast_ref::<P>().map(P::spec)
}

/// A listwise loss type: how it reads its spec from its parameters.
struct ListwiseFamily(fn(&dyn TermParams) -> Option<ListSpec>);

/// `listwise_rank_loss` (EasyRec `LISTWISE_RANK_LOSS`, `listwise_rank_loss`).
static LISTWISE_RANK: LossType = LossType {
    name: "listwise_rank_loss",
    roles: ROLES,
    params: ParamSpec::of::<ListwiseRankParams>(),
    regression: false,
    family: &ListwiseFamily(spec_of::<ListwiseRankParams>),
};

/// `listwise_distill_loss` (EasyRec `LISTWISE_DISTILL_LOSS`, `listwise_distill_loss`).
static LISTWISE_DISTILL: LossType = LossType {
    name: "listwise_distill_loss",
    roles: ROLES,
    params: ParamSpec::of::<ListwiseDistillParams>(),
    regression: false,
    family: &ListwiseFamily(spec_of::<ListwiseDistillParams>),
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&LISTWISE_RANK, &LISTWISE_DISTILL];

/// The largest batch: the `session` pass merges up to B/256 + 1 block parts in one invocation,
/// which must stay under llvmpipe's 65,535 loop iterations.
pub(crate) const MAX_ROWS: u64 = 256 * 60_000;

impl ListwiseFamily {
    fn spec(&self, term: &LossTerm) -> Result<ListSpec> {
        (self.0)(term.kind.raw_params()).ok_or_else(|| wrong_params(term))
    }
}

impl Family for ListwiseFamily {
    fn resolve(
        &'static self,
        lt: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let spec = self.spec(term)?;
        let b = super::rows::check_columns(term, lt, shapes)?;
        if b > MAX_ROWS {
            return Err(Error::Unsupported(format!(
                "term '{}': listwise terms take at most {MAX_ROWS} rows (a session's block \
                 parts are merged in one GPU invocation), the logits have {b}",
                term.name
            )));
        }
        Ok((Form::Session(Arc::new(ListTerm { spec })), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        state: TermState,
    ) -> Result<TermValue> {
        let spec = self.spec(term)?;
        crate::reference::listwise::evaluate(term, batch, &spec, state.jrc_u)
    }

    /// EasyRec reduces with a plain mean over the sessions.
    fn default_reduction(&self, _: &LossTerm) -> Reduction {
        Reduction::Mean
    }

    /// EasyRec refuses sample weights (`listwise_rank_loss` logs "use unsupported sample
    /// weight" and drops them); the sessions' mean has no weighted form.
    fn validate(&self, term: &LossTerm) -> Result<()> {
        if term.sample_weights.is_some() {
            return Err(Error::term(
                &term.name,
                format!(
                    "'sample_weights' does not apply to {}: EasyRec ignores sample weights for \
                     listwise losses (it logs 'use unsupported sample weight' and takes the plain \
                     mean over sessions)",
                    term.kind.loss_type()
                ),
            ));
        }
        match term.reduction {
            None | Some(Reduction::Mean) | Some(Reduction::Sum) => Ok(()),
            Some(other) => Err(Error::term(
                &term.name,
                format!(
                    "'reduction' of {} is 'mean' (over sessions, EasyRec's) or 'sum', not \
                     '{other:?}': there are no sample weights to weigh sessions by",
                    term.kind.loss_type()
                ),
            )),
        }
    }
}

impl LossTerm {
    /// Whether this is a listwise term that learns its affine (w, b) (`scale_logits`), so that
    /// d total / d(w, b) is reported.
    pub fn learns_listwise_scale(&self) -> bool {
        self.listwise_scale().is_some()
    }

    /// The optimiser of a listwise term's learned (w, b), if it learns them.
    pub(crate) fn listwise_scale(&self) -> Option<crate::config::Optimizer> {
        spec_of::<ListwiseRankParams>(self.kind.raw_params())
            .or_else(|| spec_of::<ListwiseDistillParams>(self.kind.raw_params()))
            .and_then(|s| s.scale)
    }
}

/// A resolved listwise term.
#[derive(Debug)]
pub(crate) struct ListTerm {
    pub spec: ListSpec,
}

impl SessionTerm for ListTerm {
    fn passes(&self, term: &Resolved, ctx: &mut SessionCtx) -> Result<TermPasses> {
        let name = &term.term.name;
        let buffers = ListBuffers {
            rows: (ctx.alloc)(format!("list_rows/{name}"), term.rows * 16)?,
            stats: (ctx.alloc)(format!("list_stats/{name}"), term.rows * 32)?,
            grad: (ctx.alloc)(format!("list_grad/{name}"), term.rows * 4)?,
            scale_word: ctx.layout.state(term.slot, "scale").map_or(0, |r| r.offset),
        };
        let scale_slot = self.spec.scale.as_ref().map(|_| {
            let s = *ctx.next_slot;
            *ctx.next_slot += 1;
            s
        });
        Ok(passes(self, term, ctx, buffers, scale_slot))
    }

    fn regions(&self, term: &Resolved, layout: &mut LayoutBuilder) {
        if self.spec.scale.is_some() {
            layout.state(term.slot, "scale", SCALE_STATE_WORDS);
        }
    }

    fn term_info(&self, term: &Resolved, layout: &Layout, info: &mut TermInfo) {
        info.kind = KIND_LISTWISE;
        // Partials (Σ l_S, N, N, 0): `mean` divides by N through nonzero_mean's count.
        info.reduction = match term.reduction() {
            Reduction::Sum => crate::combine::reduction_code(Reduction::Sum),
            _ => crate::combine::reduction_code(Reduction::NonzeroMean),
        };
        info.temperature = self.spec.temperature as f32;
        if let Some(opt) = &self.spec.scale {
            info.jrc_learn = 1;
            info.jrc_state = layout.state(term.slot, "scale").expect("requested").offset;
            let (code, [lr, b1, b2, eps]) = optimizer_words(opt);
            info.optimizer = code;
            info.learning_rate = lr;
            info.beta1 = b1;
            info.beta2 = b2;
            info.epsilon = eps;
        }
    }
}

/// Internal buffers of one listwise term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListBuffers {
    /// The sorted rows: (z, label target, x, 0).
    pub rows: usize,
    /// Two vec4 per sorted row: (max z, Σ e^{z − max}, target max, A) and (Q, 0, 0, 0) of the
    /// row's session part (block) or, at a session's first row, of the whole session.
    pub stats: usize,
    /// dl_S/dz per sorted row, before the coefficient.
    pub grad: usize,
    /// The first state word of (w, m, v, b, m, v, step) with `scale_logits`.
    pub scale_word: u32,
}

/// listwise.wgsl's constants for the term.
fn term_spec(
    spec: &ListSpec,
    common: Specialization,
    slot: u32,
    scale_slot: Option<u32>,
    coef: usize,
) -> Specialization {
    let (kind, clip) = match spec.targets {
        ListTargets::Raw => (0, 1.0),
        ListTargets::LabelLogits => (1, 1.0),
        ListTargets::Distill { clip_max } => (2, clip_max),
    };
    common
        .u32("TARGETS", kind)
        .f32("CLIP_MAX", clip)
        .f32("TEMPERATURE", spec.temperature)
        .bool("SCALE", scale_slot.is_some())
        .u32("SLOT", slot)
        .u32("SCALE_SLOT", scale_slot.unwrap_or(0))
        .u32("COEF", coef as u32)
        .u32(
            "SCALE_W",
            (coef - crate::combine::T_COEF + crate::combine::T_U1) as u32,
        )
}

/// The passes of listwise term `term`: its loss partials in the context's slot, Σ g·x and Σ g in
/// `scale_slot` with `scale_logits`.
fn passes(
    list: &ListTerm,
    term: &Resolved,
    ctx: &SessionCtx,
    buffers: ListBuffers,
    scale_slot: Option<u32>,
) -> TermPasses {
    let shared: Shared = ctx.shared;
    let label = format!("listwise[{}]", term.term.name);
    let coef = super::common::coef_index(term.slot);
    let (common, grouping_binds) = term_shader(&term.weights, shared.grouping);
    let spec = term_spec(&list.spec, common, ctx.slot, scale_slot, coef)
        .u32("SCALE_STATE", buffers.scale_word)
        .bool("ACCUMULATE", ctx.accumulate);
    let pass = |name: &str, entry: &'static str, binds: Vec<Binding>| {
        let mut all = grouping_binds.clone();
        all.push(bind("chunk", Bind::Chunk));
        all.extend(binds);
        PassSpec {
            label: format!("{label} {name}"),
            shader: Shader::File("listwise.wgsl", spec.clone()),
            entry,
            binds: all,
            work: Work::Rows { rows_per_wg: WG },
            reads: Vec::new(),
            params: Params::none(),
        }
    };
    let rows_of = |role: &str| Bind::Rows {
        source: Source::Input(term.input(role).to_string()),
        row_bytes: 4,
    };
    let mut gather_binds = vec![
        internal("rows_out", buffers.rows),
        bind("logits", rows_of("logits")),
        bind("labels", rows_of("labels")),
    ];
    if scale_slot.is_some() {
        gather_binds.push(internal("state", shared.state));
    }
    let gather = PassSpec {
        reads: vec![
            term.input("logits").to_string(),
            term.input("labels").to_string(),
        ],
        ..pass("gather", "list_gather", gather_binds)
    };
    let block = pass(
        "block",
        "list_block",
        vec![
            internal("rows", buffers.rows),
            internal("stats", buffers.stats),
        ],
    );
    let session = pass(
        "session",
        "list_session",
        vec![
            internal("stats", buffers.stats),
            internal("partials", shared.partials),
        ],
    );
    let mut grad_binds = vec![
        internal("rows", buffers.rows),
        internal("stats_in", buffers.stats),
        internal("list_grad", buffers.grad),
    ];
    if scale_slot.is_some() {
        grad_binds.push(internal("partials", shared.partials));
    }
    let grad = pass("grad", "list_grad_rows", grad_binds);
    let apply = pass(
        "apply",
        "list_apply",
        vec![
            internal("scalars", shared.scalars),
            bind(
                "grad",
                Bind::Whole(Source::Grad(term.input("logits").to_string())),
            ),
            internal("list_grad_in", buffers.grad),
        ],
    );
    TermPasses {
        forward: vec![gather, block, session, grad],
        apply,
        second_slot: scale_slot,
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_ROWS;
    use crate::batch::{DType, Shapes};
    use crate::config::LossConfig;
    use crate::error::Error;

    /// The session pass merges up to B/256 + 1 block parts in one invocation: a batch past the
    /// cap is refused when the plan is built, naming the term; one at the cap is accepted.
    #[test]
    fn batches_past_the_loop_limit_cap_are_refused() {
        let config = LossConfig::from_toml_str(
            "[[losses]]\nname = 'lw'\nloss_type = 'listwise_rank_loss'\nlogits = 'x'\nlabels = 'y'\nsession = 's'\n",
        )
        .unwrap();
        let shapes = |b: usize| {
            Shapes::new()
                .tensor("x", &[b], DType::F32)
                .tensor("y", &[b], DType::F32)
                .tensor("s", &[b], DType::I32)
        };
        let at_cap = crate::schedule::schedule(&config, &shapes(MAX_ROWS as usize));
        assert!(at_cap.is_ok(), "{:?}", at_cap.err());
        let e = crate::schedule::schedule(&config, &shapes(MAX_ROWS as usize + 1)).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("'lw'") && m.contains("rows")),
            "{e}"
        );
    }
}

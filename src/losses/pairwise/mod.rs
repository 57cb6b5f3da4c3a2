//! The pairwise-in-session terms (`pair_wise_loss`, `pairwise_logistic_loss`,
//! `pairwise_focal_loss`, `pairwise_hinge_loss`; docs/LOSSES.md, "Pairwise-in-session terms")
//! on the GPU: `shaders/pairwise.wgsl`. Reference: `reference/pairwise.rs`.
//!
//! After the session grouping ([`super::session`]) each term gathers its (x, y, w, row) into
//! sorted order, then one sweep visits every pair of every session from both ends: the higher
//! row adds the pair's weighted loss to the term's partials, and each row sums its own d/dx over
//! its pairs into `pair_grad` (no float atomics; Σ size² work, O(B) memory). After the combine
//! pass has the term's coefficient, `apply` scatters coefficient · pair_grad into the logits
//! gradient. Partials hold (Σ w_i·l, Σ w_i, #{w_i ≠ 0}, #pairs) over the pairs, so every
//! reduction applies over pairs.
//!
//! OHEM over pairs reuses the selection of [`super::select`]: its histogram rounds are sweeps
//! that recompute the pair values (no per-pair buffer), its picks are the shared ones, with k
//! taken from the pair count found by the first round. Ties at the k-th value keep the lowest
//! pair index i·B + j (batch rows), so OHEM needs B ≤ 65,536.

pub(crate) mod params;

use super::family::{wrong_params, Family, Form, LossType, Resolved, Role, RoleKind, SessionTerm};
use super::params::ParamSpec;
use super::select;
use super::session::{term_shader, SessionCtx, Shared, TermPasses};
use crate::batch::Shapes;
use crate::combine::{TermInfo, KIND_PAIRS};
use crate::config::{LossTerm, TermParams};
use crate::error::{Error, Result};
use crate::kernel::{
    bind, internal, Bind, Binding, Chunk, Params, PassSpec, Shader, Source, Work, WG,
};
use crate::layout::{Layout, LayoutBuilder};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::Specialization;
pub use params::PairLoss;
use params::{
    PairParams, PairWiseParams, PairwiseFocalParams, PairwiseHingeParams, PairwiseLogisticParams,
};
use std::sync::Arc;

const ROLES: &[Role] = &[
    Role::required("logits", RoleKind::Logits),
    Role::required("labels", RoleKind::RealLabels),
    Role::optional("session", RoleKind::SessionIds),
];

/// The per-pair loss, T and OHEM ratio of parameters of type `P`.
fn pair_of<P: PairParams + 'static>(p: &dyn TermParams) -> Option<(PairLoss, f64, f64)> {
    p.as_any().downcast_ref::<P>().map(P::pair)
}

/// Reads (per-pair loss, T, OHEM ratio) from a loss type's parameters.
type PairOf = fn(&dyn TermParams) -> Option<(PairLoss, f64, f64)>;

/// A pairwise loss type: how it reads its per-pair loss from its parameters.
struct PairwiseFamily(PairOf);

macro_rules! pairwise_type {
    ($(#[$doc:meta])* $name:ident, $loss_type:literal, $params:ty) => {
        $(#[$doc])*
        static $name: LossType = LossType {
            name: $loss_type,
            roles: ROLES,
            params: ParamSpec::of::<$params>(),
            regression: false,
            family: &PairwiseFamily(pair_of::<$params>),
        };
    };
}

pairwise_type!(
    /// `pair_wise_loss` (EasyRec `PAIR_WISE_LOSS`): softplus(−(d − margin)).
    PAIR_WISE, "pair_wise_loss", PairWiseParams
);
pairwise_type!(
    /// `pairwise_logistic_loss` (EasyRec `PAIRWISE_LOGISTIC_LOSS`).
    PAIRWISE_LOGISTIC, "pairwise_logistic_loss", PairwiseLogisticParams
);
pairwise_type!(
    /// `pairwise_focal_loss` (EasyRec `PAIRWISE_FOCAL_LOSS`).
    PAIRWISE_FOCAL, "pairwise_focal_loss", PairwiseFocalParams
);
pairwise_type!(
    /// `pairwise_hinge_loss` (EasyRec `PAIRWISE_HINGE_LOSS`).
    PAIRWISE_HINGE, "pairwise_hinge_loss", PairwiseHingeParams
);

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[
    &PAIR_WISE,
    &PAIRWISE_LOGISTIC,
    &PAIRWISE_FOCAL,
    &PAIRWISE_HINGE,
];

impl PairwiseFamily {
    fn pair(&self, term: &LossTerm) -> Result<(PairLoss, f64, f64)> {
        (self.0)(term.kind.raw_params()).ok_or_else(|| wrong_params(term))
    }
}

impl Family for PairwiseFamily {
    fn resolve(
        &'static self,
        lt: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let (loss, temperature, ohem_ratio) = self.pair(term)?;
        let b = super::rows::check_columns(term, lt, shapes)?;
        let ohem = (ohem_ratio < 1.0).then_some(ohem_ratio);
        if ohem.is_some() && b > MAX_OHEM_ROWS {
            return Err(Error::Unsupported(format!(
                "term '{}': ohem_ratio over pairs needs B <= {MAX_OHEM_ROWS} rows (pair indices \
                 i*B + j must fit 32 bits), the logits have {b}",
                term.name
            )));
        }
        let pair = PairTerm {
            loss,
            temperature,
            ohem,
        };
        Ok((Form::Session(Arc::new(pair)), b))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        let (loss, temperature, ohem_ratio) = self.pair(term)?;
        crate::reference::pairwise::evaluate(term, batch, &loss, temperature, ohem_ratio)
    }
}

/// A resolved pairwise term.
#[derive(Debug)]
pub(crate) struct PairTerm {
    pub loss: PairLoss,
    pub temperature: f64,
    /// The OHEM keep ratio over pairs, when < 1.
    pub ohem: Option<f64>,
}

impl SessionTerm for PairTerm {
    fn passes(&self, term: &Resolved, ctx: &mut SessionCtx) -> Result<TermPasses> {
        let name = &term.term.name;
        let buffers = PairBuffers {
            rows: (ctx.alloc)(format!("pair_rows/{name}"), term.rows * 16)?,
            grad: (ctx.alloc)(format!("pair_grad/{name}"), term.rows * 4)?,
            select_base: ctx.layout.aux(term.slot, "select").map_or(0, |r| r.offset),
            held_rows: super::common::held_rows(ctx.cpu, ctx.block_rows, 8, term.rows),
        };
        Ok(passes(
            self,
            term,
            ctx.slot,
            ctx.shared,
            buffers,
            ctx.accumulate,
        ))
    }

    fn regions(&self, term: &Resolved, layout: &mut LayoutBuilder) {
        if self.ohem.is_some() {
            layout.aux(term.slot, "select", select::STATE_WORDS);
        }
    }

    fn term_info(&self, _: &Resolved, _: &Layout, info: &mut TermInfo) {
        info.kind = KIND_PAIRS;
        if self.ohem.is_some() {
            // OHEM: plain mean over the kept positive pairs, counted in `.z`.
            info.reduction = 0;
        }
    }
}

/// The largest batch for pairwise OHEM: pair indices i·B + j must fit 32 bits.
pub(crate) const MAX_OHEM_ROWS: u64 = 1 << 16;

/// Internal buffers of one pairwise term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PairBuffers {
    /// The sorted rows: (x, y, w, batch row) as vec4<f32>.
    pub rows: usize,
    /// Each sorted row's Σ over its pairs of d(weighted pair loss)/dx, before the coefficient.
    pub grad: usize,
    /// The OHEM selection state's first word in `aux`.
    pub select_base: u32,
    /// Sorted rows each sweep invocation holds (pairwise.wgsl's `RB`).
    pub held_rows: u32,
}

crate::gpu_struct! {
    /// One dispatch of a pair sweep (`PairSweep` in pairwise.wgsl).
    pub(crate) struct PairSweep in "pairwise.wgsl" test pair_sweep_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
        /// First word of the OHEM selection's state in `aux`.
        state: u32,
        /// B: a pair's index is i·B + j over batch rows.
        batch: u32,
        /// The selection round of a histogram sweep.
        round: u32,
        /// Its index digits.
        digits: u32,
    }
}

/// Storage buffers the passes of a session group bind, at most: the chunk and the radix sort's
/// seven, or the chunk and a gather's output, bounds, order, logits, labels and sample-weight
/// tensors.
pub(crate) fn storage_bindings(terms: &[Resolved]) -> u32 {
    terms
        .iter()
        .map(|t| 6 + t.weights.len() as u32)
        .max()
        .unwrap_or(0)
        .max(8)
}

/// pairwise.wgsl's constants for the term's per-pair loss.
fn loss_spec(spec: Specialization, loss: &PairLoss, temperature: f64) -> Specialization {
    let spec = spec.f32("TEMPERATURE", temperature);
    match loss {
        PairLoss::Logistic { margin } => spec.u32("PAIR_KIND", 0).f32("MARGIN", *margin),
        PairLoss::LogisticMargin {
            hinge_margin,
            use_label_margin,
        } => spec
            .u32("PAIR_KIND", if *use_label_margin { 1 } else { 0 })
            .f32("MARGIN", hinge_margin.unwrap_or(0.0)),
        PairLoss::Focal {
            gamma,
            alpha,
            hinge_margin,
        } => spec
            .u32("PAIR_KIND", 2)
            .f32("GAMMA", *gamma)
            .f32("ALPHA", alpha.unwrap_or(-1.0))
            .f32("HINGE", hinge_margin.unwrap_or(0.0))
            .bool("HAS_HINGE", hinge_margin.is_some()),
        PairLoss::Hinge {
            margin,
            use_label_margin,
            label_is_logits,
            use_exponent,
        } => spec
            .u32("PAIR_KIND", if *use_label_margin { 3 } else { 4 })
            .f32("MARGIN", *margin)
            .f32(
                "LABEL_SCALE",
                if *label_is_logits {
                    1.0 / temperature
                } else {
                    1.0
                },
            )
            .bool("USE_EXPONENT", *use_exponent),
    }
}

/// Builds the passes of pairwise term `term`, whose partials go to slot `slot` of the group.
fn passes(
    pair: &PairTerm,
    term: &Resolved,
    slot: u32,
    shared: Shared,
    buffers: PairBuffers,
    grad_accumulates: bool,
) -> TermPasses {
    let PairTerm {
        loss,
        temperature,
        ohem,
    } = pair;
    let label = format!("pairwise[{}]", term.term.name);
    let rows = term.rows;
    let (common, grouping_binds) = term_shader(&term.weights, shared.grouping);
    let spec = loss_spec(common, loss, *temperature)
        .bool("OHEM", ohem.is_some())
        .u32(
            "RATIO_UNITS",
            crate::reference::combine::ratio_units(ohem.unwrap_or(1.0)),
        )
        .u32("SLOT", slot)
        .u32("COEF", super::common::coef_index(term.slot) as u32)
        .bool("ACCUMULATE", grad_accumulates);
    let pass = |name: String, entry: &'static str, spec: Specialization, binds: Vec<Binding>| {
        let mut all = grouping_binds.clone();
        all.extend(binds);
        PassSpec {
            label: name,
            shader: Shader::File("pairwise.wgsl", spec),
            entry,
            binds: all,
            work: Work::Rows { rows_per_wg: WG },
            reads: Vec::new(),
            params: Params::none(),
        }
    };
    let row_input = |role: &str| Bind::Rows {
        source: Source::Input(term.input(role).to_string()),
        row_bytes: 4,
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
            format!("{label} gather"),
            "pair_gather",
            spec.clone(),
            vec![
                bind("chunk", Bind::Chunk),
                internal("rows_out", buffers.rows),
                bind("logits", row_input("logits")),
                bind("labels", row_input("labels")),
            ],
        )
    };
    // The sweeps: `held_rows` sorted rows per invocation.
    let sweep =
        |name: String, spec: Specialization, params: Params, binds: Vec<Binding>| PassSpec {
            params,
            work: Work::Rows {
                rows_per_wg: WG * buffers.held_rows,
            },
            ..pass(
                name,
                "pair_sweep",
                spec.u32("RB", buffers.held_rows).bool("SWEEP_UNROLL", true),
                binds,
            )
        };
    let sweep_binds = vec![
        bind("sweep_params", Bind::Chunk),
        internal("partials", shared.partials),
        internal("rows", buffers.rows),
        internal("pair_grad", buffers.grad),
        internal("aux", shared.aux),
    ];
    let sweep_params = |round: u32, digits: u32| {
        Params::of(&PairSweep {
            chunk: Chunk::default(),
            state: buffers.select_base,
            batch: rows as u32,
            round,
            digits,
        })
    };
    let mut forward = vec![gather];
    if ohem.is_some() {
        // Histogram rounds of the selection over the pair values v = w_i·l (higher row's view).
        let digits = select::index_digits(rows * rows);
        let select_spec = spec.clone().bool("SELECT_SWEEP", true);
        for round in 0..select::VALUE_ROUNDS + digits {
            forward.push(sweep(
                format!("{label} select round {round} histogram"),
                select_spec.clone(),
                sweep_params(round, digits),
                sweep_binds.clone(),
            ));
            forward.push(select::pick(
                &label,
                shared.aux,
                buffers.select_base,
                0,
                round,
                digits,
            ));
        }
    }
    forward.push(sweep(
        format!("{label} pairs"),
        spec.clone(),
        sweep_params(0, 0),
        sweep_binds,
    ));
    let apply = pass(
        format!("{label} apply"),
        "pair_apply",
        spec,
        vec![
            bind("chunk", Bind::Chunk),
            internal("scalars", shared.scalars),
            bind(
                "grad",
                Bind::Whole(Source::Grad(term.input("logits").to_string())),
            ),
            internal("pair_grad", buffers.grad),
        ],
    );
    TermPasses {
        forward,
        apply,
        second_slot: None,
    }
}

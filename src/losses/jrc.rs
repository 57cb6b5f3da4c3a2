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

use super::session::{term_shader, Shared, TermPasses};
use crate::combine::T_COEF2;
use crate::kernel::{bind, internal, Bind, Binding, Params, PassSpec, Shader, Source, Work, WG};
use crate::schedule::{Form, Resolved};
use crate::wgsl::Specialization;

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
pub(crate) fn passes(
    term: &Resolved,
    slot: u32,
    ge_slot: u32,
    shared: Shared,
    buffers: JrcBuffers,
    grad_accumulates: bool,
) -> TermPasses {
    let Form::Jrc {
        same_label_loss, ..
    } = &term.form
    else {
        unreachable!("jrc terms only")
    };
    let label = format!("jrc[{}]", term.term.name);
    let coef = super::coef_index(term.slot);
    let (common, grouping_binds) = term_shader(term, shared.grouping);
    let spec = common
        .bool("SAME_LABEL", *same_label_loss)
        .u32("SLOT", slot)
        .u32("GE_SLOT", ge_slot)
        .u32("COEF", coef as u32)
        .u32("COEF2", (coef - crate::combine::T_COEF + T_COEF2) as u32)
        .bool("ACCUMULATE", grad_accumulates);
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
    TermPasses { forward, apply }
}

//! `softmax_cross_entropy_with_negative_mining` on the GPU (`shaders/mining.wgsl`): EasyRec's
//! SV-softmax with K cyclic shifts of the item batch as negatives. Formula: LOSSES.md,
//! "Retrieval and embedding terms"; reference: `reference/retrieval.rs`.
//!
//! `prep` normalises users and items; `rowinfo` gathers each row's weight and whether it counts
//! (label > 0); `rows` streams each row's K negatives (O(B·K·d), nothing quadratic) into a
//! running log-sum-exp; `finish` adds the positive and writes the partials; `rows` again (GRAD)
//! writes d(w·l)/d(score) per row and item (B·(K + 1) floats) and dû_i; `items` gathers dv̂_j
//! from the rows that scored item j; `apply` scales both by the term's coefficient through the
//! normalisation. The negatives go in ranges of `columns_per_dispatch(d)` per dispatch, for
//! llvmpipe's loop limiter (as the sweeps' columns do).

pub(crate) mod params;

use super::embedding::{self, check_binding, Apply, Ctx, TermPasses};
use super::family::{
    wrong_params, EmbeddingTerm, Family, Form, LossType, ParamSpec, Resolved, Role, RoleKind,
};
use crate::batch::Shapes;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Chunk, Params, Source};
use crate::layout::Layout;
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::Specialization;
use params::MiningParams;

const ROLES: &[Role] = &[
    Role::required("user", RoleKind::Embeddings),
    Role::required("item", RoleKind::Embeddings),
    Role::optional("labels", RoleKind::RealLabels),
];

/// `softmax_cross_entropy_with_negative_mining` (EasyRec's SV-softmax).
static MINING: LossType = LossType {
    name: "softmax_cross_entropy_with_negative_mining",
    roles: ROLES,
    params: ParamSpec::of::<MiningParams>(),
    regression: false,
    family: &MiningFamily,
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&MINING];

struct MiningFamily;

impl Family for MiningFamily {
    fn resolve(&'static self, term: &LossTerm, shapes: &Shapes) -> Result<(Form, u64)> {
        let p: &MiningParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        let (b, d, first) = super::shapes::embeddings(term, ROLES, shapes)?;
        let k = p.num_negative_samples;
        if k as u64 >= b {
            return Err(Error::tensor(
                first,
                Some(&term.name),
                format!(
                    "num_negative_samples = {k} must be < B, and the batch has B = {b} rows \
                     (shape [{b}, {d}])"
                ),
            ));
        }
        Ok((
            Form::Embedding {
                dim: d,
                term: &Mining,
            },
            b,
        ))
    }

    fn reference(&self, term: &LossTerm, batch: &HostBatch, state: TermState) -> Result<TermValue> {
        let p: &MiningParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::retrieval::evaluate_mining(term, batch, p, state.step)
    }
}

/// A resolved mining term.
#[derive(Debug)]
struct Mining;

impl EmbeddingTerm for Mining {
    fn passes(&self, t: &Resolved, dim: u64, _: &Layout, ctx: &mut Ctx) -> Result<TermPasses> {
        passes(t, dim, ctx)
    }
}

crate::gpu_struct! {
    /// One dispatch over a range of negatives (`NegativeRange` in mining.wgsl).
    pub(crate) struct NegativeRange in "mining.wgsl" test negative_range_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
        /// The range's first negative (1-based) and how many.
        first: u32,
        count: u32,
    }
}

/// The passes of a `softmax_cross_entropy_with_negative_mining` term.
fn passes(t: &Resolved, dim: u64, ctx: &mut Ctx) -> Result<TermPasses> {
    let b = t.rows;
    let d = dim;
    let name = &t.term.name;
    let label = format!("negative_mining {name}");
    let p: &MiningParams = t.term.kind.params().ok_or_else(|| wrong_params(&t.term))?;
    let MiningParams {
        num_negative_samples: k_neg,
        margin,
        gamma,
        coefficient_of_support_vector,
        seed,
    } = p.clone();
    let k_neg = k_neg as u64;
    check_binding(
        name,
        "the normalised embeddings",
        b * d * 4,
        ctx.max_binding,
    )?;
    check_binding(
        name,
        "the per-score gradients",
        b * (k_neg + 1) * 4,
        ctx.max_binding,
    )?;
    let q = (ctx.alloc)(format!("{name}/q"), b * d * 4)?;
    let k = (ctx.alloc)(format!("{name}/k"), b * d * 4)?;
    let row_w = (ctx.alloc)(format!("{name}/row_w"), b * 8)?;
    let stats = (ctx.alloc)(format!("{name}/stats"), b * 8)?;
    let g = (ctx.alloc)(format!("{name}/g"), b * (k_neg + 1) * 4)?;
    let shifts = (ctx.alloc)(format!("{name}/shifts"), k_neg * 4)?;
    let dq = (ctx.alloc)(format!("{name}/dq"), b * d * 4)?;
    let dk = (ctx.alloc)(format!("{name}/dk"), b * d * 4)?;
    let user = t.input("user").to_string();
    let item = t.input("item").to_string();

    let spec = Specialization::new()
        .u32("D", d as u32)
        .u32("B", b as u32)
        .u32("K", k_neg as u32)
        .f32("GAMMA", gamma)
        .f32("MARGIN", margin)
        .f32("T_SV", coefficient_of_support_vector)
        .bool("SEEDED", seed.is_some())
        .u32("SEED", seed.unwrap_or(0));
    let kernel = |what: &'static str, spec: Specialization, binds, params, at: &str| {
        embedding::pass(
            format!("{label} {}{at}", what.trim_start_matches("mining_")),
            "mining.wgsl",
            what,
            spec,
            binds,
            params,
        )
    };
    // Negatives 1..=K in ranges short enough for llvmpipe's loop limiter (see mining.wgsl).
    let per = embedding::columns_per_dispatch(d);
    let ranges: Vec<Params> = (1..=k_neg)
        .step_by(per as usize)
        .map(|first| {
            Params::of(&NegativeRange {
                chunk: Chunk::default(),
                first: first as u32,
                count: per.min(k_neg + 1 - first) as u32,
            })
        })
        .collect();
    let first_of = |p: &Params| p.with_chunk(&Chunk::default())[crate::kernel::CHUNK_WORDS];
    let rows_binds = || {
        vec![
            bind("negatives", Bind::Chunk),
            internal("state", ctx.state),
            internal("q", q),
            internal("k", k),
            internal("row_w", row_w),
            internal("stats", stats),
            internal("g", g),
            internal("shifts", shifts),
            internal("dq", dq),
        ]
    };
    let mut row_binds = vec![internal("w_out", row_w)];
    let labels = t.term.input("labels");
    if let Some(l) = labels {
        row_binds.push(bind("labels", Bind::Whole(Source::Input(l.to_string()))));
    }
    let row_spec = spec
        .clone()
        .u32("N", b as u32)
        .bool("HAS_LABELS", labels.is_some());
    let mut forward = vec![
        embedding::prep(&label, &user, b, d, true, q, 0),
        embedding::prep(&label, &item, b, d, true, k, 0),
        embedding::rowinfo(&label, "mining.wgsl", &t.weights, row_spec, row_binds),
    ];
    for p in &ranges {
        let at = format!(" lse negatives {}..", first_of(p));
        forward.push(kernel(
            "mining_rows",
            spec.clone(),
            rows_binds(),
            p.clone(),
            &at,
        ));
    }
    forward.push(kernel(
        "mining_finish",
        spec.clone(),
        vec![
            bind("chunk", Bind::Chunk),
            internal("q", q),
            internal("k", k),
            internal("row_w", row_w),
            internal("stats", stats),
            internal("g", g),
            internal("dq", dq),
            internal("dk", dk),
            internal("partials", ctx.partials),
        ],
        Params::none(),
        "",
    ));
    for p in &ranges {
        let at = format!(" grad negatives {}..", first_of(p));
        let grad = spec.clone().bool("GRAD", true);
        forward.push(kernel("mining_rows", grad, rows_binds(), p.clone(), &at));
    }
    for p in &ranges {
        forward.push(kernel(
            "mining_items",
            spec.clone(),
            vec![
                bind("negatives", Bind::Chunk),
                internal("q", q),
                internal("g", g),
                internal("shifts", shifts),
                internal("dk", dk),
            ],
            p.clone(),
            &format!(" negatives {}..", first_of(p)),
        ));
    }
    let coef = super::common::coef_index(t.slot);
    let mut grads: Vec<String> = Vec::new();
    let mut backward = Vec::new();
    for (input, part, name, users) in [(&user, dq, "dq", true), (&item, dk, "dk", false)] {
        let accumulate = (ctx.written)(input) || grads.contains(input);
        grads.push(input.clone());
        backward.push(embedding::apply(
            &label,
            Apply {
                file: "mining.wgsl",
                input,
                n: b,
                d,
                cosine: true,
                scalars: ctx.scalars,
                coef,
                spec: spec.clone().bool("APPLY_USERS", users),
                parts: vec![internal(name, part)],
                accumulate,
            },
        ));
    }
    Ok(TermPasses {
        forward,
        backward,
        rows: b,
        grads,
        bank: None,
    })
}

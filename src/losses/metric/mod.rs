//! Circle loss and multi-similarity loss on the GPU (`shaders/metric.wgsl`). Formulas: docs/LOSSES.md,
//! "Retrieval and embedding terms"; reference: `reference/metric.rs`.
//!
//! `prep` normalises the embeddings; `rowinfo` gathers each row's weight and key (label and
//! session, 64 bits each); `forward` streams every other row through workgroup memory for each
//! row's positive and negative log-sum-exps (the cosine matrix is never stored) and writes the
//! partials; `backward` streams them again for dê_i = Σ_j (G_ij + G_ji) ê_j, with G the
//! derivative of a row's loss in S_ij (S is symmetric, so each S_ij reaches two rows' losses);
//! `apply` scales by the term's coefficient through the normalisation.

pub(crate) mod params;

use super::embedding::{self, check_binding, id_kind, Apply, Ctx, TermPasses};
use super::family::{
    wrong_params, EmbeddingTerm, Family, Form, LossType, Resolved, Role, RoleKind,
};
use super::params::ParamSpec;
use crate::batch::Shapes;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Chunk, Params, PassSpec, Source};
use crate::layout::Layout;
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::Specialization;
use params::{CircleParams, MultiSimilarityParams};

const ROLES: &[Role] = &[
    Role::required("embeddings", RoleKind::Embeddings),
    Role::required("labels", RoleKind::AnyLabels),
    Role::optional("session", RoleKind::SessionIds),
];

/// `circle_loss` (Sun et al. CVPR 2020).
static CIRCLE: LossType = LossType {
    name: "circle_loss",
    roles: ROLES,
    params: ParamSpec::of::<CircleParams>(),
    regression: false,
    family: &MetricFamily,
};

/// `multi_similarity_loss` (Wang et al. CVPR 2019).
static MULTI_SIMILARITY: LossType = LossType {
    name: "multi_similarity_loss",
    roles: ROLES,
    params: ParamSpec::of::<MultiSimilarityParams>(),
    regression: false,
    family: &MetricFamily,
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&CIRCLE, &MULTI_SIMILARITY];

/// (circle, [margin, gamma, alpha, beta, lamb]) of a metric term.
fn metric_params(term: &LossTerm) -> Result<(bool, [f64; 5])> {
    if let Some(p) = term.kind.params::<CircleParams>() {
        return Ok((true, [p.margin, p.gamma, 1.0, 1.0, 0.0]));
    }
    let p: &MultiSimilarityParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
    Ok((false, [0.0, 1.0, p.alpha, p.beta, p.lamb]))
}

struct MetricFamily;

impl Family for MetricFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        metric_params(term)?;
        let (b, d, _) = super::shapes::embeddings(term, ROLES, shapes)?;
        Ok((
            Form::Embedding {
                dim: d,
                term: &Metric,
            },
            b,
        ))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        crate::reference::metric::evaluate(term, batch)
    }
}

/// A resolved metric term.
#[derive(Debug)]
struct Metric;

impl EmbeddingTerm for Metric {
    fn passes(&self, t: &Resolved, dim: u64, _: &Layout, ctx: &mut Ctx) -> Result<TermPasses> {
        passes(t, dim, ctx)
    }
}

crate::gpu_struct! {
    /// One dispatch of a sweep (`MetricRange` in metric.wgsl).
    pub(crate) struct MetricRange in "metric.wgsl" test metric_range_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
        /// The rows visited: [first, first + count).
        first: u32,
        count: u32,
        /// Forward: bit 0 the first range, bit 1 the last.
        flags: u32,
    }
}

/// The passes of a `circle_loss` or `multi_similarity_loss` term.
fn passes(t: &Resolved, dim: u64, ctx: &mut Ctx) -> Result<TermPasses> {
    let b = t.rows;
    let d = dim;
    let name = &t.term.name;
    let label = format!("{} {name}", t.term.kind.loss_type());
    check_binding(
        name,
        "the normalised embeddings",
        b * d * 4,
        ctx.max_binding,
    )?;
    let tc = embedding::tile_columns(d, 32, ctx.workgroup_bytes).ok_or_else(|| {
        Error::Unsupported(format!(
            "term '{name}': one row of d = {d} floats does not fit the adapter's {} bytes of \
             workgroup memory",
            ctx.workgroup_bytes
        ))
    })?;
    let (circle, params) = metric_params(&t.term)?;
    let e = (ctx.alloc)(format!("{name}/e"), b * d * 4)?;
    let keys = (ctx.alloc)(format!("{name}/keys"), b * 16)?;
    let row_w = (ctx.alloc)(format!("{name}/row_w"), b * 4)?;
    let stats = (ctx.alloc)(format!("{name}/stats"), b * 16)?;
    let de = (ctx.alloc)(format!("{name}/de"), b * d * 4)?;
    let carry = (ctx.alloc)(format!("{name}/carry"), b * 16)?;
    let counts = (ctx.alloc)(format!("{name}/counts"), b * 8)?;
    let input = t.input("embeddings").to_string();

    let spec = Specialization::new()
        .u32("D", d as u32)
        .u32("TC", tc)
        .bool("TILED", ctx.tiled)
        .u32("TILE_FLOATS", tc * d as u32)
        .bool("CIRCLE", circle)
        .f32("MARGIN", params[0])
        .f32("GAMMA", params[1])
        .f32("ALPHA", params[2])
        .f32("BETA", params[3])
        .f32("LAMB", params[4]);
    let range_params = |first: u64, count: u64, flags: u32| {
        Params::of(&MetricRange {
            chunk: Chunk::default(),
            first: first as u32,
            count: count as u32,
            flags,
        })
    };
    // Column ranges short enough for llvmpipe's loop limiter (see metric.wgsl).
    let range = embedding::columns_per_dispatch(d);
    let ranges: Vec<(u64, u64)> = (0..b)
        .step_by(range as usize)
        .map(|f| (f, range.min(b - f)))
        .collect();
    let mut forward = vec![
        embedding::prep(&label, &input, b, d, true, e, 0),
        rowinfo(t, &label, &spec, ctx, [row_w, keys], b),
    ];
    for (k, &(first, count)) in ranges.iter().enumerate() {
        let flags = (k == 0) as u32 | (((k + 1 == ranges.len()) as u32) << 1);
        forward.push(embedding::pass(
            format!("{label} forward columns {first}.."),
            "metric.wgsl",
            "forward",
            spec.clone(),
            vec![
                bind("range", Bind::Chunk),
                internal("e", e),
                internal("keys", keys),
                internal("row_w", row_w),
                internal("stats", stats),
                internal("partials", ctx.partials),
                internal("carry", carry),
                internal("counts", counts),
            ],
            range_params(first, count, flags),
        ));
    }
    for &(first, count) in &ranges {
        forward.push(embedding::pass(
            format!("{label} backward columns {first}.."),
            "metric.wgsl",
            "backward",
            spec.clone().bool("BACKWARD", true),
            vec![
                bind("range", Bind::Chunk),
                internal("e", e),
                internal("keys", keys),
                internal("stats", stats),
                internal("de", de),
            ],
            range_params(first, count, 0),
        ));
    }
    let accumulate = (ctx.written)(&input);
    let backward = vec![embedding::apply(
        &label,
        Apply {
            file: "metric.wgsl",
            input: &input,
            n: b,
            d,
            cosine: true,
            scalars: ctx.scalars,
            coef: super::common::coef_index(t.slot),
            spec: spec.clone(),
            parts: vec![internal("de", de)],
            accumulate,
        },
    )];
    Ok(TermPasses {
        forward,
        backward,
        rows: b,
        grads: vec![input],
        bank: None,
    })
}

/// The `rowinfo` pass: each row's weight and key (label, session) into `[row_w, keys]`.
fn rowinfo(
    t: &Resolved,
    label: &str,
    spec: &Specialization,
    ctx: &Ctx,
    [row_w, keys]: [usize; 2],
    b: u64,
) -> PassSpec {
    let labels = t.input("labels");
    let mut binds = vec![
        internal("w_out", row_w),
        internal("keys_out", keys),
        bind("labels", Bind::Whole(Source::Input(labels.to_string()))),
    ];
    let session = t.term.input("session");
    if let Some(s) = session {
        binds.push(bind("session", Bind::Whole(Source::Input(s.to_string()))));
    }
    let spec = spec
        .clone()
        .u32("N", b as u32)
        .u32("LABEL_KIND", id_kind((ctx.dtype)(labels)))
        .bool("HAS_SESSION", session.is_some())
        .u32(
            "SESSION_KIND",
            session.map_or(0, |s| id_kind((ctx.dtype)(s))),
        );
    embedding::rowinfo(label, "metric.wgsl", &t.weights, spec, binds)
}

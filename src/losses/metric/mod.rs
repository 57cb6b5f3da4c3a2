//! Circle loss and multi-similarity loss on the GPU (`shaders/metric.wgsl`). Formulas: docs/LOSSES.md,
//! "Retrieval and embedding terms"; reference: `reference/metric.rs`.
//!
//! `prep` normalises the embeddings; `rowinfo` gathers each row's weight and key (label and
//! session, 64 bits each); with multi-similarity's `ms_mining`, `mine` finds each row's bounds
//! (its hardest negative and hardest positive); `forward` streams every other row through workgroup memory for each
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
use crate::kernel::{bind, internal, Bind, Binding, Chunk, Params, PassSpec, Source};
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

/// A metric term's shader constants.
struct MetricConstants {
    /// Circle loss (else multi-similarity).
    circle: bool,
    /// [margin, gamma, alpha, beta, lamb].
    values: [f64; 5],
    /// Multi-similarity's pair mining: ε.
    mining: Option<f64>,
}

/// The shader constants of a metric term.
fn metric_params(term: &LossTerm) -> Result<MetricConstants> {
    if let Some(p) = term.kind.params::<CircleParams>() {
        return Ok(MetricConstants {
            circle: true,
            values: [p.margin, p.gamma, 1.0, 1.0, 0.0],
            mining: None,
        });
    }
    let p: &MultiSimilarityParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
    Ok(MetricConstants {
        circle: false,
        values: [0.0, 1.0, p.alpha, p.beta, p.lamb],
        mining: p.ms_mining.then_some(p.eps),
    })
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

/// The internal buffers of a metric term.
struct Buffers {
    /// ê [B, d].
    e: usize,
    /// Each row's key (label, session).
    keys: usize,
    /// Each row's sample weight.
    row_w: usize,
    /// Each row's (lse_neg, lse_pos, factor, valid).
    stats: usize,
    /// dL/dê [B, d] before the coefficient.
    de: usize,
    /// The running sums between ranges, and their counts.
    carry: usize,
    counts: usize,
    /// Multi-similarity's mining bounds (with `ms_mining` only).
    bounds: Option<usize>,
}

impl Buffers {
    fn new(name: &str, b: u64, d: u64, mining: bool, ctx: &mut Ctx) -> Result<Self> {
        let mut alloc = |what: &str, bytes: u64| (ctx.alloc)(format!("{name}/{what}"), bytes);
        Ok(Self {
            e: alloc("e", b * d * 4)?,
            keys: alloc("keys", b * 16)?,
            row_w: alloc("row_w", b * 4)?,
            stats: alloc("stats", b * 16)?,
            de: alloc("de", b * d * 4)?,
            carry: alloc("carry", b * 16)?,
            counts: alloc("counts", b * 8)?,
            bounds: if mining {
                Some(alloc("bounds", b * 8)?)
            } else {
                None
            },
        })
    }
}

/// The passes of a `circle_loss` or `multi_similarity_loss` term.
fn passes(t: &Resolved, dim: u64, ctx: &mut Ctx) -> Result<TermPasses> {
    let (b, d) = (t.rows, dim);
    let name = &t.term.name;
    let label = format!("{} {name}", t.term.kind.loss_type());
    check_binding(
        name,
        "the normalised embeddings",
        b * d * 4,
        ctx.max_binding,
    )?;
    let constants = metric_params(&t.term)?;
    let mining = constants.mining.is_some();
    // Per staged column: its key and stats, and with mining its bounds.
    let column_bytes = if mining { 40 } else { 32 };
    let tc = embedding::tile_columns(d, column_bytes, ctx.workgroup_bytes).ok_or_else(|| {
        Error::Unsupported(format!(
            "term '{name}': one row of d = {d} floats does not fit the adapter's {} bytes of \
             workgroup memory",
            ctx.workgroup_bytes
        ))
    })?;
    let buffers = Buffers::new(name, b, d, mining, ctx)?;
    let input = t.input("embeddings").to_string();
    let spec = metric_spec(&constants, d, tc, ctx.tiled);
    let mut forward = vec![
        embedding::prep(&label, &input, b, d, true, buffers.e, 0),
        rowinfo(t, &label, &spec, ctx, [buffers.row_w, buffers.keys], b),
    ];
    forward.extend(sweep_passes(&label, &spec, &buffers, ctx.partials, b, d));
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
            parts: vec![internal("de", buffers.de)],
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

/// The sweeps over the other rows, each split into column ranges short enough for llvmpipe's
/// loop limiter (see metric.wgsl): with mining the bounds, then the forward sums, then dê.
fn sweep_passes(
    label: &str,
    spec: &Specialization,
    buffers: &Buffers,
    partials: usize,
    b: u64,
    d: u64,
) -> Vec<PassSpec> {
    let range = embedding::columns_per_dispatch(d);
    let ranges: Vec<(u64, u64)> = (0..b)
        .step_by(range as usize)
        .map(|f| (f, range.min(b - f)))
        .collect();
    let bounds = buffers.bounds.map(|id| internal("bounds", id));
    let sweeps =
        |entry, spec: Specialization, binds: Vec<Binding>, flags: &dyn Fn(usize) -> u32| {
            let common = [
                bind("range", Bind::Chunk),
                internal("e", buffers.e),
                internal("keys", buffers.keys),
            ];
            let binds: Vec<Binding> = common
                .into_iter()
                .chain(binds)
                .chain(bounds.clone())
                .collect();
            let pass = |(k, &(first, count)): (usize, &(u64, u64))| {
                embedding::pass(
                    format!("{label} {entry} columns {first}.."),
                    "metric.wgsl",
                    entry,
                    spec.clone(),
                    binds.clone(),
                    range_params(first, count, flags(k)),
                )
            };
            ranges.iter().enumerate().map(pass).collect::<Vec<_>>()
        };
    let first = |k: usize| (k == 0) as u32;
    let last = ranges.len() - 1;
    let mut out = Vec::new();
    if buffers.bounds.is_some() {
        out.extend(sweeps(
            "mine",
            spec.clone().bool("MINE", true),
            vec![],
            &first,
        ));
    }
    let forward_binds = vec![
        internal("row_w", buffers.row_w),
        internal("stats", buffers.stats),
        internal("partials", partials),
        internal("carry", buffers.carry),
        internal("counts", buffers.counts),
    ];
    let flags = |k: usize| first(k) | (((k == last) as u32) << 1);
    out.extend(sweeps("forward", spec.clone(), forward_binds, &flags));
    let backward_binds = vec![internal("stats", buffers.stats), internal("de", buffers.de)];
    let backward_spec = spec.clone().bool("BACKWARD", true);
    out.extend(sweeps("backward", backward_spec, backward_binds, &|_| 0));
    out
}

/// The shader constants of a metric term's sweeps over rows of `d` floats, `tc` per tile.
fn metric_spec(constants: &MetricConstants, d: u64, tc: u32, tiled: bool) -> Specialization {
    let [margin, gamma, alpha, beta, lamb] = constants.values;
    Specialization::new()
        .u32("D", d as u32)
        .u32("TC", tc)
        .bool("TILED", tiled)
        .u32("TILE_FLOATS", tc * d as u32)
        .bool("CIRCLE", constants.circle)
        .f32("MARGIN", margin)
        .f32("GAMMA", gamma)
        .f32("ALPHA", alpha)
        .f32("BETA", beta)
        .f32("LAMB", lamb)
        .bool("MINING", constants.mining.is_some())
        .f32("EPS", constants.mining.unwrap_or(0.0))
}

/// The parameters of one sweep dispatch over rows [first, first + count).
fn range_params(first: u64, count: u64, flags: u32) -> Params {
    Params::of(&MetricRange {
        chunk: Chunk::default(),
        first: first as u32,
        count: count as u32,
        flags,
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

//! Softmax over columns on the GPU (`shaders/retrieval.wgsl`): `in_batch_softmax`,
//! `cross_batch_softmax` with its memory bank, and `contrastive_loss` (InfoNCE and NT-Xent).
//! Formulas: docs/LOSSES.md, "Retrieval and embedding terms"; reference: `reference/retrieval.rs`.
//!
//! Loss rows q_i and columns k_j (the similarity-ready rows: normalised under cosine) are
//! written by `prep`; s_ij = q_i·k_j/T − bias_j. Per loss row, passes stream the columns through
//! workgroup memory: an online log-sum-exp over the batch's columns and then over each part of
//! the bank, `finish` (l_i = lse_i − s_i,pos(i), partials), the same sweep again for
//! dq_i = Σ_j p_ij k_j, and one sweep per batch column for dk_j = Σ_i w_i p_ij q_i. Nothing of
//! size B×B or B×M is stored. After the combine, `apply` forms
//! coef·(w_i(dq_i − k_pos(i)))/T and coef·(dk_j − w_i' q_i')/T (i' the row whose positive is j),
//! through the normalisation, and the bank passes write the batch's rows at the head.
//!
//! The bank (Wang et al. SIGIR 2021) is M rows of (k_j detached, log_q_j, id_j) in GPU buffers:
//! the embeddings in parts that each fit one storage binding, log_q and ids whole; its head and
//! fill count are two words of the plan's state, so all of it is saved with the state.

pub(crate) mod params;

use super::embedding::{self, check_binding, id_kind, Apply, Bank, Ctx, TermPasses};
use super::family::{
    wrong_params, EmbeddingTerm, Family, Form, LossType, Resolved, Role, RoleKind,
};
use super::params::ParamSpec;
use crate::batch::Shapes;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Binding, Chunk, Params, PassSpec, Source, Work, WG};
use crate::layout::{Layout, LayoutBuilder};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::Specialization;
use params::{ContrastiveParams, CrossBatchParams, InBatchParams};
pub use params::{ContrastiveVariant, RetrievalParams, Similarity};

/// Words of a bank's state: head, fill.
pub(crate) const BANK_STATE_WORDS: u32 = 2;

const TOWERS: &[Role] = &[
    Role::required("user", RoleKind::Embeddings),
    Role::required("item", RoleKind::Embeddings),
    Role::optional("item_ids", RoleKind::ItemIds),
    Role::optional("log_q", RoleKind::LogQ),
];

/// `in_batch_softmax`: sampled softmax over the other rows of the batch.
static IN_BATCH: LossType = LossType {
    name: "in_batch_softmax",
    roles: TOWERS,
    params: ParamSpec::of::<InBatchParams>(),
    regression: false,
    family: &RetrievalFamily,
};

/// `cross_batch_softmax`: the batch plus a GPU-resident FIFO bank of earlier items.
static CROSS_BATCH: LossType = LossType {
    name: "cross_batch_softmax",
    roles: TOWERS,
    params: ParamSpec::of::<CrossBatchParams>(),
    regression: false,
    family: &RetrievalFamily,
};

/// `contrastive_loss`: InfoNCE or NT-Xent between two views.
static CONTRASTIVE: LossType = LossType {
    name: "contrastive_loss",
    roles: &[
        Role::required("view_a", RoleKind::Embeddings),
        Role::required("view_b", RoleKind::Embeddings),
    ],
    params: ParamSpec::of::<ContrastiveParams>(),
    regression: false,
    family: &RetrievalFamily,
};

/// The loss types of this family.
pub(crate) static LOSS_TYPES: &[&LossType] = &[&IN_BATCH, &CROSS_BATCH, &CONTRASTIVE];

/// What the three loss types share once their parameters are read.
struct Options {
    similarity: Similarity,
    temperature: f64,
    hits: bool,
    nt_xent: bool,
    /// (M, warm-up steps) of a memory bank.
    bank: Option<(u64, u32)>,
}

fn options(term: &LossTerm) -> Result<Options> {
    let kind = &term.kind;
    if let Some(p) = kind.params::<InBatchParams>() {
        let r = p.retrieval();
        return Ok(Options {
            similarity: r.similarity,
            temperature: r.temperature,
            hits: r.remove_accidental_hits,
            nt_xent: false,
            bank: None,
        });
    }
    if let Some(p) = kind.params::<CrossBatchParams>() {
        let r = p.retrieval();
        return Ok(Options {
            similarity: r.similarity,
            temperature: r.temperature,
            hits: r.remove_accidental_hits,
            nt_xent: false,
            bank: Some((p.bank_rows() as u64, p.warmup_steps)),
        });
    }
    let p: &ContrastiveParams = kind.params().ok_or_else(|| wrong_params(term))?;
    Ok(Options {
        similarity: p.similarity,
        temperature: p.temperature,
        hits: false,
        nt_xent: p.variant == ContrastiveVariant::NtXent,
        bank: None,
    })
}

struct RetrievalFamily;

impl Family for RetrievalFamily {
    fn resolve(
        &'static self,
        lt: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        options(term)?;
        let (b, d, _) = super::shapes::embeddings(term, lt.roles, shapes)?;
        Ok((
            Form::Embedding {
                dim: d,
                term: &Retrieval,
            },
            b,
        ))
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        state: TermState,
    ) -> Result<TermValue> {
        crate::reference::retrieval::evaluate(term, batch, state)
    }
}

/// A resolved retrieval term.
#[derive(Debug)]
struct Retrieval;

impl EmbeddingTerm for Retrieval {
    fn passes(&self, t: &Resolved, dim: u64, layout: &Layout, ctx: &mut Ctx) -> Result<TermPasses> {
        let bank_state = layout.state(t.slot, "bank").map(|r| r.offset);
        passes(t, dim, bank_state, ctx)
    }

    fn regions(&self, t: &Resolved, layout: &mut LayoutBuilder) {
        if t.term.kind.params::<CrossBatchParams>().is_some() {
            layout.state(t.slot, "bank", BANK_STATE_WORDS);
        }
    }
}

crate::gpu_struct! {
    /// One dispatch of a sweep or of the bank write (`ColumnRange` in retrieval.wgsl).
    pub(crate) struct ColumnRange in "retrieval.wgsl" test column_range_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
        /// The range's first index in the source's log_q and id arrays (the part's first slot).
        first: u32,
        /// Columns in the range (the part's rows).
        count: u32,
        /// The range's first column in the source's embeddings.
        source_first: u32,
        /// 1 when the source is a part of the bank.
        bank: u32,
    }
}

/// The `rowinfo` pass: each batch row's weight, log_q and item id into `[row_w, bias, ids]`
/// (NT-Xent: also at row r + B, the other view of example r).
fn rowinfo(
    t: &Resolved,
    label: &str,
    spec: &Specialization,
    ctx: &Ctx,
    [row_w, bias, ids]: [usize; 3],
    b: u64,
) -> PassSpec {
    let mut binds = vec![
        internal("w_out", row_w),
        internal("bias_out", bias),
        internal("ids_out", ids),
    ];
    let log_q = t.term.input("log_q");
    if let Some(n) = log_q {
        binds.push(bind("log_q", Bind::Whole(Source::Input(n.to_string()))));
    }
    let item_ids = t.term.input("item_ids");
    if let Some(n) = item_ids {
        binds.push(bind("item_ids", Bind::Whole(Source::Input(n.to_string()))));
    }
    let spec = spec
        .clone()
        .u32("N", b as u32)
        .bool("HAS_LOG_Q", log_q.is_some())
        .bool("HAS_IDS", item_ids.is_some())
        .u32("ID_KIND", item_ids.map_or(0, |n| id_kind((ctx.dtype)(n))));
    embedding::rowinfo(label, "retrieval.wgsl", &t.weights, spec, binds)
}

/// Rows of `bytes_per_row` bytes that fit one binding (a multiple of 64 when that many fit, so
/// that parts start aligned).
fn rows_per_binding(bytes_per_row: u64, max_binding: u64) -> u64 {
    let rows = (max_binding / bytes_per_row).max(1);
    if rows >= 64 {
        rows / 64 * 64
    } else {
        rows
    }
}

/// The internal buffers of one retrieval term.
#[derive(Clone, Copy)]
struct Buffers {
    /// Loss rows q_i and columns k_j (the same buffer under NT-Xent).
    q: usize,
    k: usize,
    /// Per column: the logit bias (log_q) and the id.
    bias: usize,
    ids: usize,
    /// Per loss row: the weight, the (lse, Σ) statistics, dq.
    row_w: usize,
    stats: usize,
    dq: usize,
    /// Per column: dk.
    dk: usize,
}

/// What every pass of one retrieval term shares.
struct Kernels {
    label: String,
    /// Batch rows B, dimension d, loss rows and columns (2B under NT-Xent).
    b: u64,
    d: u64,
    nq: u64,
    nk: u64,
    q_in: String,
    k_in: String,
    cosine: bool,
    nt_xent: bool,
    buffers: Buffers,
    bank: Option<Bank>,
    spec: Specialization,
    /// Rows per invocation of the sweeps (retrieval.wgsl's RB).
    rb: u32,
}

/// The bank of a cross-batch term with `m` rows: its embedding parts (each within one binding),
/// log_q and ids.
fn bank_buffers(name: &str, m: u64, d: u64, state_word: u32, ctx: &mut Ctx) -> Result<Bank> {
    let per_part = rows_per_binding(d * 4, ctx.max_binding);
    let mut parts = Vec::new();
    let mut first = 0;
    while first < m {
        let rows = per_part.min(m - first);
        let buffer = (ctx.alloc)(format!("{name}/bank/{}", parts.len()), rows * d * 4)?;
        parts.push((buffer, first, rows));
        first += rows;
    }
    check_binding(name, "the bank's ids", m * 8, ctx.max_binding)?;
    Ok(Bank {
        parts,
        bias: (ctx.alloc)(format!("{name}/bank/log_q"), m * 4)?,
        ids: (ctx.alloc)(format!("{name}/bank/ids"), m * 8)?,
        state_word,
        rows: m,
    })
}

fn range_params(first: u64, count: u64, source_first: u64, bank: bool) -> Params {
    Params::of(&ColumnRange {
        chunk: Chunk::default(),
        first: first as u32,
        count: count as u32,
        source_first: source_first as u32,
        bank: bank as u32,
    })
}

/// Ranges of at most `range` of `n` items: (first, count).
fn ranges(n: u64, range: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..n)
        .step_by(range as usize)
        .map(move |f| (f, range.min(n - f)))
}

impl Kernels {
    /// The term's buffers and specialisation. `bank_state` is the first state word of a
    /// cross-batch term's (head, fill).
    fn new(t: &Resolved, dim: u64, bank_state: Option<u32>, ctx: &mut Ctx) -> Result<Self> {
        let (b, d) = (t.rows, dim);
        let name = &t.term.name;
        let o = options(&t.term)?;
        let (q_role, k_role) = if t.term.kind.params::<ContrastiveParams>().is_some() {
            ("view_a", "view_b")
        } else {
            ("user", "item")
        };
        let nq = if o.nt_xent { 2 * b } else { b };
        let nk = nq;
        check_binding(name, "the similarity rows", nq * d * 4, ctx.max_binding)?;
        let tc = embedding::tile_columns(d, 16, ctx.workgroup_bytes).ok_or_else(|| {
            Error::Unsupported(format!(
                "term '{name}': one row of d = {d} floats does not fit the adapter's {} bytes of \
                 workgroup memory",
                ctx.workgroup_bytes
            ))
        })?;
        let q = (ctx.alloc)(format!("{name}/q"), nq * d * 4)?;
        let k = if o.nt_xent {
            q
        } else {
            (ctx.alloc)(format!("{name}/k"), nk * d * 4)?
        };
        let buffers = Buffers {
            q,
            k,
            bias: (ctx.alloc)(format!("{name}/bias"), nk * 4)?,
            ids: (ctx.alloc)(format!("{name}/ids"), nk * 8)?,
            row_w: (ctx.alloc)(format!("{name}/row_w"), nq * 4)?,
            stats: (ctx.alloc)(format!("{name}/stats"), nq * 8)?,
            dq: (ctx.alloc)(format!("{name}/dq"), nq * d * 4)?,
            dk: (ctx.alloc)(format!("{name}/dk"), nk * d * 4)?,
        };
        let bank = match (o.bank, bank_state) {
            (Some((m, _)), Some(state_word)) => Some(bank_buffers(name, m, d, state_word, ctx)?),
            _ => None,
        };
        let (bank_m, warmup, bank_word) = match (&bank, o.bank) {
            (Some(bk), Some((_, warmup))) => (bk.rows as u32, warmup, bk.state_word),
            _ => (1, 0, 0),
        };
        let rb = embedding::block_rows(ctx.cpu, ctx.block_rows, d, nq);
        let spec = Specialization::new()
            .u32("RB", rb)
            .u32("D", d as u32)
            .u32("TC", tc)
            .bool("TILED", ctx.tiled)
            .u32("TILE_FLOATS", tc * d as u32)
            .f32("INV_T", 1.0 / o.temperature)
            .bool("NT_XENT", o.nt_xent)
            .bool("HIT_MASK", o.hits)
            .u32("BANK_M", bank_m)
            .u32("BANK_STATE", bank_word)
            .u32("WARMUP", warmup);
        Ok(Self {
            label: format!("{} {name}", t.term.kind.loss_type()),
            b,
            d,
            nq,
            nk,
            q_in: t.input(q_role).to_string(),
            k_in: t.input(k_role).to_string(),
            cosine: o.similarity == Similarity::Cosine,
            nt_xent: o.nt_xent,
            buffers,
            bank,
            spec,
            rb,
        })
    }

    fn kernel(
        &self,
        label: String,
        spec: Specialization,
        entry: &'static str,
        binds: Vec<Binding>,
        params: Params,
    ) -> PassSpec {
        let mut pass = embedding::pass(label, "retrieval.wgsl", entry, spec, binds, params);
        if matches!(entry, "sweep_rows" | "grad_cols") {
            // Each invocation holds `rb` rows (retrieval.wgsl's RB).
            pass.work = Work::Rows {
                rows_per_wg: WG * self.rb,
            };
        }
        pass
    }

    /// One sweep of the loss rows over a range of columns (`cols`, their bias and ids): the
    /// online log-sum-exp, or with `grad` dq.
    fn sweep(
        &self,
        grad: bool,
        cols: [usize; 3],
        params: Params,
        what: &str,
        state: usize,
    ) -> PassSpec {
        let u = &self.buffers;
        let [cols, col_bias, col_ids] = cols;
        self.kernel(
            format!(
                "{} {} {what}",
                self.label,
                if grad { "grad_rows" } else { "lse" }
            ),
            self.spec.clone().bool("GRAD", grad),
            "sweep_rows",
            vec![
                bind("range", Bind::Chunk),
                internal("state", state),
                internal("q", u.q),
                internal("cols", cols),
                internal("col_bias", col_bias),
                internal("col_ids", col_ids),
                internal("row_ids", u.ids),
                internal("stats", u.stats),
                internal("dq", u.dq),
            ],
            params,
        )
    }

    /// Both sweeps over the batch's columns and the bank's parts (the log-sum-exp, `finish`,
    /// then dq), in column ranges short enough for llvmpipe's loop limiter (see retrieval.wgsl).
    fn sweeps(&self, ctx: &Ctx, out: &mut Vec<PassSpec>) {
        let u = &self.buffers;
        let range = embedding::columns_per_dispatch_block(self.d, self.rb);
        for grad in [false, true] {
            for (first, count) in ranges(self.nk, range) {
                let params = range_params(first, count, first, false);
                let what = format!("batch columns {first}..");
                out.push(self.sweep(grad, [u.k, u.bias, u.ids], params, &what, ctx.state));
            }
            if let Some(bk) = &self.bank {
                for (i, &(buffer, part_first, rows)) in bk.parts.iter().enumerate() {
                    for (first, count) in ranges(rows, range) {
                        let params = range_params(part_first + first, count, first, true);
                        let what = format!("bank part {i} rows {first}..");
                        let cols = [buffer, bk.bias, bk.ids];
                        out.push(self.sweep(grad, cols, params, &what, ctx.state));
                    }
                }
            }
            if !grad {
                out.push(self.finish(ctx));
            }
        }
    }

    /// `finish`: l_i = lse_i − s_i,pos(i) and the partials.
    fn finish(&self, ctx: &Ctx) -> PassSpec {
        let u = &self.buffers;
        self.kernel(
            format!("{} finish", self.label),
            self.spec.clone(),
            "finish",
            vec![
                bind("chunk", Bind::Chunk),
                internal("q", u.q),
                internal("k", u.k),
                internal("col_bias", u.bias),
                internal("row_w", u.row_w),
                internal("stats", u.stats),
                internal("partials", ctx.partials),
            ],
            Params::none(),
        )
    }

    /// The passes before the combine: prep, rowinfo, the sweeps, then dk per batch column.
    fn forward(&self, t: &Resolved, ctx: &Ctx) -> Vec<PassSpec> {
        let (u, b, d, label) = (&self.buffers, self.b, self.d, &self.label);
        let k_out = if self.nt_xent { (u.q, b) } else { (u.k, 0) };
        let mut forward = vec![
            embedding::prep(label, &self.q_in, b, d, self.cosine, u.q, 0),
            embedding::prep(label, &self.k_in, b, d, self.cosine, k_out.0, k_out.1),
            rowinfo(t, label, &self.spec, ctx, [u.row_w, u.bias, u.ids], b),
        ];
        self.sweeps(ctx, &mut forward);
        for (first, count) in ranges(self.nq, embedding::columns_per_dispatch_block(d, self.rb)) {
            forward.push(self.kernel(
                format!("{label} grad_cols rows {first}.."),
                self.spec.clone().bool("GRAD_COLS", true),
                "grad_cols",
                vec![
                    bind("range", Bind::Chunk),
                    internal("q", u.q),
                    internal("k", u.k),
                    internal("col_bias", u.bias),
                    internal("row_ids", u.ids),
                    internal("stats", u.stats),
                    internal("row_w", u.row_w),
                    internal("dk", u.dk),
                ],
                range_params(first, count, 0, false),
            ));
        }
        forward
    }

    /// The `apply` pass of `input` (its loss rows' gradient with `apply_rows`, else its columns'),
    /// from row `offset` of the similarity rows.
    fn apply(
        &self,
        t: &Resolved,
        ctx: &Ctx,
        input: &str,
        apply_rows: bool,
        offset: u64,
        accumulate: bool,
    ) -> PassSpec {
        let u = &self.buffers;
        let parts = if self.nt_xent {
            vec![
                internal("row_w", u.row_w),
                internal("dq", u.dq),
                internal("dk", u.dk),
                internal("q", u.q),
            ]
        } else if apply_rows {
            vec![
                internal("row_w", u.row_w),
                internal("dq", u.dq),
                internal("k", u.k),
            ]
        } else {
            vec![
                internal("row_w", u.row_w),
                internal("dk", u.dk),
                internal("q", u.q),
            ]
        };
        let spec = self
            .spec
            .clone()
            .bool("APPLY_ROWS", apply_rows)
            .u32("ROW_OFF", offset as u32)
            .u32("POS_SHIFT", if self.nt_xent { self.b as u32 } else { 0 })
            .u32("NK", self.nk as u32);
        embedding::apply(
            &self.label,
            Apply {
                file: "retrieval.wgsl",
                input,
                n: self.b,
                d: self.d,
                cosine: self.cosine,
                scalars: ctx.scalars,
                coef: super::common::coef_index(t.slot),
                spec,
                parts,
                accumulate,
            },
        )
    }

    /// The bank's passes after the combine: the batch's columns written at the head, then the
    /// head and fill advanced.
    fn bank_passes(&self, bk: &Bank, ctx: &Ctx, out: &mut Vec<PassSpec>) {
        let u = &self.buffers;
        for (i, &(buffer, first, rows)) in bk.parts.iter().enumerate() {
            out.push(self.kernel(
                format!("{} bank_write part {i}", self.label),
                self.spec.clone(),
                "bank_write",
                vec![
                    bind("range", Bind::Chunk),
                    internal("state", ctx.state),
                    internal("scalars", ctx.scalars),
                    internal("k", u.k),
                    internal("col_bias", u.bias),
                    internal("row_ids", u.ids),
                    internal("bank", buffer),
                    internal("bank_bias", bk.bias),
                    internal("bank_ids", bk.ids),
                ],
                range_params(first, rows, 0, false),
            ));
        }
        out.push(PassSpec {
            work: Work::Single,
            ..self.kernel(
                format!("{} bank_advance", self.label),
                self.spec.clone(),
                "bank_advance",
                vec![
                    bind("chunk", Bind::Chunk),
                    internal("state_rw", ctx.state),
                    internal("scalars", ctx.scalars),
                ],
                Params::none(),
            )
        });
    }
}

/// The passes of an `in_batch_softmax`, `cross_batch_softmax` or `contrastive_loss` term.
/// `bank_state` is the first state word of a cross-batch term's (head, fill).
fn passes(t: &Resolved, dim: u64, bank_state: Option<u32>, ctx: &mut Ctx) -> Result<TermPasses> {
    let kernels = Kernels::new(t, dim, bank_state, ctx)?;
    let forward = kernels.forward(t, ctx);
    // After the combine: gradients of the inputs, then the bank.
    let (q_in, k_in, b) = (&kernels.q_in, &kernels.k_in, kernels.b);
    let q_accumulates = (ctx.written)(q_in);
    let k_accumulates = (ctx.written)(k_in) || k_in == q_in;
    let mut backward = vec![kernels.apply(t, ctx, q_in, true, 0, q_accumulates)];
    if kernels.nt_xent {
        // Each z row is a loss row and a column (q and k are the same rows): both gradients.
        backward.push(kernels.apply(t, ctx, k_in, true, b, k_accumulates));
    } else {
        backward.push(kernels.apply(t, ctx, k_in, false, 0, k_accumulates));
    }
    if let Some(bk) = &kernels.bank {
        kernels.bank_passes(bk, ctx, &mut backward);
    }
    Ok(TermPasses {
        forward,
        backward,
        rows: kernels.nq,
        grads: vec![q_in.clone(), k_in.clone()],
        bank: kernels.bank.clone(),
    })
}

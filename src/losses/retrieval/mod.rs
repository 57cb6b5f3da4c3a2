//! Softmax over columns on the GPU (`shaders/retrieval.wgsl`): `in_batch_softmax`,
//! `cross_batch_softmax` with its memory bank, and `contrastive_loss` (InfoNCE and NT-Xent).
//! Formulas: LOSSES.md, "Retrieval and embedding terms"; reference: `reference/retrieval.rs`.
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
    wrong_params, EmbeddingTerm, Family, Form, LossType, ParamSpec, Resolved, Role, RoleKind,
};
use crate::batch::Shapes;
use crate::config::LossTerm;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Chunk, Params, PassSpec, Source, Work};
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
    fn resolve(&'static self, term: &LossTerm, shapes: &Shapes) -> Result<(Form, u64)> {
        options(term)?;
        let roles = super::registry::lookup(term.kind.loss_type())
            .expect("validated")
            .roles;
        let (b, d, _) = super::shapes::embeddings(term, roles, shapes)?;
        Ok((
            Form::Embedding {
                dim: d,
                term: &Retrieval,
            },
            b,
        ))
    }

    fn reference(&self, term: &LossTerm, batch: &HostBatch, state: TermState) -> Result<TermValue> {
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

/// The passes of an `in_batch_softmax`, `cross_batch_softmax` or `contrastive_loss` term.
/// `bank_state` is the first state word of a cross-batch term's (head, fill).
fn passes(t: &Resolved, dim: u64, bank_state: Option<u32>, ctx: &mut Ctx) -> Result<TermPasses> {
    let b = t.rows;
    let d = dim;
    let name = &t.term.name;
    let label = format!("{} {name}", t.term.kind.loss_type());
    let Options {
        similarity,
        temperature,
        hits,
        nt_xent,
        bank: bank_spec,
    } = options(&t.term)?;
    let cosine = similarity == Similarity::Cosine;
    let (q_role, k_role) = if t.term.kind.params::<ContrastiveParams>().is_some() {
        ("view_a", "view_b")
    } else {
        ("user", "item")
    };
    let q_in = t.input(q_role).to_string();
    let k_in = t.input(k_role).to_string();
    let nq = if nt_xent { 2 * b } else { b };
    let nk = nq;
    check_binding(name, "the similarity rows", nq * d * 4, ctx.max_binding)?;
    let tc = embedding::tile_columns(d, 16, ctx.workgroup_bytes).ok_or_else(|| {
        Error::Unsupported(format!(
            "term '{name}': one row of d = {d} floats does not fit the adapter's {} bytes of \
             workgroup memory",
            ctx.workgroup_bytes
        ))
    })?;

    // Internal buffers.
    let q = (ctx.alloc)(format!("{name}/q"), nq * d * 4)?;
    let k = if nt_xent {
        q
    } else {
        (ctx.alloc)(format!("{name}/k"), nk * d * 4)?
    };
    let bias = (ctx.alloc)(format!("{name}/bias"), nk * 4)?;
    let ids = (ctx.alloc)(format!("{name}/ids"), nk * 8)?;
    let row_w = (ctx.alloc)(format!("{name}/row_w"), nq * 4)?;
    let stats = (ctx.alloc)(format!("{name}/stats"), nq * 8)?;
    let dq = (ctx.alloc)(format!("{name}/dq"), nq * d * 4)?;
    let dk = (ctx.alloc)(format!("{name}/dk"), nk * d * 4)?;
    let bank = match (bank_spec, bank_state) {
        (Some((m, _)), Some(state_word)) => {
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
            Some(Bank {
                parts,
                bias: (ctx.alloc)(format!("{name}/bank/log_q"), m * 4)?,
                ids: (ctx.alloc)(format!("{name}/bank/ids"), m * 8)?,
                state_word,
                rows: m,
            })
        }
        _ => None,
    };

    let (bank_m, warmup, bank_word) = match (&bank, bank_spec) {
        (Some(bk), Some((_, warmup))) => (bk.rows as u32, warmup, bk.state_word),
        _ => (1, 0, 0),
    };
    let spec = Specialization::new()
        .u32("D", d as u32)
        .u32("TC", tc)
        .bool("TILED", ctx.tiled)
        .u32("TILE_FLOATS", tc * d as u32)
        .f32("INV_T", 1.0 / temperature)
        .bool("NT_XENT", nt_xent)
        .bool("HIT_MASK", hits)
        .u32("BANK_M", bank_m)
        .u32("BANK_STATE", bank_word)
        .u32("WARMUP", warmup);
    let kernel = |label: String, spec: Specialization, entry, binds, params| {
        embedding::pass(label, "retrieval.wgsl", entry, spec, binds, params)
    };
    let range_params = |first: u64, count: u64, source_first: u64, bank: bool| {
        Params::of(&ColumnRange {
            chunk: Chunk::default(),
            first: first as u32,
            count: count as u32,
            source_first: source_first as u32,
            bank: bank as u32,
        })
    };

    let mut forward = Vec::new();
    if nt_xent {
        forward.push(embedding::prep(&label, &q_in, b, d, cosine, q, 0));
        forward.push(embedding::prep(&label, &k_in, b, d, cosine, q, b));
    } else {
        forward.push(embedding::prep(&label, &q_in, b, d, cosine, q, 0));
        forward.push(embedding::prep(&label, &k_in, b, d, cosine, k, 0));
    }
    forward.push(rowinfo(t, &label, &spec, ctx, [row_w, bias, ids], b));

    let sweep = |grad: bool, cols: usize, col_bias: usize, col_ids: usize, params, what: &str| {
        kernel(
            format!("{label} {} {what}", if grad { "grad_rows" } else { "lse" }),
            spec.clone().bool("GRAD", grad),
            "sweep_rows",
            vec![
                bind("range", Bind::Chunk),
                internal("state", ctx.state),
                internal("q", q),
                internal("cols", cols),
                internal("col_bias", col_bias),
                internal("col_ids", col_ids),
                internal("row_ids", ids),
                internal("stats", stats),
                internal("dq", dq),
            ],
            params,
        )
    };
    // Column ranges short enough for llvmpipe's loop limiter (see retrieval.wgsl).
    let range = embedding::columns_per_dispatch(d);
    let ranges = |n: u64| {
        (0..n)
            .step_by(range as usize)
            .map(move |f| (f, range.min(n - f)))
    };
    for grad in [false, true] {
        for (first, count) in ranges(nk) {
            forward.push(sweep(
                grad,
                k,
                bias,
                ids,
                range_params(first, count, first, false),
                &format!("batch columns {first}.."),
            ));
        }
        if let Some(bk) = &bank {
            for (i, &(buffer, part_first, rows)) in bk.parts.iter().enumerate() {
                for (first, count) in ranges(rows) {
                    forward.push(sweep(
                        grad,
                        buffer,
                        bk.bias,
                        bk.ids,
                        range_params(part_first + first, count, first, true),
                        &format!("bank part {i} rows {first}.."),
                    ));
                }
            }
        }
        if !grad {
            forward.push(kernel(
                format!("{label} finish"),
                spec.clone(),
                "finish",
                vec![
                    bind("chunk", Bind::Chunk),
                    internal("q", q),
                    internal("k", k),
                    internal("col_bias", bias),
                    internal("row_w", row_w),
                    internal("stats", stats),
                    internal("partials", ctx.partials),
                ],
                Params::none(),
            ));
        }
    }
    for (first, count) in ranges(nq) {
        forward.push(kernel(
            format!("{label} grad_cols rows {first}.."),
            spec.clone().bool("GRAD_COLS", true),
            "grad_cols",
            vec![
                bind("range", Bind::Chunk),
                internal("q", q),
                internal("k", k),
                internal("col_bias", bias),
                internal("row_ids", ids),
                internal("stats", stats),
                internal("row_w", row_w),
                internal("dk", dk),
            ],
            range_params(first, count, 0, false),
        ));
    }
    // After the combine: gradients of the inputs, then the bank.
    let coef = super::common::coef_index(t.slot);
    let mut backward = Vec::new();
    let mut grads: Vec<String> = Vec::new();
    let mut apply = |input: &str, apply_rows: bool, offset: u64| {
        let accumulate = (ctx.written)(input) || grads.iter().any(|g| g == input);
        grads.push(input.to_string());
        let parts = if nt_xent {
            vec![
                internal("row_w", row_w),
                internal("dq", dq),
                internal("dk", dk),
                internal("q", q),
            ]
        } else if apply_rows {
            vec![
                internal("row_w", row_w),
                internal("dq", dq),
                internal("k", k),
            ]
        } else {
            vec![
                internal("row_w", row_w),
                internal("dk", dk),
                internal("q", q),
            ]
        };
        embedding::apply(
            &label,
            Apply {
                file: "retrieval.wgsl",
                input,
                n: b,
                d,
                cosine,
                scalars: ctx.scalars,
                coef,
                spec: spec
                    .clone()
                    .bool("APPLY_ROWS", apply_rows)
                    .u32("ROW_OFF", offset as u32)
                    .u32("POS_SHIFT", if nt_xent { b as u32 } else { 0 })
                    .u32("NK", nk as u32),
                parts,
                accumulate,
            },
        )
    };
    if nt_xent {
        // Each z row is a loss row and a column (q and k are the same rows): both gradients.
        backward.push(apply(&q_in, true, 0));
        backward.push(apply(&k_in, true, b));
    } else {
        backward.push(apply(&q_in, true, 0));
        backward.push(apply(&k_in, false, 0));
    }
    if let Some(bk) = &bank {
        for (i, &(buffer, first, rows)) in bk.parts.iter().enumerate() {
            backward.push(kernel(
                format!("{label} bank_write part {i}"),
                spec.clone(),
                "bank_write",
                vec![
                    bind("range", Bind::Chunk),
                    internal("state", ctx.state),
                    internal("k", k),
                    internal("col_bias", bias),
                    internal("row_ids", ids),
                    internal("bank", buffer),
                    internal("bank_bias", bk.bias),
                    internal("bank_ids", bk.ids),
                ],
                range_params(first, rows, 0, false),
            ));
        }
        backward.push(PassSpec {
            work: Work::Single,
            ..kernel(
                format!("{label} bank_advance"),
                spec.clone(),
                "bank_advance",
                vec![bind("chunk", Bind::Chunk), internal("state_rw", ctx.state)],
                Params::none(),
            )
        });
    }
    Ok(TermPasses {
        forward,
        backward,
        rows: nq,
        grads,
        bank,
    })
}

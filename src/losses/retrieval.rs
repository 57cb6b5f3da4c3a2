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

use super::embedding::{
    self, check_binding, Apply, Const, Ctx, RowInputs, RowOut, TermPasses, ROWS,
};
use crate::config::{ContrastiveVariant, RetrievalParams, Similarity, TermKind};
use crate::error::{Error, Result};
use crate::kernel::{Bind, PassSpec, Source, Work, RETRIEVAL};
use crate::schedule::Resolved;

/// Words of a bank's state: head, fill.
pub(crate) const BANK_STATE_WORDS: u32 = 2;

/// The bank of one `cross_batch_softmax` term: its internal buffers.
#[derive(Clone, Debug)]
pub(crate) struct Bank {
    /// Embedding parts: (buffer, first row, rows).
    pub parts: Vec<(usize, u64, u64)>,
    /// log_q per row [M].
    pub bias: usize,
    /// Ids per row [M] (two words each).
    pub ids: usize,
    /// First word of (head, fill) in the state.
    pub state_word: u32,
    /// M.
    pub rows: u64,
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
pub(crate) fn passes(
    t: &Resolved,
    dim: u64,
    bank_state: Option<u32>,
    ctx: &mut Ctx,
) -> Result<TermPasses> {
    let b = t.rows;
    let d = dim;
    let name = &t.term.name;
    let label = format!("{} {name}", t.term.kind.loss_type());
    // (similarity, T, accidental hits, NT-Xent, bank (M, warm-up)).
    let (similarity, temperature, hits, nt_xent, bank_spec) = match &t.term.kind {
        TermKind::InBatchSoftmax(p) => (
            p.similarity,
            p.temperature,
            p.remove_accidental_hits,
            false,
            None,
        ),
        TermKind::CrossBatchSoftmax {
            retrieval:
                RetrievalParams {
                    temperature,
                    similarity,
                    remove_accidental_hits,
                },
            bank_size,
            warmup_steps,
        } => (
            *similarity,
            *temperature,
            *remove_accidental_hits,
            false,
            Some((*bank_size as u64, *warmup_steps)),
        ),
        TermKind::Contrastive {
            temperature,
            similarity,
            variant,
        } => (
            *similarity,
            *temperature,
            false,
            *variant == ContrastiveVariant::NtXent,
            None,
        ),
        _ => unreachable!("retrieval terms only"),
    };
    let cosine = similarity == Similarity::Cosine;
    let (q_role, k_role) = if matches!(t.term.kind, TermKind::Contrastive { .. }) {
        ("view_a", "view_b")
    } else {
        ("user", "item")
    };
    let q_in = t.input(q_role).to_string();
    let k_in = t.input(k_role).to_string();
    let nq = if nt_xent { 2 * b } else { b };
    let nk = nq;
    check_binding(t, "the similarity rows", nq * d * 4, ctx.max_binding)?;
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
            check_binding(t, "the bank's ids", m * 8, ctx.max_binding)?;
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
    let consts = |grad: bool| {
        vec![
            ("D", Const::U32(d as u32)),
            ("TC", Const::U32(tc)),
            ("TILED", Const::Bool(ctx.tiled)),
            ("TILE_FLOATS", Const::U32(tc * d as u32)),
            ("INV_T", Const::F32(1.0 / temperature)),
            ("NT_XENT", Const::Bool(nt_xent)),
            ("HIT_MASK", Const::Bool(hits)),
            ("BANK_M", Const::U32(bank_m)),
            ("BANK_STATE", Const::U32(bank_word)),
            ("WARMUP", Const::U32(warmup)),
            ("GRAD", Const::Bool(grad)),
        ]
    };
    let spec = |label: String,
                section: &[&str],
                entry: &'static str,
                grad: bool,
                binds: Vec<Bind>,
                work: Work,
                params: [u32; 3]| PassSpec {
        label,
        source: embedding::kernel(RETRIEVAL, section, &consts(grad)),
        entry,
        binds,
        work,
        reads: Vec::new(),
        params,
    };
    let int = |i: usize| Bind::Whole(Source::Internal(i));

    let mut forward = Vec::new();
    if nt_xent {
        forward.push(embedding::prep(&label, &q_in, b, d, cosine, q, 0));
        forward.push(embedding::prep(&label, &k_in, b, d, cosine, q, b));
    } else {
        forward.push(embedding::prep(&label, &q_in, b, d, cosine, q, 0));
        forward.push(embedding::prep(&label, &k_in, b, d, cosine, k, 0));
    }
    let mut inputs = RowInputs::default();
    let w = inputs.weight(&t.weights);
    let log_q = match t.term.input("log_q") {
        Some(n) => inputs.real(n),
        None => "0.0".into(),
    };
    let id = match t.term.input("item_ids") {
        Some(n) => inputs.key(n, (ctx.dtype)(n)),
        None => "vec2<u32>(0u, 0u)".into(),
    };
    let mut outs = vec![
        RowOut {
            buffer: row_w,
            ty: "f32",
            expr: w.clone(),
            offset: None,
        },
        RowOut {
            buffer: bias,
            ty: "f32",
            expr: log_q,
            offset: None,
        },
        RowOut {
            buffer: ids,
            ty: "vec2<u32>",
            expr: id,
            offset: None,
        },
    ];
    if nt_xent {
        // Rows r and r + B are the two views of example r: both take its weight.
        outs[0].offset = Some(b);
        outs[1].offset = Some(b);
        outs[2].offset = Some(b);
    }
    forward.push(embedding::rowinfo(&label, b, inputs, &outs));

    let sweep =
        |grad: bool, cols: Bind, col_bias: usize, col_ids: usize, params: [u32; 3], what: &str| {
            spec(
                format!("{label} {} {what}", if grad { "grad_rows" } else { "lse" }),
                &["sweep_rows"],
                "sweep_rows",
                grad,
                vec![
                    Bind::Chunk,
                    int(ctx.state),
                    int(q),
                    cols,
                    int(col_bias),
                    int(col_ids),
                    int(ids),
                    int(stats),
                    int(dq),
                ],
                ROWS,
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
                int(k),
                bias,
                ids,
                [first as u32, count as u32, (first as u32) << 1],
                &format!("batch columns {first}.."),
            ));
        }
        if let Some(bk) = &bank {
            for (i, &(buffer, part_first, rows)) in bk.parts.iter().enumerate() {
                for (first, count) in ranges(rows) {
                    forward.push(sweep(
                        grad,
                        int(buffer),
                        bk.bias,
                        bk.ids,
                        [
                            (part_first + first) as u32,
                            count as u32,
                            ((first as u32) << 1) | 1,
                        ],
                        &format!("bank part {i} rows {first}.."),
                    ));
                }
            }
        }
        if !grad {
            forward.push(spec(
                format!("{label} finish"),
                &["finish"],
                "finish",
                false,
                vec![
                    Bind::Chunk,
                    int(q),
                    int(k),
                    int(bias),
                    int(row_w),
                    int(stats),
                    int(ctx.partials),
                ],
                ROWS,
                [0; 3],
            ));
        }
    }
    for (first, count) in ranges(nq) {
        forward.push(spec(
            format!("{label} grad_cols rows {first}.."),
            &["grad_cols"],
            "grad_cols",
            true,
            vec![
                Bind::Chunk,
                int(q),
                int(k),
                int(bias),
                int(ids),
                int(stats),
                int(row_w),
                int(dk),
            ],
            ROWS,
            [first as u32, count as u32, 0],
        ));
    }
    // After the combine: gradients of the inputs, then the bank.
    let coef = super::coef_index(t.slot);
    let q_part = "return row_w[r] * (dq[r * D + c] - k[((r + POS_SHIFT) % NK) * D + c]) * INV_T;";
    let k_part = "let i = (r + NK - POS_SHIFT) % NK;\n    return (dk[r * D + c] - row_w[i] * q[i * D + c]) * INV_T;";
    let mut backward = Vec::new();
    let mut grads: Vec<String> = Vec::new();
    let mut apply = |input: &str, body: String, parts: &[(usize, &str)], offset: u64| {
        let accumulate = (ctx.written)(input) || grads.iter().any(|g| g == input);
        grads.push(input.to_string());
        embedding::apply(
            &label,
            Apply {
                input,
                n: b,
                d,
                cosine,
                scalars: ctx.scalars,
                coef,
                parts,
                consts: vec![
                    ("ROW_OFF", Const::U32(offset as u32)),
                    ("POS_SHIFT", Const::U32(if nt_xent { b as u32 } else { 0 })),
                    ("NK", Const::U32(nk as u32)),
                    ("INV_T", Const::F32(1.0 / temperature)),
                ],
                body,
                accumulate,
            },
        )
    };
    if nt_xent {
        // Each z row is a loss row and a column (q and k are the same rows): both gradients.
        let body = "    let z = r + ROW_OFF;\n    \
                    let g_row = row_w[z] * (dq[z * D + c] - q[((z + POS_SHIFT) % NK) * D + c]);\n    \
                    let i = (z + NK - POS_SHIFT) % NK;\n    \
                    return (g_row + dk[z * D + c] - row_w[i] * q[i * D + c]) * INV_T;";
        let parts = [(row_w, "row_w"), (dq, "dq"), (dk, "dk"), (q, "q")];
        backward.push(apply(&q_in, body.to_string(), &parts, 0));
        backward.push(apply(&k_in, body.to_string(), &parts, b));
    } else {
        backward.push(apply(
            &q_in,
            format!("    {q_part}"),
            &[(row_w, "row_w"), (dq, "dq"), (k, "k")],
            0,
        ));
        backward.push(apply(
            &k_in,
            format!("    {k_part}"),
            &[(row_w, "row_w"), (dk, "dk"), (q, "q")],
            0,
        ));
    }
    if let Some(bk) = &bank {
        for (i, &(buffer, first, rows)) in bk.parts.iter().enumerate() {
            backward.push(spec(
                format!("{label} bank_write part {i}"),
                &["bank_write"],
                "bank_write",
                false,
                vec![
                    Bind::Chunk,
                    int(ctx.state),
                    int(k),
                    int(bias),
                    int(ids),
                    int(buffer),
                    int(bk.bias),
                    int(bk.ids),
                ],
                ROWS,
                [first as u32, rows as u32, 0],
            ));
        }
        backward.push(spec(
            format!("{label} bank_advance"),
            &["bank_advance"],
            "bank_advance",
            false,
            vec![Bind::Chunk, int(ctx.state)],
            Work::Single,
            [0; 3],
        ));
    }
    Ok(TermPasses {
        forward,
        backward,
        rows: nq,
        grads,
        bank,
    })
}

//! Circle loss and multi-similarity loss on the GPU (`shaders/metric.wgsl`). Formulas: LOSSES.md,
//! "Retrieval and embedding terms"; reference: `reference/metric.rs`.
//!
//! `prep` normalises the embeddings; `rowinfo` gathers each row's weight and key (label and
//! session, 64 bits each); `forward` streams every other row through workgroup memory for each
//! row's positive and negative log-sum-exps (the cosine matrix is never stored) and writes the
//! partials; `backward` streams them again for dê_i = Σ_j (G_ij + G_ji) ê_j, with G the
//! derivative of a row's loss in S_ij (S is symmetric, so each S_ij reaches two rows' losses);
//! `apply` scales by the term's coefficient through the normalisation.

use super::embedding::{
    self, check_binding, Apply, Const, Ctx, RowInputs, RowOut, TermPasses, ROWS,
};
use crate::config::TermKind;
use crate::error::{Error, Result};
use crate::kernel::{Bind, PassSpec, Source, METRIC};
use crate::schedule::Resolved;

/// The passes of a `circle_loss` or `multi_similarity_loss` term.
pub(crate) fn passes(t: &Resolved, dim: u64, ctx: &mut Ctx) -> Result<TermPasses> {
    let b = t.rows;
    let d = dim;
    let name = &t.term.name;
    let label = format!("{} {name}", t.term.kind.loss_type());
    check_binding(t, "the normalised embeddings", b * d * 4, ctx.max_binding)?;
    let tc = embedding::tile_columns(d, 32, ctx.workgroup_bytes).ok_or_else(|| {
        Error::Unsupported(format!(
            "term '{name}': one row of d = {d} floats does not fit the adapter's {} bytes of \
             workgroup memory",
            ctx.workgroup_bytes
        ))
    })?;
    let (circle, params) = match t.term.kind {
        TermKind::Circle { margin, gamma } => (true, [margin, gamma, 1.0, 1.0, 0.0]),
        TermKind::MultiSimilarity {
            alpha, beta, lamb, ..
        } => (false, [0.0, 1.0, alpha, beta, lamb]),
        _ => unreachable!("metric terms only"),
    };
    let e = (ctx.alloc)(format!("{name}/e"), b * d * 4)?;
    let keys = (ctx.alloc)(format!("{name}/keys"), b * 16)?;
    let row_w = (ctx.alloc)(format!("{name}/row_w"), b * 4)?;
    let stats = (ctx.alloc)(format!("{name}/stats"), b * 16)?;
    let de = (ctx.alloc)(format!("{name}/de"), b * d * 4)?;
    let carry = (ctx.alloc)(format!("{name}/carry"), b * 16)?;
    let counts = (ctx.alloc)(format!("{name}/counts"), b * 8)?;
    let input = t.input("embeddings").to_string();

    let mut inputs = RowInputs::default();
    let w = inputs.weight(&t.weights);
    let labels = t.input("labels");
    let label_key = inputs.key(labels, (ctx.dtype)(labels));
    let session_key = match t.term.input("session") {
        Some(s) => inputs.key(s, (ctx.dtype)(s)),
        None => "vec2<u32>(0u, 0u)".into(),
    };
    let consts = || {
        vec![
            ("D", Const::U32(d as u32)),
            ("TC", Const::U32(tc)),
            ("TILED", Const::Bool(ctx.tiled)),
            ("TILE_FLOATS", Const::U32(tc * d as u32)),
            ("CIRCLE", Const::Bool(circle)),
            ("MARGIN", Const::F32(params[0])),
            ("GAMMA", Const::F32(params[1])),
            ("ALPHA", Const::F32(params[2])),
            ("BETA", Const::F32(params[3])),
            ("LAMB", Const::F32(params[4])),
        ]
    };
    let int = |i: usize| Bind::Whole(Source::Internal(i));
    let spec = |what: &str, binds: Vec<Bind>, params: [u32; 3]| PassSpec {
        label: format!("{label} {what} columns {}..", params[0]),
        source: embedding::kernel(METRIC, &[what], &consts()),
        entry: match what {
            "forward" => "forward",
            _ => "backward",
        },
        binds,
        work: ROWS,
        reads: Vec::new(),
        params,
    };
    // Column ranges short enough for llvmpipe's loop limiter (see metric.wgsl).
    let range = embedding::columns_per_dispatch(d);
    let ranges: Vec<(u64, u64)> = (0..b)
        .step_by(range as usize)
        .map(|f| (f, range.min(b - f)))
        .collect();
    let mut forward = vec![
        embedding::prep(&label, &input, b, d, true, e, 0),
        embedding::rowinfo(
            &label,
            b,
            inputs,
            &[
                RowOut {
                    buffer: row_w,
                    ty: "f32",
                    expr: w,
                    offset: None,
                },
                RowOut {
                    buffer: keys,
                    ty: "vec4<u32>",
                    expr: format!("vec4<u32>({label_key}, {session_key})"),
                    offset: None,
                },
            ],
        ),
    ];
    for (k, &(first, count)) in ranges.iter().enumerate() {
        let flags = (k == 0) as u32 | (((k + 1 == ranges.len()) as u32) << 1);
        forward.push(spec(
            "forward",
            vec![
                Bind::Chunk,
                int(e),
                int(keys),
                int(row_w),
                int(stats),
                int(ctx.partials),
                int(carry),
                int(counts),
            ],
            [first as u32, count as u32, flags],
        ));
    }
    for &(first, count) in &ranges {
        forward.push(spec(
            "backward",
            vec![Bind::Chunk, int(e), int(keys), int(stats), int(de)],
            [first as u32, count as u32, 0],
        ));
    }
    let accumulate = (ctx.written)(&input);
    let backward = vec![embedding::apply(
        &label,
        Apply {
            input: &input,
            n: b,
            d,
            cosine: true,
            scalars: ctx.scalars,
            coef: super::coef_index(t.slot),
            parts: &[(de, "de")],
            consts: Vec::new(),
            body: "    return de[r * D + c];".into(),
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

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

use super::embedding::{
    self, check_binding, Apply, Const, Ctx, RowInputs, RowOut, TermPasses, ROWS,
};
use crate::config::TermKind;
use crate::error::Result;
use crate::kernel::{Bind, PassSpec, Source, MINING};
use crate::schedule::Resolved;

/// The passes of a `softmax_cross_entropy_with_negative_mining` term.
pub(crate) fn passes(t: &Resolved, dim: u64, ctx: &mut Ctx) -> Result<TermPasses> {
    let b = t.rows;
    let d = dim;
    let name = &t.term.name;
    let label = format!("negative_mining {name}");
    let TermKind::NegativeMining {
        num_negative_samples: k_neg,
        margin,
        gamma,
        coefficient_of_support_vector,
        seed,
    } = t.term.kind
    else {
        unreachable!("mining terms only")
    };
    let k_neg = k_neg as u64;
    check_binding(t, "the normalised embeddings", b * d * 4, ctx.max_binding)?;
    check_binding(
        t,
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

    let mut inputs = RowInputs::default();
    let w = inputs.weight(&t.weights);
    let counted = match t.term.input("labels") {
        Some(l) => format!("select(0.0, 1.0, {} > 0.0)", inputs.real(l)),
        None => "1.0".into(),
    };
    let consts = |grad: bool| {
        vec![
            ("D", Const::U32(d as u32)),
            ("B", Const::U32(b as u32)),
            ("K", Const::U32(k_neg as u32)),
            ("GAMMA", Const::F32(gamma)),
            ("MARGIN", Const::F32(margin)),
            ("T_SV", Const::F32(coefficient_of_support_vector)),
            ("SEEDED", Const::Bool(seed.is_some())),
            ("SEED", Const::U32(seed.unwrap_or(0))),
            ("GRAD", Const::Bool(grad)),
        ]
    };
    let int = |i: usize| Bind::Whole(Source::Internal(i));
    let spec =
        |what: &'static str, grad: bool, binds: Vec<Bind>, params: [u32; 3], at: &str| PassSpec {
            label: format!("{label} {what}{at}"),
            source: embedding::kernel(MINING, &[what], &consts(grad)),
            entry: what,
            binds,
            work: ROWS,
            reads: Vec::new(),
            params,
        };
    // Negatives 1..=K in ranges short enough for llvmpipe's loop limiter (see mining.wgsl).
    let per = embedding::columns_per_dispatch(d);
    let ranges: Vec<[u32; 3]> = (1..=k_neg)
        .step_by(per as usize)
        .map(|first| [first as u32, per.min(k_neg + 1 - first) as u32, 0])
        .collect();
    let rows_binds = || {
        vec![
            Bind::Chunk,
            int(ctx.state),
            int(q),
            int(k),
            int(row_w),
            int(stats),
            int(g),
            int(shifts),
            int(dq),
        ]
    };
    let mut forward = vec![
        embedding::prep(&label, &user, b, d, true, q, 0),
        embedding::prep(&label, &item, b, d, true, k, 0),
        embedding::rowinfo(
            &label,
            b,
            inputs,
            &[RowOut {
                buffer: row_w,
                ty: "vec2<f32>",
                expr: format!("vec2<f32>({w}, {counted})"),
                offset: None,
            }],
        ),
    ];
    for p in &ranges {
        forward.push(spec(
            "rows",
            false,
            rows_binds(),
            *p,
            &format!(" lse negatives {}..", p[0]),
        ));
    }
    forward.push(spec(
        "finish",
        false,
        vec![
            Bind::Chunk,
            int(q),
            int(k),
            int(row_w),
            int(stats),
            int(g),
            int(dq),
            int(dk),
            int(ctx.partials),
        ],
        [0; 3],
        "",
    ));
    for p in &ranges {
        forward.push(spec(
            "rows",
            true,
            rows_binds(),
            *p,
            &format!(" grad negatives {}..", p[0]),
        ));
    }
    for p in &ranges {
        forward.push(spec(
            "items",
            false,
            vec![Bind::Chunk, int(q), int(g), int(shifts), int(dk)],
            *p,
            &format!(" negatives {}..", p[0]),
        ));
    }
    let coef = super::coef_index(t.slot);
    let mut grads: Vec<String> = Vec::new();
    let mut backward = Vec::new();
    for (input, part, wgsl) in [(&user, dq, "dq"), (&item, dk, "dk")] {
        let accumulate = (ctx.written)(input) || grads.contains(input);
        grads.push(input.clone());
        backward.push(embedding::apply(
            &label,
            Apply {
                input,
                n: b,
                d,
                cosine: true,
                scalars: ctx.scalars,
                coef,
                parts: &[(part, wgsl)],
                consts: Vec::new(),
                body: format!("    return {wgsl}[r * D + c];"),
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

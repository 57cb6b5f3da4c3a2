//! `softmax_cross_entropy_with_negative_mining` on the GPU (`shaders/mining.wgsl`): EasyRec's
//! SV-softmax with K cyclic shifts of the item batch as negatives. Formula: LOSSES.md,
//! "Retrieval and embedding terms"; reference: `reference/retrieval.rs`.
//!
//! `prep` normalises users and items; `rowinfo` gathers each row's weight and whether it counts
//! (label > 0); `forward` scores each row's K + 1 items (O(B·K·d), nothing quadratic), writes the
//! partials, d(w·l)/d(score) per row and item (B·(K + 1) floats), the shifts it used, and
//! dû_i; `items` gathers dv̂_j from the rows that scored item j; `apply` scales both by the term's
//! coefficient through the normalisation.

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
    // One invocation scores all K + 1 items of its row; llvmpipe stops an invocation's loops after
    // 65,535 iterations in all, so a larger K would be cut short there, silently. Refused until
    // the negatives are split over dispatches like the sweeps' columns.
    let limit = embedding::columns_per_dispatch(d);
    if k_neg + 1 > limit {
        return Err(crate::error::Error::Unsupported(format!(
            "term '{name}': num_negative_samples = {k_neg} at d = {d} needs more loop iterations \
             per row than one dispatch may take on every adapter (at most {} negatives at this d)",
            limit - 1
        )));
    }
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
    let consts = || {
        vec![
            ("D", Const::U32(d as u32)),
            ("B", Const::U32(b as u32)),
            ("K", Const::U32(k_neg as u32)),
            ("GAMMA", Const::F32(gamma)),
            ("MARGIN", Const::F32(margin)),
            ("T_SV", Const::F32(coefficient_of_support_vector)),
            ("SEEDED", Const::Bool(seed.is_some())),
            ("SEED", Const::U32(seed.unwrap_or(0))),
        ]
    };
    let int = |i: usize| Bind::Whole(Source::Internal(i));
    let spec = |what: &'static str, binds: Vec<Bind>| PassSpec {
        label: format!("{label} {what}"),
        source: embedding::kernel(MINING, &[what], &consts()),
        entry: what,
        binds,
        work: ROWS,
        reads: Vec::new(),
        params: [0; 3],
    };
    let forward = vec![
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
        spec(
            "forward",
            vec![
                Bind::Chunk,
                int(ctx.state),
                int(q),
                int(k),
                int(row_w),
                int(g),
                int(shifts),
                int(dq),
                int(ctx.partials),
            ],
        ),
        spec(
            "items",
            vec![Bind::Chunk, int(q), int(g), int(shifts), int(dk)],
        ),
    ];
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

//! The pairwise-in-session terms (`pair_wise_loss`, `pairwise_logistic_loss`,
//! `pairwise_focal_loss`, `pairwise_hinge_loss`; LOSSES.md, "Pairwise-in-session terms") on the
//! GPU. Reference: `reference/pairwise.rs`; per-pair losses: `shaders/pairwise.wgsl`.
//!
//! After the session grouping ([`super::session`]) each term gathers its (x, y, w, row) into
//! sorted order, then one sweep visits every pair of every session from both ends: the higher
//! row adds the pair's weighted loss to the term's partials, and each row sums its own
//! d/dx over its pairs into `pair_grad` (no float atomics; Σ size² work, O(B) memory). After the
//! combine pass has the term's coefficient, `apply` scatters coefficient · pair_grad into the
//! logits gradient. Partials hold (Σ w_i·l, Σ w_i, #{w_i ≠ 0}, #pairs) over the pairs, so every
//! reduction applies over pairs.
//!
//! OHEM over pairs reuses the selection of [`super::select`]: its histogram rounds are sweeps
//! that recompute the pair values (no per-pair buffer), its picks are the shared ones, with k
//! taken from the pair count found by the first round. Ties at the k-th value keep the lowest
//! pair index i·B + j (batch rows), so OHEM needs B ≤ 65,536.

use super::coef_index;
use super::select;
use super::session::{self, apply_pass, Apply, Shared, Sweep, TermPasses};
use crate::config::PairLoss;
use crate::kernel::{lit, Bind, PassSpec, Source, Work, BINARY, COMMON, PAIRWISE, WG};
use crate::schedule::{Form, Resolved};
use std::fmt::Write;

/// The largest batch for pairwise OHEM: pair indices i·B + j must fit 32 bits.
pub(crate) const MAX_OHEM_ROWS: u64 = 1 << 16;

/// Internal buffers of one pairwise term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PairBuffers {
    /// The sorted rows: (x, y, w, batch row) as vec4<f32>.
    pub rows: usize,
    /// Each sorted row's Σ over its pairs of d(weighted pair loss)/dx, before the coefficient.
    pub grad: usize,
    /// The OHEM selection state's first word in `aux`.
    pub select_base: u32,
}

/// Storage buffers the passes of a session group bind, at most: the chunk and the radix sort's
/// seven, or the chunk and a gather's output, bounds, order, logits, labels and sample-weight
/// tensors.
pub(crate) fn storage_bindings(terms: &[Resolved]) -> u32 {
    terms
        .iter()
        .map(|t| 6 + t.weights.len() as u32)
        .max()
        .unwrap_or(0)
        .max(8)
}

/// `fn pair_loss(d, yi, yj) -> vec3<f32>` for the term's loss (see pairwise.wgsl).
fn pair_loss_fn(loss: &PairLoss, temperature: f64) -> String {
    let body = match loss {
        PairLoss::Logistic { margin } => format!("pair_logistic(d, {})", lit(*margin)),
        PairLoss::LogisticMargin {
            hinge_margin,
            use_label_margin,
        } => {
            let mut margin = lit(hinge_margin.unwrap_or(0.0));
            if *use_label_margin {
                margin = format!("{margin} + (yi - yj) / {}", lit(temperature));
            }
            format!("pair_logistic(d, {margin})")
        }
        PairLoss::Focal {
            gamma,
            alpha,
            hinge_margin,
        } => format!(
            "pair_focal(d, {}, {}, {}, {})",
            lit(*gamma),
            lit(alpha.unwrap_or(-1.0)),
            lit(hinge_margin.unwrap_or(0.0)),
            hinge_margin.is_some()
        ),
        PairLoss::Hinge {
            margin,
            use_label_margin,
        } => {
            if *use_label_margin {
                "pair_hinge(d, yi - yj)".to_string()
            } else {
                format!("pair_hinge(d, {})", lit(*margin))
            }
        }
    };
    format!(
        "const TEMPERATURE: f32 = {};\nfn pair_loss(d: f32, yi: f32, yj: f32) -> vec3<f32> {{\n    \
         _ = yi;\n    _ = yj;\n    return {body};\n}}\n",
        lit(temperature)
    )
}

/// The pair loss of the higher row `hi` against `lo` (sorted rows: x, y, w, batch row).
const PAIR: &str = "pair_loss((hi.x - lo.x) / TEMPERATURE, hi.y, lo.y)";

/// Builds the passes of pairwise term `term`, whose partials go to slot `slot` of the group.
pub(crate) fn passes(
    term: &Resolved,
    slot: u32,
    shared: Shared,
    buffers: PairBuffers,
    grad_accumulates: bool,
) -> TermPasses {
    let (loss, temperature, ohem) = match &term.form {
        Form::Pair {
            loss,
            temperature,
            ohem,
        } => (loss, *temperature, *ohem),
        _ => unreachable!("pairwise terms only"),
    };
    let label = format!("pairwise[{}]", term.term.name);
    let rows = term.rows;

    // Gather (x, y, w, row) into sorted order.
    let gather = session::gather(&label, term, shared.grouping, buffers.rows, 1, |x, y, w| {
        [
            format!("{x}[r]"),
            format!("{y}[r]"),
            w,
            "f32(r)".to_string(),
        ]
    });

    let header = |aux_access: &str| {
        let mut src = format!("{COMMON}\n{BINARY}\n{PAIRWISE}\n");
        src.push_str(&pair_loss_fn(loss, temperature));
        src.push_str("@group(0) @binding(0) var<storage, read> chunk: Chunk;\n");
        src.push_str(
            "@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;\n",
        );
        src.push_str("@group(0) @binding(2) var<storage, read> rows: array<vec4<f32>>;\n");
        src.push_str("@group(0) @binding(3) var<storage, read_write> pair_grad: array<f32>;\n");
        let _ = writeln!(
            src,
            "@group(0) @binding(4) var<storage, {aux_access}> aux: array<{}>;",
            if aux_access == "read" {
                "u32"
            } else {
                "atomic<u32>"
            }
        );
        shared.grouping.declare(&mut src, 5);
        src
    };
    let binds = {
        let mut v = vec![
            Bind::Chunk,
            Bind::Whole(Source::Internal(shared.partials)),
            Bind::Whole(Source::Internal(buffers.rows)),
            Bind::Whole(Source::Internal(buffers.grad)),
            Bind::Whole(Source::Internal(shared.aux)),
        ];
        v.extend(shared.grouping.binds());
        v
    };
    // Every sweep binds the same buffers, whether it uses them or not.
    let touch = "    _ = partials[0];\n    _ = pair_grad[0];\n    _ = batch_row(0u);\n";

    let mut forward = vec![gather];
    let base = buffers.select_base;
    let digits = select::index_digits(rows * rows);
    if ohem.is_some() {
        // Histogram rounds of the selection over the pair values v = w_i·l (higher row's view).
        let mut src = header("read_write");
        src.push_str(
            "var<workgroup> local_hist: array<atomic<u32>, 256>;\nvar<workgroup> local_count: atomic<u32>;\n",
        );
        let round = "(chunk.p2 & 255u)";
        let before = format!(
            "{touch}    let round = {round};\n    let digits = chunk.p2 >> 8u;\n    \
             let prefix = atomicLoad(&aux[{}u]);\n    let index_prefix = atomicLoad(&aux[{}u]);\n    \
             var count = 0u;",
            base + select::PREFIX,
            base + select::INDEX,
        );
        let visit = format!(
            "            if (me.y > o.y) {{
                let hi = me;
                let lo = o;
                let pl = {PAIR};
                if (pl.z != 0.0) {{
                    count = count + 1u;
                    let key = order_key(me.z * pl.x);
                    if (round < {vr}u) {{
                        let shift = 24u - 8u * round;
                        if (round == 0u || high_bits_equal(key, prefix, shift + 8u)) {{
                            atomicAdd(&local_hist[(key >> shift) & 255u], 1u);
                        }}
                    }} else if (key == prefix) {{
                        let index = u32(me.w) * chunk.p1 + u32(o.w);
                        let shift = 8u * (digits - 1u - (round - {vr}u));
                        if (high_bits_equal(index, index_prefix, shift + 8u)) {{
                            atomicAdd(&local_hist[(index >> shift) & 255u], 1u);
                        }}
                    }}
                }}
            }}",
            vr = select::VALUE_ROUNDS,
        );
        let after = format!(
            "    if (count != 0u) {{
        atomicAdd(&local_count, count);
    }}
    workgroupBarrier();
    let c = atomicLoad(&local_hist[lid]);
    if (c != 0u) {{
        atomicAdd(&aux[{hist}u + lid], c);
    }}
    if (lid == 0u && round == 0u) {{
        let n = atomicLoad(&local_count);
        if (n != 0u) {{
            atomicAdd(&aux[{count}u], n);
        }}
        if (wg == 0u) {{
            atomicStore(&aux[{ratio}u], bitcast<u32>({r}));
        }}
    }}",
            hist = base + select::HIST,
            count = base + select::COUNT,
            ratio = base + select::RATIO,
            r = lit(ohem.unwrap_or(1.0)),
        );
        let skip = format!(
            "{round} >= {}u && atomicLoad(&aux[{}u]) == 1u",
            select::VALUE_ROUNDS,
            base + 3
        );
        session::sweep(
            &mut src,
            &Sweep {
                entry: "pair_select",
                before: &before,
                visit: &visit,
                after: &after,
            },
            &skip,
        );
        for round in 0..select::VALUE_ROUNDS + digits {
            forward.push(PassSpec {
                label: format!("{label} select round {round} histogram"),
                source: src.clone(),
                entry: "pair_select",
                binds: binds.clone(),
                work: Work::Rows { rows_per_wg: WG },
                reads: Vec::new(),
                params: [base, rows as u32, round + 256 * digits],
            });
            forward.push(select::pick(&label, shared.aux, base, 0, round, digits));
        }
    }

    // The loss sweep: partials from the higher row, each row's own gradient from both ends.
    let mut src = header("read");
    let (before, visit) = match ohem {
        None => (
            format!("{touch}    _ = aux[0];\n    var acc = vec4<f32>(0.0);\n    var g = 0.0;"),
            // One evaluation per visit, whichever end this row is (no divergent second call).
            format!(
                "            let up = me.y > o.y;
            if (up || o.y > me.y) {{
                let hi = select(o, me, up);
                let lo = select(me, o, up);
                let pl = {PAIR};
                if (up) {{
                    acc = acc + vec4<f32>(me.z * pl.x, me.z * pl.z, select(0.0, pl.z, me.z != 0.0), pl.z);
                    g = g + me.z * pl.y;
                }} else {{
                    g = g - o.z * pl.y;
                }}
            }}"
            ),
        ),
        Some(_) => (
            format!(
                "{touch}    let threshold = aux[{}u];\n    let last_tie = aux[{}u];\n    \
                 var acc = vec4<f32>(0.0);\n    var g = 0.0;",
                base + select::PREFIX,
                base + select::INDEX
            ),
            // Kept: among the k largest values (ties by pair index) and positive.
            "            let up = me.y > o.y;
            if (up || o.y > me.y) {
                let hi = select(o, me, up);
                let lo = select(me, o, up);
                let pl = PAIR;
                let v = hi.z * pl.x;
                if (pl.z != 0.0 && v > 0.0 && select_kept(order_key(v), u32(hi.w) * chunk.p1 + u32(lo.w), threshold, last_tie)) {
                    if (up) {
                        acc = acc + vec4<f32>(v, 0.0, 1.0, 0.0);
                        g = g + me.z * pl.y;
                    } else {
                        g = g - o.z * pl.y;
                    }
                }
            }"
            .replace("PAIR", PAIR),
        ),
    };
    let after = format!(
        "    let total = workgroup_sum(lid, acc);
    if (lid == 0u && wg < chunk.wgs) {{
        partials[partial_index(chunk, {slot}u, wg)] = total;
    }}
    if (valid) {{
        pair_grad[p] = g / TEMPERATURE;
    }}"
    );
    session::sweep(
        &mut src,
        &Sweep {
            entry: "pair_loss_sweep",
            before: &before,
            visit: &visit,
            after: &after,
        },
        "false",
    );
    forward.push(PassSpec {
        label: format!("{label} pairs"),
        source: src,
        entry: "pair_loss_sweep",
        binds,
        work: Work::Rows { rows_per_wg: WG },
        reads: Vec::new(),
        params: [base, rows as u32, 0],
    });

    let expr = format!("scalars[{}] * values0[p]", coef_index(term.slot));
    let apply = apply_pass(
        &label,
        term,
        shared,
        Apply {
            values: &[(buffers.grad, "f32")],
            functions: "",
            expr: &expr,
            width: 1,
        },
        grad_accumulates,
    );
    TermPasses { forward, apply }
}

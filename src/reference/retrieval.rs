//! Retrieval and contrastive terms in f64 (docs/LOSSES.md, "Retrieval and embedding terms"):
//! `in_batch_softmax` and `cross_batch_softmax` (TFRS `Retrieval` with the logQ correction of Yi et
//! al. RecSys 2019; the memory bank of Wang et al. SIGIR 2021), `contrastive_loss` (EasyRec
//! `info_nce_loss` and SimCLR/EasyRec `nce_loss`) and `softmax_cross_entropy_with_negative_mining`
//! (EasyRec `softmax_loss_with_negative_mining`, SV-softmax of Wang et al. AAAI 2020). Also the
//! similarity helpers that [`super::metric`] shares.
//!
//! Embeddings are row-major `[B, d]` slices. Every loss here is, per row, a softmax
//! cross-entropy over a row of logits: l = lse(z) − z_target, dl/dz = softmax(z) − one-hot, with
//! removed columns at −∞. The row losses are reduced ([`combine::reduce`]), then each row's
//! logits are computed again and its derivative scaled by dL/dl_i, so that nothing of size B × B
//! (or B × M) is stored.

use super::combine;
use super::inputs::{embeddings, optional_ids, optional_real_column, sample_weights};
use super::state::{BankRow, BankState};
use super::terms::{TermState, TermValue};
use crate::config::{LossTerm, Reduction};
use crate::error::{Error, Result};
use crate::losses::mining::params::MiningParams;
use crate::losses::retrieval::params::{
    ContrastiveParams, ContrastiveVariant, CrossBatchParams, InBatchParams, RetrievalParams,
    Similarity,
};
use crate::rng;
use crate::tensor::HostBatch;

/// The floor ε of the norm in x̂ = x / max(‖x‖, ε) (PyTorch `F.normalize`).
pub(crate) const NORM_EPS: f64 = 1e-12;

/// Row `i` of a row-major matrix with `dim` columns.
pub(crate) fn row(x: &[f64], dim: usize, i: usize) -> &[f64] {
    &x[i * dim..(i + 1) * dim]
}

/// u·v.
pub(crate) fn dot(u: &[f64], v: &[f64]) -> f64 {
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

/// acc += scale·x, element by element.
pub(crate) fn add_scaled(acc: &mut [f64], scale: f64, x: &[f64]) {
    for (a, xi) in acc.iter_mut().zip(x) {
        *a += scale * xi;
    }
}

/// x̂ = x / max(‖x‖₂, 1e-12) row by row (PyTorch `F.normalize`).
pub(crate) fn normalise(x: &[f64], dim: usize) -> Vec<f64> {
    x.chunks(dim)
        .flat_map(|r| {
            let n = dot(r, r).sqrt().max(NORM_EPS);
            r.iter().map(move |v| v / n)
        })
        .collect()
}

/// dL/dx from g = dL/dx̂ through x̂ = x / max(‖x‖, 1e-12), row by row: where ‖x‖ > 1e-12,
/// dx = (g − x̂ (x̂·g)) / ‖x‖; else (x̂ = x / 1e-12) dx = g / 1e-12.
pub(crate) fn normalise_backward(x: &[f64], dim: usize, mut g: Vec<f64>) -> Vec<f64> {
    for (r, gr) in x.chunks(dim).zip(g.chunks_mut(dim)) {
        let n = dot(r, r).sqrt();
        if n > NORM_EPS {
            let unit: Vec<f64> = r.iter().map(|v| v / n).collect();
            let along = dot(&unit, gr);
            for (gi, ui) in gr.iter_mut().zip(&unit) {
                *gi = (*gi - ui * along) / n;
            }
        } else {
            gr.iter_mut().for_each(|gi| *gi /= NORM_EPS);
        }
    }
    g
}

/// The rows the similarity multiplies: x̂ under cosine, x under dot.
pub(crate) fn prepare(x: &[f64], dim: usize, similarity: Similarity) -> Vec<f64> {
    match similarity {
        Similarity::Dot => x.to_vec(),
        Similarity::Cosine => normalise(x, dim),
    }
}

/// dL/dx from dL/d(prepared x) ([`prepare`]).
pub(crate) fn prepare_backward(
    x: &[f64],
    dim: usize,
    similarity: Similarity,
    g: Vec<f64>,
) -> Vec<f64> {
    match similarity {
        Similarity::Dot => g,
        Similarity::Cosine => normalise_backward(x, dim, g),
    }
}

/// lse(z) = max + log Σ e^{z − max} over the finite entries (−∞ entries add nothing); −∞ when
/// there is none.
pub(crate) fn log_sum_exp(z: &[f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Softmax cross-entropy of one row of logits `z` (removed columns −∞) with column `target`
/// (finite): l = lse(z) − z_target and dl/dz_c = e^{z_c − lse} − [c = target].
pub(crate) fn softmax_ce(z: &[f64], target: usize) -> (f64, Vec<f64>) {
    let lse = log_sum_exp(z);
    let mut dz: Vec<f64> = z.iter().map(|v| (v - lse).exp()).collect();
    dz[target] -= 1.0;
    (lse - z[target], dz)
}

/// A loss over two embedding tensors: its value and its gradient with respect to each.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TwoGrads {
    /// The reduced term value.
    pub value: f64,
    /// dL/d(first tensor): user, or view a.
    pub first: Vec<f64>,
    /// dL/d(second tensor): item, or view b.
    pub second: Vec<f64>,
}

/// The inputs of `in_batch_softmax` and `cross_batch_softmax`: user u and item v `[B, d]`
/// (finite), optional item ids and log_q (B each).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Towers<'a> {
    /// u, B·d values.
    pub user: &'a [f64],
    /// v, B·d values.
    pub item: &'a [f64],
    /// B.
    pub rows: usize,
    /// d.
    pub dim: usize,
    /// item_ids (None without the role).
    pub item_ids: Option<&'a [i64]>,
    /// log_q (None without the role: 0 everywhere).
    pub log_q: Option<&'a [f64]>,
}

/// The sampled softmax of `in_batch_softmax`, and of `cross_batch_softmax` with the bank rows
/// `bank` (empty during warm-up or before any step; docs/LOSSES.md, "Retrieval and embedding terms").
///
/// Row i has the logits s_ij = sim(u_i, v_j)/T − log_q_j for the B batch columns (log_q_j = 0
/// without log_q, applied to the positive too) followed by sim(u_i, e_m)/T − log_q_m for the bank
/// rows (e_m is stored already normalised under cosine; u_i is normalised). With
/// remove_accidental_hits, batch columns j ≠ i with id_j = id_i and bank rows with id = id_i are
/// removed (−∞). l_i = lse(kept) − s_ii; every row counts, with the sample weights w and
/// `reduction`. The bank is detached: the gradient goes to u (from every column) and to the
/// batch's v (from every row).
pub(crate) fn sampled_softmax(
    params: &RetrievalParams,
    towers: &Towers,
    bank: &[&BankRow],
    reduction: Reduction,
    w: &[f64],
) -> TwoGrads {
    let (b, d, t) = (towers.rows, towers.dim, params.temperature);
    let u = prepare(towers.user, d, params.similarity);
    let v = prepare(towers.item, d, params.similarity);
    let log_q = |j: usize| towers.log_q.map_or(0.0, |q| q[j]);
    let id = |j: usize| towers.item_ids.map(|ids| ids[j]);
    // Whether a column with item id `other` is an accidental hit of row i.
    let hit = |i: usize, other: Option<i64>| {
        params.remove_accidental_hits && other.is_some() && other == id(i)
    };
    let logits = |i: usize| -> Vec<f64> {
        let ui = row(&u, d, i);
        let batch = (0..b).map(|j| {
            if j != i && hit(i, id(j)) {
                f64::NEG_INFINITY
            } else {
                dot(ui, row(&v, d, j)) / t - log_q(j)
            }
        });
        let banked = bank.iter().map(|e| {
            if hit(i, e.id) {
                f64::NEG_INFINITY
            } else {
                dot(ui, &e.embedding) / t - e.log_q
            }
        });
        batch.chain(banked).collect()
    };
    let loss: Vec<f64> = (0..b).map(|i| softmax_ce(&logits(i), i).0).collect();
    let reduced = combine::reduce(reduction, w, w, &loss);
    let mut du = vec![0.0; b * d];
    let mut dv = vec![0.0; b * d];
    for i in 0..b {
        let factor = reduced.row_factor[i];
        if factor == 0.0 {
            continue;
        }
        let (_, dz) = softmax_ce(&logits(i), i);
        for (c, g) in dz.into_iter().enumerate() {
            let g = factor * g / t;
            if c < b {
                add_scaled(&mut du[i * d..(i + 1) * d], g, row(&v, d, c));
                add_scaled(&mut dv[c * d..(c + 1) * d], g, row(&u, d, i));
            } else {
                add_scaled(&mut du[i * d..(i + 1) * d], g, &bank[c - b].embedding);
            }
        }
    }
    TwoGrads {
        value: reduced.value,
        first: prepare_backward(towers.user, d, params.similarity, du),
        second: prepare_backward(towers.item, d, params.similarity, dv),
    }
}

/// The bank after a successful step: row i of the batch (v̂_i under cosine, v_i under dot,
/// log_q_i or 0, id_i or none) goes to slot (head + i) mod M for i = 0..B − 1 in order (when
/// B > M a slot keeps the last row written to it), then head ← (head + B) mod M and
/// fill ← min(fill + B, M).
pub(crate) fn write_bank(bank: &BankState, similarity: Similarity, towers: &Towers) -> BankState {
    let (b, d, m) = (towers.rows, towers.dim, bank.slots.len());
    let v = prepare(towers.item, d, similarity);
    let mut next = bank.clone();
    for i in 0..b {
        next.slots[(bank.head + i) % m] = Some(BankRow {
            embedding: row(&v, d, i).to_vec(),
            log_q: towers.log_q.map_or(0.0, |q| q[i]),
            id: towers.item_ids.map(|ids| ids[i]),
        });
    }
    next.head = (bank.head + b) % m;
    next.fill = (bank.fill + b).min(m);
    next
}

/// `contrastive_loss` over the views a, b `[B, d]` (`rows` = B), similarity sim, temperature τ.
///
/// - `info_nce` (EasyRec `info_nce_loss`): l_i = lse_j(sim(a_i, b_j)/τ) − sim(a_i, b_i)/τ over
///   the B columns; B rows with weights w_i.
/// - `nt_xent` (SimCLR; EasyRec `nce_loss`): z = [a; b], 2B rows; l_r = lse_{c ≠ r}(sim(z_r,
///   z_c)/τ) − sim(z_r, z_{(r + B) mod 2B})/τ; rows r and r + B both take w_r, so `mean` divides
///   by 2B and `nonzero_mean` by 2·#{w_i ≠ 0}.
///
/// Gradients to a and b, through the normalisation under cosine.
#[allow(clippy::too_many_arguments)] // the signature mirrors the term's parameters one to one
pub(crate) fn contrastive(
    temperature: f64,
    similarity: Similarity,
    variant: ContrastiveVariant,
    a: &[f64],
    b: &[f64],
    dim: usize,
    reduction: Reduction,
    w: &[f64],
) -> TwoGrads {
    let (rows, d, t) = (w.len(), dim, temperature);
    let pa = prepare(a, d, similarity);
    let pb = prepare(b, d, similarity);
    let (value, da, db) = match variant {
        ContrastiveVariant::InfoNce => {
            let logits = |i: usize| -> Vec<f64> {
                (0..rows)
                    .map(|j| dot(row(&pa, d, i), row(&pb, d, j)) / t)
                    .collect()
            };
            let loss: Vec<f64> = (0..rows).map(|i| softmax_ce(&logits(i), i).0).collect();
            let reduced = combine::reduce(reduction, w, w, &loss);
            let mut da = vec![0.0; rows * d];
            let mut db = vec![0.0; rows * d];
            for i in 0..rows {
                let factor = reduced.row_factor[i];
                if factor == 0.0 {
                    continue;
                }
                let (_, dz) = softmax_ce(&logits(i), i);
                for (j, g) in dz.into_iter().enumerate() {
                    let g = factor * g / t;
                    add_scaled(&mut da[i * d..(i + 1) * d], g, row(&pb, d, j));
                    add_scaled(&mut db[j * d..(j + 1) * d], g, row(&pa, d, i));
                }
            }
            (reduced.value, da, db)
        }
        ContrastiveVariant::NtXent => {
            let n = 2 * rows;
            let z: Vec<f64> = pa.iter().chain(&pb).copied().collect();
            let logits = |r: usize| -> Vec<f64> {
                (0..n)
                    .map(|c| {
                        if c == r {
                            f64::NEG_INFINITY
                        } else {
                            dot(row(&z, d, r), row(&z, d, c)) / t
                        }
                    })
                    .collect()
            };
            let positive = |r: usize| (r + rows) % n;
            let loss: Vec<f64> = (0..n)
                .map(|r| softmax_ce(&logits(r), positive(r)).0)
                .collect();
            let w2: Vec<f64> = w.iter().chain(w).copied().collect();
            let reduced = combine::reduce(reduction, &w2, &w2, &loss);
            let mut dz = vec![0.0; n * d];
            for r in 0..n {
                let factor = reduced.row_factor[r];
                if factor == 0.0 {
                    continue;
                }
                let (_, g_row) = softmax_ce(&logits(r), positive(r));
                for (c, g) in g_row.into_iter().enumerate() {
                    let g = factor * g / t;
                    if c == r || g == 0.0 {
                        continue;
                    }
                    add_scaled(&mut dz[r * d..(r + 1) * d], g, row(&z, d, c));
                    add_scaled(&mut dz[c * d..(c + 1) * d], g, row(&z, d, r));
                }
            }
            let db = dz.split_off(rows * d);
            (reduced.value, dz, db)
        }
    };
    TwoGrads {
        value,
        first: prepare_backward(a, d, similarity, da),
        second: prepare_backward(b, d, similarity, db),
    }
}

/// The parameters of `softmax_cross_entropy_with_negative_mining`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Mining {
    /// Subtracted from the positive's similarity.
    pub margin: f64,
    /// γ, the scale of every logit.
    pub gamma: f64,
    /// t (coefficient_of_support_vector): a hard negative's similarity s becomes t·s + t − 1.
    pub t: f64,
}

/// The K cyclic shifts s_1..s_K of the item batch (B = `rows` > K): 1..K without a seed; with a
/// seed, s_k = `mining_shift(seed, step mod 2^32, k − 1, B)` ([`rng::mining_shift`]), each in
/// [1, B).
pub(crate) fn mining_shifts(count: u32, seed: Option<u32>, step: u64, rows: usize) -> Vec<usize> {
    (1..=count)
        .map(|k| match seed {
            None => k as usize,
            Some(seed) => rng::mining_shift(seed, step as u32, k - 1, rows as u32) as usize,
        })
        .collect()
}

/// `softmax_cross_entropy_with_negative_mining` (EasyRec `softmax_loss_with_negative_mining` with
/// `support_vector_guided_softmax_loss`): û, v̂ normalised (always); row i's k-th negative is
/// item row n_k(i) = (i − s_k) mod B (TF `tf.roll` by s_k along the batch); sp = û_i·v̂_i,
/// sn_k = û_i·v̂_{n_k(i)}. Logits z_0 = γ·(sp − margin), and z_k = γ·(t·sn_k + t − 1) when
/// (sp − margin) − sn_k < 0 (a hard negative; the test is not differentiated), else γ·sn_k.
/// l_i = lse(z_0..z_K) − z_0. Rows count when `labels` is absent or label_i > 0
/// ([`combine::reduce_counted`] with the sample weights w). Gradients to u and v (an item row as
/// its row's positive and as other rows' negatives).
#[allow(clippy::too_many_arguments)] // the signature mirrors the term's parameters one to one
pub(crate) fn negative_mining(
    mining: &Mining,
    user: &[f64],
    item: &[f64],
    dim: usize,
    labels: Option<&[f64]>,
    shifts: &[usize],
    reduction: Reduction,
    w: &[f64],
) -> TwoGrads {
    let (b, d, gamma) = (w.len(), dim, mining.gamma);
    let u = normalise(user, d);
    let v = normalise(item, d);
    let negative = |i: usize, shift: usize| (i + b - shift % b) % b;
    // Row i's logits z_0..z_K and dz_k/d(similarity) for each.
    let logits = |i: usize| -> (Vec<f64>, Vec<f64>) {
        let ui = row(&u, d, i);
        let positive = dot(ui, row(&v, d, i)) - mining.margin;
        let mut z = vec![gamma * positive];
        let mut slope = vec![gamma];
        for &s in shifts {
            let sn = dot(ui, row(&v, d, negative(i, s)));
            if positive - sn < 0.0 {
                z.push(gamma * (mining.t * sn + mining.t - 1.0));
                slope.push(gamma * mining.t);
            } else {
                z.push(gamma * sn);
                slope.push(gamma);
            }
        }
        (z, slope)
    };
    let counted: Vec<bool> = (0..b).map(|i| labels.is_none_or(|y| y[i] > 0.0)).collect();
    let loss: Vec<f64> = (0..b)
        .map(|i| {
            if counted[i] {
                softmax_ce(&logits(i).0, 0).0
            } else {
                0.0
            }
        })
        .collect();
    let reduced = combine::reduce_counted(reduction, w, &loss, &counted);
    let mut du = vec![0.0; b * d];
    let mut dv = vec![0.0; b * d];
    for i in 0..b {
        let factor = reduced.row_factor[i];
        if factor == 0.0 {
            continue;
        }
        let (z, slope) = logits(i);
        let (_, dz) = softmax_ce(&z, 0);
        for k in 0..=shifts.len() {
            let j = if k == 0 {
                i
            } else {
                negative(i, shifts[k - 1])
            };
            let g = factor * dz[k] * slope[k];
            add_scaled(&mut du[i * d..(i + 1) * d], g, row(&v, d, j));
            add_scaled(&mut dv[j * d..(j + 1) * d], g, row(&u, d, i));
        }
    }
    TwoGrads {
        value: reduced.value,
        first: normalise_backward(user, d, du),
        second: normalise_backward(item, d, dv),
    }
}

/// `in_batch_softmax`, `cross_batch_softmax` (with its bank before the step, used as negatives
/// once the successful steps before this one reach warmup_steps) or `contrastive_loss`, by the
/// term's parameters.
pub(crate) fn evaluate(term: &LossTerm, batch: &HostBatch, state: TermState) -> Result<TermValue> {
    let kind = &term.kind;
    if let Some(p) = kind.params::<InBatchParams>() {
        return retrieval_term(term, batch, &p.retrieval(), None);
    }
    if let Some(p) = kind.params::<CrossBatchParams>() {
        let bank = state.bank.ok_or_else(|| {
            Error::State(format!(
                "term '{}' has no memory bank in the state",
                term.name
            ))
        })?;
        let used = state.step >= u64::from(p.warmup_steps);
        return retrieval_term(term, batch, &p.retrieval(), Some((bank, used)));
    }
    let p: &ContrastiveParams = kind
        .params()
        .ok_or_else(|| crate::losses::family::wrong_params(term))?;
    let a = embeddings(batch, term, "view_a", None)?;
    let b = embeddings(batch, term, "view_b", Some(&a))?;
    let w = sample_weights(batch, term, (a.rows, a.name))?;
    let r = contrastive(
        p.temperature,
        p.similarity,
        p.variant,
        a.values,
        b.values,
        a.dim,
        term.effective_reduction(),
        &w,
    );
    Ok(two_tower_value(r, a.name, b.name))
}

/// `softmax_cross_entropy_with_negative_mining` ([`negative_mining`]) at successful step `step`.
pub(crate) fn evaluate_mining(
    term: &LossTerm,
    batch: &HostBatch,
    p: &MiningParams,
    step: u64,
) -> Result<TermValue> {
    let user = embeddings(batch, term, "user", None)?;
    let item = embeddings(batch, term, "item", Some(&user))?;
    let k = p.num_negative_samples;
    if k as usize >= user.rows {
        return Err(Error::tensor(
            user.name,
            Some(&term.name),
            format!(
                "num_negative_samples = {k} must be less than the batch's B rows, but the shape \
                 is [{}, {}] (B = {})",
                user.rows, user.dim, user.rows
            ),
        ));
    }
    let rows = (user.rows, user.name);
    let labels = optional_real_column(batch, term, "labels", rows)?;
    let w = sample_weights(batch, term, rows)?;
    let mining = Mining {
        margin: p.margin,
        gamma: p.gamma,
        t: p.coefficient_of_support_vector,
    };
    let shifts = mining_shifts(k, p.seed, step, user.rows);
    let r = negative_mining(
        &mining,
        user.values,
        item.values,
        user.dim,
        labels,
        &shifts,
        term.effective_reduction(),
        &w,
    );
    Ok(two_tower_value(r, user.name, item.name))
}

/// The term value of a loss over two embedding tensors, with their gradients.
fn two_tower_value(r: TwoGrads, first: &str, second: &str) -> TermValue {
    TermValue::plain(
        r.value,
        vec![(first.to_string(), r.first), (second.to_string(), r.second)],
    )
}

/// `in_batch_softmax`, or `cross_batch_softmax` with `bank` = (its bank before the step, whether
/// the bank is used this step) ([`retrieval::sampled_softmax`]): user and item `[B, d]` (finite,
/// the same shape), optional integer item ids and finite log_q with B rows, sample weights.
/// remove_accidental_hits needs `item_ids` (a config built in code may lack it). The bank's
/// embeddings must have d values. The bank after the step (the batch written at the head, also
/// during warm-up) goes into the term value.
fn retrieval_term(
    term: &LossTerm,
    batch: &HostBatch,
    params: &RetrievalParams,
    bank: Option<(&BankState, bool)>,
) -> Result<TermValue> {
    let user = embeddings(batch, term, "user", None)?;
    let item = embeddings(batch, term, "item", Some(&user))?;
    let rows = (user.rows, user.name);
    let item_ids = optional_ids(batch, term, "item_ids", rows, "item ids")?;
    if params.remove_accidental_hits && item_ids.is_none() {
        return Err(Error::term(
            &term.name,
            "remove_accidental_hits needs the 'item_ids' role (the ids to compare)",
        ));
    }
    let log_q = optional_real_column(batch, term, "log_q", rows)?;
    let w = sample_weights(batch, term, rows)?;
    if let Some(dim) = bank
        .and_then(|(b, _)| b.rows().next())
        .map(|r| r.embedding.len())
    {
        if dim != item.dim {
            return Err(Error::tensor(
                item.name,
                Some(&term.name),
                format!(
                    "has shape [{}, {}] but the memory bank holds embeddings of d = {dim} from \
                     earlier steps",
                    item.rows, item.dim
                ),
            ));
        }
    }
    let towers = Towers {
        user: user.values,
        item: item.values,
        rows: user.rows,
        dim: user.dim,
        item_ids,
        log_q,
    };
    let negatives: Vec<_> = match bank {
        Some((bank, true)) => bank.rows().collect(),
        _ => Vec::new(),
    };
    let r = sampled_softmax(params, &towers, &negatives, term.effective_reduction(), &w);
    let mut value = two_tower_value(r, user.name, item.name);
    value.bank = bank.map(|(bank, _)| write_bank(bank, params.similarity, &towers));
    Ok(value)
}

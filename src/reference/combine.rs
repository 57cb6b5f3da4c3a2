//! Reductions of per-row losses to a term value, and the weighting strategies that combine term
//! values into the total (docs/LOSSES.md, "Reduction", "Binary focal" for OHEM, and "Combining terms").

use super::{JrcState, ReferenceState};
use crate::config::{LossConfig, Optimizer, Reduction, Strategy};
use crate::rng;

/// A term value and, per row, dL/dl_i: the factor that turns the row's dl_i/d(input) into
/// dL/d(input).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reduced {
    /// The term value L.
    pub value: f64,
    /// dL/dl_i for every row.
    pub row_factor: Vec<f64>,
}

/// L = Σ_i w_i·l_i / D with D = #{i : w_i ≠ 0} (`nonzero_mean`), Σ_i ω_i (`weighted_mean`), B
/// (`mean`) or 1 (`sum`); L = 0 with zero factors when D = 0. `w` are the sample weights (0 for
/// rows that contribute nothing), `omega` the weighted-mean weights (equal to `w` except for softmax
/// with class ids, where ω_i = c_{y_i}·w_i).
pub(crate) fn reduce(reduction: Reduction, w: &[f64], omega: &[f64], loss: &[f64]) -> Reduced {
    let denominator = match reduction {
        Reduction::NonzeroMean => w.iter().filter(|wi| **wi != 0.0).count() as f64,
        Reduction::WeightedMean => omega.iter().sum(),
        Reduction::Mean => w.len() as f64,
        Reduction::Sum => 1.0,
    };
    if denominator == 0.0 {
        return Reduced {
            value: 0.0,
            row_factor: vec![0.0; w.len()],
        };
    }
    let numerator: f64 = w.iter().zip(loss).map(|(wi, li)| wi * li).sum();
    Reduced {
        value: numerator / denominator,
        row_factor: w.iter().map(|wi| wi / denominator).collect(),
    }
}

/// [`reduce`] over the rows that count (`counted[i]`), with ω = w: the rows that do not count are
/// in no numerator and no denominator (`mean` divides by the number of counted rows,
/// `nonzero_mean` by the counted rows with w_i ≠ 0) and get the factor 0.
pub(crate) fn reduce_counted(
    reduction: Reduction,
    w: &[f64],
    loss: &[f64],
    counted: &[bool],
) -> Reduced {
    let rows: Vec<usize> = (0..w.len()).filter(|&i| counted[i]).collect();
    let w_counted: Vec<f64> = rows.iter().map(|&i| w[i]).collect();
    let loss_counted: Vec<f64> = rows.iter().map(|&i| loss[i]).collect();
    let reduced = reduce(reduction, &w_counted, &w_counted, &loss_counted);
    let mut row_factor = vec![0.0; w.len()];
    for (&i, f) in rows.iter().zip(&reduced.row_factor) {
        row_factor[i] = *f;
    }
    Reduced {
        value: reduced.value,
        row_factor,
    }
}

/// The denominator of an OHEM ratio taken as a decimal: r = units / 10^9.
pub(crate) const RATIO_SCALE: u64 = 1_000_000_000;

/// The OHEM ratio `r` as a whole number of 10^-9 (the decimal the config means, to 9 places:
/// 0.3 is 300000000 exactly, not the binary double just below 0.3).
pub(crate) fn ratio_units(ratio: f64) -> u32 {
    (ratio * RATIO_SCALE as f64)
        .round()
        .clamp(1.0, RATIO_SCALE as f64) as u32
}

/// OHEM's k of n candidates (docs/LOSSES.md §4.2): round half to even (EasyRec's
/// `tf.math.rint`) of n·units/10^9, in exact integer arithmetic (select.wgsl does the same on the
/// GPU), at least 1 and at most n.
pub(crate) fn keep_count(n: u64, units: u32) -> u64 {
    let product = n as u128 * units as u128;
    let (q, rem) = (product / RATIO_SCALE as u128, product % RATIO_SCALE as u128);
    let up = 2 * rem > RATIO_SCALE as u128 || (2 * rem == RATIO_SCALE as u128 && q % 2 == 1);
    (q as u64 + up as u64).clamp(1, n.max(1))
}

/// OHEM (docs/LOSSES.md, "Binary focal"): with v_i = w_i·l_i, keep the k largest (k =
/// [`keep_count`]; ties at the k-th value: exactly k kept, lowest index first), drop kept values
/// ≤ 0, and take the plain mean of the rest (0 when none is left). Only kept rows get a factor,
/// w_i / count.
pub(crate) fn ohem(ratio: f64, w: &[f64], loss: &[f64]) -> Reduced {
    let rows = loss.len();
    let v: Vec<f64> = w.iter().zip(loss).map(|(wi, li)| wi * li).collect();
    let k = (keep_count(rows as u64, ratio_units(ratio)) as usize).min(rows);
    let mut order: Vec<usize> = (0..rows).collect();
    // Descending by value, ascending by index among equal values (the sort is stable).
    order.sort_by(|&i, &j| v[j].total_cmp(&v[i]));
    let kept: Vec<usize> = order[..k].iter().copied().filter(|&i| v[i] > 0.0).collect();
    let mut row_factor = vec![0.0; rows];
    if kept.is_empty() {
        return Reduced {
            value: 0.0,
            row_factor,
        };
    }
    let count = kept.len() as f64;
    let sum: f64 = kept.iter().map(|&i| v[i]).sum();
    for &i in &kept {
        row_factor[i] = w[i] / count;
    }
    Reduced {
        value: sum / count,
        row_factor,
    }
}

/// The outcome of combining one step's term values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Combined {
    /// The total after flooding.
    pub total: f64,
    /// Each term's effective weight e_k (without the flooding sign).
    pub weights: Vec<f64>,
    /// d total / d L_k before the flooding sign: e_k, except for `ema_reweight` with
    /// `detach_theta = false` (docs/LOSSES.md §8.4).
    pub grad_weights: Vec<f64>,
    /// The flooding sign (+1, −1 or 0; +1 without flooding) that multiplies every gradient.
    pub sign: f64,
    /// d total / d s_k, flooding sign included (0 for terms whose weight is not learned).
    pub log_var_grads: Vec<f64>,
    /// The state after this step.
    pub next: ReferenceState,
}

/// The uncertainty factor c_k: 0.5 for regression terms (`l2_loss`, `sigmoid_l2_loss`), else 1.
fn uncertainty_factor(regression: bool) -> f64 {
    if regression {
        0.5
    } else {
        1.0
    }
}

/// Combines the term values `values` (config order) under `config.strategy` and `config.flooding`
/// from `state`, and returns the total, the weights, the gradient scale and the next state
/// (learned s after the optimiser step, Adam moments, EMA θ, step counter + 1).
pub(crate) fn combine(config: &LossConfig, values: &[f64], state: &ReferenceState) -> Combined {
    let terms = &config.losses;
    let mut next = state.clone();
    let mut raw = 0.0;
    let mut log_var_grads = vec![0.0; terms.len()];
    let weights: Vec<f64> = match &config.strategy {
        Strategy::Fixed => terms.iter().map(|t| t.weight).collect(),
        Strategy::Uncertainty(_) => terms
            .iter()
            .enumerate()
            .map(|(k, t)| {
                if !t.learn_loss_weight {
                    return t.weight;
                }
                let s = state.log_vars[k];
                let e = uncertainty_factor(t.kind.is_regression()) * (-s).exp();
                raw += 0.5 * s;
                log_var_grads[k] = -e * values[k] + 0.5;
                e
            })
            .collect(),
        // The generator's step is a u32: the counter is taken modulo 2^32.
        Strategy::Random { seed } => rng::rlw_weights(*seed, state.step as u32, terms.len()),
        Strategy::EmaReweight(ema) => {
            let main = config.losses.iter().position(|t| t.name == ema.main);
            let aux = config.losses.iter().position(|t| t.name == ema.aux);
            let (main, aux) = main
                .zip(aux)
                .expect("ema_reweight terms checked by validate()");
            let denominator = values[main] + ema.lambda * values[aux];
            let theta_tilde = if denominator == 0.0 {
                state.ema_theta
            } else {
                values[main] / denominator
            };
            next.ema_theta = ema.alpha * theta_tilde + (1.0 - ema.alpha) * state.ema_theta;
            terms
                .iter()
                .enumerate()
                .map(|(k, t)| match k {
                    _ if k == main => 1.0,
                    _ if k == aux => next.ema_theta,
                    _ => t.weight,
                })
                .collect()
        }
    };
    for (e, l) in weights.iter().zip(values) {
        raw += e * l;
    }
    let (total, sign) = match config.flooding {
        None => (raw, 1.0),
        Some(b) => {
            let sign = if raw > b {
                1.0
            } else if raw < b {
                -1.0
            } else {
                0.0
            };
            ((raw - b).abs() + b, sign)
        }
    };
    for g in &mut log_var_grads {
        *g *= sign;
    }
    if let Strategy::Uncertainty(optimizer) = &config.strategy {
        step_log_vars(optimizer, config, &log_var_grads, &mut next);
    }
    next.step += 1;
    let grad_weights = grad_weights(config, values, &weights);
    Combined {
        total,
        grad_weights,
        weights,
        sign,
        log_var_grads,
        next,
    }
}

/// d total / d L_k (before flooding): the weights, except that with `ema_reweight` and
/// `detach_theta = false` θ_{t+1} = α·L_m/D + (1 − α)·θ_t (D = L_m + λ·L_a) depends on the step's
/// values: d/dL_m = 1 + α·λ·L_a²/D², d/dL_a = θ_{t+1} − α·λ·L_m·L_a/D² (0 extra when D = 0,
/// where θ̃ = θ_t).
fn grad_weights(config: &LossConfig, values: &[f64], weights: &[f64]) -> Vec<f64> {
    let mut g = weights.to_vec();
    let Strategy::EmaReweight(ema) = &config.strategy else {
        return g;
    };
    let index = |name: &str| config.losses.iter().position(|t| t.name == name);
    let (Some(m), Some(a)) = (index(&ema.main), index(&ema.aux)) else {
        return g;
    };
    let d = values[m] + ema.lambda * values[a];
    if ema.detach_theta || d == 0.0 {
        return g;
    }
    let c = ema.alpha * ema.lambda * values[a] / (d * d);
    g[m] += c * values[a];
    g[a] -= c * values[m];
    g
}

/// The optimiser step on the learned s_k with gradient `grads`: none, SGD (s −= lr·g) or Adam with
/// bias correction and one shared step count t (incremented once per step). Terms whose weight is
/// not learned keep s, m and v unchanged.
fn step_log_vars(
    optimizer: &Optimizer,
    config: &LossConfig,
    grads: &[f64],
    state: &mut ReferenceState,
) {
    let learned = config.losses.iter().map(|t| t.learn_loss_weight);
    match *optimizer {
        Optimizer::None => {}
        Optimizer::Sgd { learning_rate } => {
            for ((s, g), learn) in state.log_vars.iter_mut().zip(grads).zip(learned) {
                if learn {
                    *s -= learning_rate * g;
                }
            }
        }
        Optimizer::Adam {
            learning_rate,
            beta1,
            beta2,
            epsilon,
        } => {
            state.adam_t += 1;
            let t = state.adam_t;
            for (k, learn) in learned.enumerate() {
                if !learn {
                    continue;
                }
                let adam = (learning_rate, beta1, beta2, epsilon);
                let (m, v) = (&mut state.adam_m[k], &mut state.adam_v[k]);
                adam_step(adam, t, grads[k], &mut state.log_vars[k], m, v);
            }
        }
    }
}

/// One Adam update (Kingma & Ba 2015, bias-corrected) of parameter `p` with gradient `g` at step
/// `t` (≥ 1, already incremented): m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g²,
/// p ← p − lr·m̂/(√v̂ + ε) with m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t).
/// `adam` is (lr, β1, β2, ε).
fn adam_step(adam: (f64, f64, f64, f64), t: u64, g: f64, p: &mut f64, m: &mut f64, v: &mut f64) {
    let (learning_rate, beta1, beta2, epsilon) = adam;
    let t = t as f64;
    *m = beta1 * *m + (1.0 - beta1) * g;
    *v = beta2 * *v + (1.0 - beta2) * g * g;
    let m_hat = *m / (1.0 - beta1.powf(t));
    let v_hat = *v / (1.0 - beta2.powf(t));
    *p -= learning_rate * m_hat / (v_hat.sqrt() + epsilon);
}

/// The optimiser step on the learned (u1, u2) of one `jrc_loss` term with uncertainty weighting,
/// with gradient `grads` = d total/d(u1, u2): none (u unchanged), SGD (u −= lr·g) or Adam with the
/// term's own step count t (incremented once per step, before use).
pub(crate) fn step_jrc_u(optimizer: &Optimizer, grads: [f64; 2], state: &mut JrcState) {
    match *optimizer {
        Optimizer::None => {}
        Optimizer::Sgd { learning_rate } => {
            for (u, g) in state.u.iter_mut().zip(grads) {
                *u -= learning_rate * g;
            }
        }
        Optimizer::Adam {
            learning_rate,
            beta1,
            beta2,
            epsilon,
        } => {
            state.t += 1;
            let adam = (learning_rate, beta1, beta2, epsilon);
            for (k, g) in grads.into_iter().enumerate() {
                let (m, v) = (&mut state.m[k], &mut state.v[k]);
                adam_step(adam, state.t, g, &mut state.u[k], m, v);
            }
        }
    }
}

/// Multiplies each row's derivatives (`width` values per row) by its factor dL/dl_i.
pub(crate) fn scale_rows(mut grad: Vec<f64>, width: usize, reduced: &Reduced) -> Vec<f64> {
    if width > 0 {
        for (row, factor) in grad.chunks_mut(width).zip(&reduced.row_factor) {
            row.iter_mut().for_each(|g| *g *= factor);
        }
    }
    grad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ohem_k_is_rint_of_n_times_the_decimal_ratio() {
        let k = |n: u64, r: f64| keep_count(n, ratio_units(r));
        // EasyRec's example: 397 pairs at 0.5 keep 198 (round half to even).
        assert_eq!(k(397, 0.5), 198);
        assert_eq!(k(399, 0.5), 200);
        // Ties of the decimal 0.3 (the double below it would round down, f32 above it up).
        assert_eq!(k(5, 0.3), 2);
        assert_eq!(k(15, 0.3), 4);
        assert_eq!(k(45, 0.3), 14);
        // At least one, at most n.
        assert_eq!(k(1, 0.3), 1);
        assert_eq!(k(10, 1.0), 10);
        assert_eq!(k(u32::MAX as u64, 1.0), u32::MAX as u64);
        // Every n against rational arithmetic on the decimal p/q.
        for (p, q) in [
            (1u64, 2u64),
            (3, 10),
            (1, 4),
            (1, 8),
            (7, 10),
            (999, 1000),
            (1, 1000),
        ] {
            let r = p as f64 / q as f64;
            for n in 0..20_000u64 {
                let (whole, rem) = (n * p / q, n * p % q);
                let rounded = match (2 * rem).cmp(&q) {
                    std::cmp::Ordering::Greater => whole + 1,
                    std::cmp::Ordering::Equal => whole + whole % 2,
                    std::cmp::Ordering::Less => whole,
                };
                assert_eq!(k(n, r), rounded.clamp(1, n.max(1)), "n = {n}, r = {p}/{q}");
            }
        }
    }

    #[test]
    fn reductions_by_hand() {
        let w = [1.0, 0.0, 2.0, 0.5];
        let omega = [2.0, 0.0, 1.0, 1.0];
        let l = [1.0, 100.0, 3.0, 4.0];
        let num = 1.0 + 6.0 + 2.0;
        let r = reduce(Reduction::NonzeroMean, &w, &omega, &l);
        assert_eq!(r.value, num / 3.0);
        assert_eq!(r.row_factor, vec![1.0 / 3.0, 0.0, 2.0 / 3.0, 0.5 / 3.0]);
        assert_eq!(
            reduce(Reduction::WeightedMean, &w, &omega, &l).value,
            num / 4.0
        );
        assert_eq!(reduce(Reduction::Mean, &w, &omega, &l).value, num / 4.0);
        assert_eq!(reduce(Reduction::Sum, &w, &omega, &l).value, num);
        let zero = reduce(Reduction::NonzeroMean, &[0.0; 2], &[0.0; 2], &[1.0, 2.0]);
        assert_eq!(zero.value, 0.0);
        assert_eq!(zero.row_factor, vec![0.0, 0.0]);
        assert_eq!(
            reduce(Reduction::WeightedMean, &[0.0; 2], &[0.0; 2], &[1.0, 2.0]).value,
            0.0
        );
        assert_eq!(reduce(Reduction::Mean, &[], &[], &[]).value, 0.0);
    }

    #[test]
    fn counted_rows_only() {
        let w = [1.0, 0.0, 2.0, 0.5];
        let l = [1.0, 100.0, 3.0, 4.0];
        let counted = [true, true, false, true];
        // Row 2 is in nothing: Σ w·l = 1 + 0 + 2 = 3 over 3 counted rows, 2 of them non-zero.
        let r = reduce_counted(Reduction::NonzeroMean, &w, &l, &counted);
        assert_eq!(r.value, 1.5);
        assert_eq!(r.row_factor, vec![0.5, 0.0, 0.0, 0.25]);
        assert_eq!(reduce_counted(Reduction::Mean, &w, &l, &counted).value, 1.0);
        assert_eq!(
            reduce_counted(Reduction::WeightedMean, &w, &l, &counted).value,
            2.0
        );
        assert_eq!(reduce_counted(Reduction::Sum, &w, &l, &counted).value, 3.0);
        let none = reduce_counted(Reduction::Mean, &w, &l, &[false; 4]);
        assert_eq!((none.value, none.row_factor), (0.0, vec![0.0; 4]));
    }

    #[test]
    fn ohem_keeps_the_largest_and_breaks_ties_by_index() {
        let w = [1.0; 6];
        // B·r = 6·0.5 = 3 rows: 5, then the tie at 3 between rows 1, 3 and 4 keeps 1 and 3.
        let l = [1.0, 3.0, 5.0, 3.0, 3.0, 0.5];
        let r = ohem(0.5, &w, &l);
        assert_eq!(r.value, 11.0 / 3.0);
        assert_eq!(
            r.row_factor,
            vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]
        );
        // Kept values ≤ 0 are dropped from the mean; k is at least 1.
        let r = ohem(0.5, &[1.0, 0.0, 1.0, 1.0], &[2.0, 9.0, 0.0, 0.0]);
        assert_eq!(r.value, 2.0);
        assert_eq!(r.row_factor, vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            ohem(0.01, &[2.0, 1.0], &[1.0, 3.0]).row_factor,
            vec![0.0, 1.0]
        );
        assert_eq!(ohem(0.5, &[0.0; 3], &[1.0; 3]).value, 0.0);
        assert_eq!(ohem(0.5, &[], &[]).value, 0.0);
        // rint(2.5) = 2 (half to even, EasyRec's tf.math.rint): the mean of 5 and 4.
        let r = ohem(0.5, &[1.0; 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(r.value, 4.5);
    }
}

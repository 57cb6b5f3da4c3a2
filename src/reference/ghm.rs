//! GHM-C in f64 (docs/LOSSES.md, "Gradient-density terms"; Li et al. AAAI 2019, mmdetection `GHMC`).
//!
//! g_i = |σ(x_i) − y_i| is binned into `bins` equal bins (last edge 1 + 1e-6); the valid rows
//! (w_i > 0) of each bin are counted; β_k = tot / n_k (or tot / acc_k with momentum, acc being
//! the EMA of the counts kept across steps) divided by the number of non-empty bins; the loss is
//! Σ_i β_{bin(i)}·w_i·CE(x_i, y_i) / tot with tot = max(#valid, 1). The weights β are detached:
//! the gradient of row i is β_{bin(i)}·w_i·(σ(x_i) − y_i) / tot. Rows that are not valid get
//! β = 0 (mmdetection leaves their weight at zero).

use super::binary::{sigmoid, softplus};

/// The bin of a gradient norm g ∈ [0, 1]: the k with k/bins ≤ g < (k + 1)/bins, the last bin
/// closed at 1 + 1e-6 (so g = 1 falls in it).
pub(crate) fn bin(g: f64, bins: u32) -> usize {
    let b = bins as f64;
    let mut k = ((g * b).floor().max(0.0) as usize).min(bins as usize - 1);
    // The edges are k / bins; the product above can round across one.
    while k > 0 && g < k as f64 / b {
        k -= 1;
    }
    while k + 1 < bins as usize && g >= (k + 1) as f64 / b {
        k += 1;
    }
    k
}

/// One GHM-C evaluation: the term value, dL/dx per row, and the accumulators after this step.
pub(crate) struct Ghm {
    pub value: f64,
    pub grad: Vec<f64>,
    pub acc: Vec<f64>,
}

/// GHM-C of logits `x` and labels `y` with sample weights `w`; `acc` are the momentum
/// accumulators before the step (one per bin, starting at 0).
pub(crate) fn ghm_c(x: &[f64], y: &[f64], w: &[f64], bins: u32, momentum: f64, acc: &[f64]) -> Ghm {
    let n = bins as usize;
    let rows: Vec<Option<usize>> = x
        .iter()
        .zip(y)
        .zip(w)
        .map(|((&xi, &yi), &wi)| (wi > 0.0).then(|| bin((sigmoid(xi) - yi).abs(), bins)))
        .collect();
    let mut counts = vec![0u64; n];
    for k in rows.iter().flatten() {
        counts[*k] += 1;
    }
    let valid: u64 = counts.iter().sum();
    let tot = valid.max(1) as f64;
    let nonempty = counts.iter().filter(|&&c| c > 0).count() as f64;
    let mut next = acc.to_vec();
    let mut beta = vec![0.0; n];
    for k in 0..n {
        if counts[k] == 0 {
            continue;
        }
        let c = counts[k] as f64;
        beta[k] = if momentum > 0.0 {
            next[k] = momentum * acc[k] + (1.0 - momentum) * c;
            tot / next[k]
        } else {
            tot / c
        } / nonempty;
    }
    let mut value = 0.0;
    let mut grad = vec![0.0; x.len()];
    for (i, k) in rows.iter().enumerate() {
        let Some(k) = k else { continue };
        let factor = beta[*k] * w[i] / tot;
        value += factor * (softplus(x[i]) - x[i] * y[i]);
        grad[i] = factor * (sigmoid(x[i]) - y[i]);
    }
    Ghm {
        value,
        grad,
        acc: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_the_edges() {
        assert_eq!(bin(0.0, 10), 0);
        assert_eq!(bin(0.1, 10), 1);
        assert_eq!(bin(0.0999999, 10), 0);
        assert_eq!(bin(0.3, 10), 3);
        assert_eq!(bin(1.0, 10), 9);
        assert_eq!(bin(0.7, 1), 0);
        assert_eq!(bin(1.0, 1), 0);
    }

    #[test]
    fn weights_by_hand() {
        // Two rows in bin 0 (g small), one in bin 9, one invalid (w = 0).
        let x = [-5.0, -6.0, -5.0, 3.0];
        let y = [0.0, 0.0, 1.0, 0.0];
        let w = [1.0, 1.0, 2.0, 0.0];
        let r = ghm_c(&x, &y, &w, 10, 0.0, &[0.0; 10]);
        // tot = 3, two non-empty bins: β_0 = 3/2/2, β_9 = 3/1/2.
        let ce = |x: f64, y: f64| softplus(x) - x * y;
        let want = (0.75 * (ce(-5.0, 0.0) + ce(-6.0, 0.0)) + 1.5 * 2.0 * ce(-5.0, 1.0)) / 3.0;
        assert!((r.value - want).abs() < 1e-12, "{} vs {want}", r.value);
        assert_eq!(r.grad[3], 0.0);
        assert!((r.grad[2] - 1.5 * 2.0 * (sigmoid(-5.0) - 1.0) / 3.0).abs() < 1e-12);
        // Momentum: acc starts at 0, so the first step gives acc = (1 − m)·n.
        let m = ghm_c(&x, &y, &w, 10, 0.75, &[0.0; 10]);
        assert_eq!(m.acc[0], 0.5);
        assert_eq!(m.acc[9], 0.25);
        assert_eq!(m.acc[5], 0.0);
        // No valid row: zero loss, zero gradient.
        let z = ghm_c(&x, &y, &[0.0; 4], 10, 0.0, &[0.0; 10]);
        assert_eq!(z.value, 0.0);
        assert!(z.grad.iter().all(|&g| g == 0.0));
    }
}

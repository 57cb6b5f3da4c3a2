//! Per-row binary losses in f64 (docs/LOSSES.md, "Per-row terms", "Binary focal" and "Combining terms"
//! for ESMM): each function returns the row's loss l_i and its derivative with respect to the
//! differentiable input, written analytically from the formulas. Reduction over rows happens in
//! [`super::combine`].

/// ε inside the logarithms of `cross_entropy_loss` and ESMM.
pub(crate) const PROB_EPS: f64 = 1e-7;

/// The clip of the focal loss: p = clip(σ(x), FOCAL_CLIP, 1 − FOCAL_CLIP).
pub(crate) const FOCAL_CLIP: f64 = 1e-7;

/// σ(x), through exp(−|x|) so that it never overflows.
pub(crate) fn sigmoid(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// softplus(z) = max(z, 0) + ln(1 + exp(−|z|)) (docs/LOSSES.md, notation).
pub(crate) fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Binary label smoothing: y' = y(1 − ls) + 0.5·ls.
pub(crate) fn smooth(y: f64, label_smoothing: f64) -> f64 {
    y * (1.0 - label_smoothing) + 0.5 * label_smoothing
}

/// `classification` with one logit: sigmoid CE softplus(x) − x·y' with the smoothed label y', or
/// with `pos_weight` pw the PyTorch `BCEWithLogits` form (1 − y')x + (1 + (pw − 1)y')·softplus(−x).
/// Returns (l, dl/dx) with dl/dx = σ(x) − y', or σ(x)(1 + (pw − 1)y') − pw·y'.
pub(crate) fn sigmoid_ce(
    x: f64,
    y: f64,
    label_smoothing: f64,
    pos_weight: Option<f64>,
) -> (f64, f64) {
    let y = smooth(y, label_smoothing);
    let s = sigmoid(x);
    match pos_weight {
        None => (softplus(x) - x * y, s - y),
        Some(pw) => {
            let scale = 1.0 + (pw - 1.0) * y;
            ((1.0 - y) * x + scale * softplus(-x), s * scale - pw * y)
        }
    }
}

/// `l2_loss`: (x − y)², derivative 2(x − y).
pub(crate) fn l2(x: f64, y: f64) -> (f64, f64) {
    let d = x - y;
    (d * d, 2.0 * d)
}

/// `sigmoid_l2_loss`: (σ(x) − y)², derivative 2(σ(x) − y)σ(x)(1 − σ(x)).
pub(crate) fn sigmoid_l2(x: f64, y: f64) -> (f64, f64) {
    let s = sigmoid(x);
    let d = s - y;
    (d * d, 2.0 * d * s * sigmoid(-x))
}

/// Binary CE on a probability: ce(p, y) = −y·ln(p + 1e-7) − (1 − y)·ln(1 − p + 1e-7), and
/// dce/dp = −y/(p + 1e-7) + (1 − y)/(1 − p + 1e-7). This is `cross_entropy_loss`, and the two
/// halves of ESMM.
pub(crate) fn prob_ce(p: f64, y: f64) -> (f64, f64) {
    let loss = -y * (p + PROB_EPS).ln() - (1.0 - y) * (1.0 - p + PROB_EPS).ln();
    let grad = -y / (p + PROB_EPS) + (1.0 - y) / (1.0 - p + PROB_EPS);
    (loss, grad)
}

/// Parameters of `binary_focal_loss` used per row (OHEM is a reduction, see [`super::combine`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Focal {
    /// Focusing parameter γ ≥ 0.
    pub gamma: f64,
    /// Class balance α; `None` gives α_t = 1.
    pub alpha: Option<f64>,
    /// Binary label smoothing, applied to the CE label only.
    pub label_smoothing: f64,
}

/// `binary_focal_loss` for one row (docs/LOSSES.md, "Binary focal"): l = W'·CE with
/// CE = softplus(x) − x·y' (smoothed label), W' = (1 − p_t)^γ·α_t, p = clip(σ(x), 1e-7, 1 − 1e-7),
/// p_t = y·p + (1 − y)(1 − p) with the unsmoothed y, α_t = α·y + (1 − α)(1 − y) (1 without α).
/// The modulator is not detached: dl/dx = dW'/dx·CE + W'·(σ(x) − y'), where dp/dx = σ(1 − σ)
/// strictly inside the clip and 0 where clipped.
pub(crate) fn focal(x: f64, y: f64, f: &Focal) -> (f64, f64) {
    let s = sigmoid(x);
    let (p, dp) = if s <= FOCAL_CLIP {
        (FOCAL_CLIP, 0.0)
    } else if s >= 1.0 - FOCAL_CLIP {
        (1.0 - FOCAL_CLIP, 0.0)
    } else {
        (s, s * sigmoid(-x))
    };
    let p_t = y * p + (1.0 - y) * (1.0 - p);
    let dp_t = (2.0 * y - 1.0) * dp;
    let alpha_t = f.alpha.map_or(1.0, |a| a * y + (1.0 - a) * (1.0 - y));
    let q = 1.0 - p_t; // ≥ 1e-7 thanks to the clip
    let modulator = q.powf(f.gamma) * alpha_t;
    let d_modulator = if f.gamma == 0.0 {
        0.0
    } else {
        -alpha_t * f.gamma * q.powf(f.gamma - 1.0) * dp_t
    };
    let y_s = smooth(y, f.label_smoothing);
    let ce = softplus(x) - x * y_s;
    (modulator * ce, d_modulator * ce + modulator * (s - y_s))
}

/// ESMM for one row (docs/LOSSES.md, "Combining terms"): with ctr = σ(a) and ctcvr = σ(a)σ(b),
/// l = ce(ctr, click) + ce(ctcvr, buy) ([`prob_ce`]). Returns (l, dl/da, dl/db) by the chain rule:
/// dl/da = (ce'(ctr) + ce'(ctcvr)·σ(b))·σ(a)(1 − σ(a)), dl/db = ce'(ctcvr)·σ(a)·σ(b)(1 − σ(b)).
pub(crate) fn esmm(a: f64, b: f64, click: f64, buy: f64) -> (f64, f64, f64) {
    let (pa, pb) = (sigmoid(a), sigmoid(b));
    let (l_ctr, g_ctr) = prob_ce(pa, click);
    let (l_ctcvr, g_ctcvr) = prob_ce(pa * pb, buy);
    let da = (g_ctr + g_ctcvr * pb) * pa * sigmoid(-a);
    let db = g_ctcvr * pa * pb * sigmoid(-b);
    (l_ctr + l_ctcvr, da, db)
}

/// `order_calibrate_loss` for one row (docs/LOSSES.md, "order_calibrate_loss"; AITM, Xi et al.
/// KDD 2021; EasyRec `ORDER_CALIBRATE_LOSS`: `relu(y_t − y_rt)` on the two towers'
/// probabilities): l = max(0, σ(x) − σ(xr)). Returns (l, dl/dx, dl/dxr) = (l, σ'(x), −σ'(xr))
/// where σ(x) > σ(xr) and zeros elsewhere (TensorFlow's relu gradient is 0 at 0).
pub(crate) fn order_calibrate(x: f64, xr: f64) -> (f64, f64, f64) {
    let (p, pr) = (sigmoid(x), sigmoid(xr));
    if p > pr {
        (p - pr, p * sigmoid(-x), -pr * sigmoid(-xr))
    } else {
        (0.0, 0.0, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_calibrate_hand_values() {
        // σ(1) − σ(0) > 0: the loss and both derivatives.
        let (l, dx, dr) = order_calibrate(1.0, 0.0);
        assert!(close(l, sigmoid(1.0) - 0.5, 1e-15));
        assert!(close(dx, sigmoid(1.0) * sigmoid(-1.0), 1e-15));
        assert!(close(dr, -0.25, 1e-15));
        // The tower below its relation, or equal to it: nothing.
        assert_eq!(order_calibrate(-1.0, 2.0), (0.0, 0.0, 0.0));
        assert_eq!(order_calibrate(0.3, 0.3), (0.0, 0.0, 0.0));
        // Central differences where the relu is open.
        for &(x, xr) in &[(0.7, -0.4), (3.0, 2.5), (-1.0, -2.0)] {
            let h = 1e-6;
            let (_, dx, dr) = order_calibrate(x, xr);
            let fx = (order_calibrate(x + h, xr).0 - order_calibrate(x - h, xr).0) / (2.0 * h);
            let fr = (order_calibrate(x, xr + h).0 - order_calibrate(x, xr - h).0) / (2.0 * h);
            assert!(close(dx, fx, 1e-8) && close(dr, fr, 1e-8), "{x} {xr}");
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn stable_primitives() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(close(sigmoid(-800.0), 0.0, 1e-300));
        assert_eq!(sigmoid(800.0), 1.0);
        assert!(close(softplus(0.0), std::f64::consts::LN_2, 1e-15));
        assert_eq!(softplus(800.0), 800.0);
        assert!(softplus(-800.0) >= 0.0 && softplus(-800.0) < 1e-300);
    }

    #[test]
    fn sigmoid_ce_hand_values() {
        // x = 0, y = 1: ln 2; gradient −1/2.
        let (l, g) = sigmoid_ce(0.0, 1.0, 0.0, None);
        assert!(close(l, std::f64::consts::LN_2, 1e-15) && close(g, -0.5, 1e-15));
        // Smoothing 0.2 turns y = 1 into 0.9: softplus(2) − 1.8.
        let (l, g) = sigmoid_ce(2.0, 1.0, 0.2, None);
        assert!(close(l, (1.0 + 2f64.exp()).ln() - 1.8, 1e-14), "{l}");
        assert!(close(g, sigmoid(2.0) - 0.9, 1e-14));
        // PyTorch BCEWithLogits(pos_weight = 3) at x = 0.5, y = 1: 3·ln(1 + e^−0.5).
        let (l, _) = sigmoid_ce(0.5, 1.0, 0.0, Some(3.0));
        assert!(close(l, 3.0 * (1.0 + (-0.5f64).exp()).ln(), 1e-14), "{l}");
        // pos_weight = 1 is the plain form.
        let (a, ga) = sigmoid_ce(-1.3, 0.3, 0.1, Some(1.0));
        let (b, gb) = sigmoid_ce(-1.3, 0.3, 0.1, None);
        assert!(close(a, b, 1e-14) && close(ga, gb, 1e-14));
    }

    /// torchvision `sigmoid_focal_loss` closed form: dl/dx = s·α_t·(1 − p_t)^γ·(γ·p_t·ln p_t −
    /// (1 − p_t)), s = 2y − 1, without smoothing and away from the clip.
    #[test]
    fn focal_matches_the_closed_form() {
        for &gamma in &[0.0, 1.0, 2.0, 2.5] {
            for &alpha in &[None, Some(0.25)] {
                for &y in &[0.0, 1.0] {
                    for &x in &[-4.0, -0.7, 0.0, 0.3, 3.1] {
                        let f = Focal {
                            gamma,
                            alpha,
                            label_smoothing: 0.0,
                        };
                        let (l, g) = focal(x, y, &f);
                        let p = sigmoid(x);
                        let p_t = y * p + (1.0 - y) * (1.0 - p);
                        let alpha_t = alpha.map_or(1.0, |a| a * y + (1.0 - a) * (1.0 - y));
                        let want_l = -alpha_t * (1.0 - p_t).powf(gamma) * p_t.ln();
                        let want_g = (2.0 * y - 1.0)
                            * alpha_t
                            * (1.0 - p_t).powf(gamma)
                            * (gamma * p_t * p_t.ln() - (1.0 - p_t));
                        assert!(
                            close(l, want_l, 1e-12),
                            "l {l} vs {want_l} at {x} {y} {gamma}"
                        );
                        assert!(
                            close(g, want_g, 1e-12),
                            "g {g} vs {want_g} at {x} {y} {gamma}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn focal_is_flat_in_the_modulator_where_clipped() {
        let f = Focal {
            gamma: 2.0,
            alpha: None,
            label_smoothing: 0.0,
        };
        // σ(40) rounds above 1 − 1e-7: p is clipped, only W'·(σ − y) remains.
        let (l, g) = focal(40.0, 0.0, &f);
        let w = (1.0 - FOCAL_CLIP).powi(2);
        assert!(close(l, w * 40.0, 1e-12), "{l}");
        assert!(close(g, w * sigmoid(40.0), 1e-12), "{g}");
    }

    #[test]
    fn esmm_hand_value() {
        // a = b = 0: ctr = 0.5, ctcvr = 0.25; click = 1, buy = 0.
        let (l, _, _) = esmm(0.0, 0.0, 1.0, 0.0);
        let want = -(0.5 + PROB_EPS).ln() - (0.75 + PROB_EPS).ln();
        assert!(close(l, want, 1e-14), "{l} vs {want}");
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64, x: f64| (f(x + h) - f(x - h)) / (2.0 * h);
        for &x in &[-2.3, -0.4, 0.0, 0.9, 2.7] {
            for &y in &[0.0, 0.35, 1.0] {
                let checks: Vec<(f64, f64)> = vec![
                    (
                        sigmoid_ce(x, y, 0.1, None).1,
                        fd(&|x| sigmoid_ce(x, y, 0.1, None).0, x),
                    ),
                    (
                        sigmoid_ce(x, y, 0.1, Some(2.5)).1,
                        fd(&|x| sigmoid_ce(x, y, 0.1, Some(2.5)).0, x),
                    ),
                    (l2(x, y).1, fd(&|x| l2(x, y).0, x)),
                    (sigmoid_l2(x, y).1, fd(&|x| sigmoid_l2(x, y).0, x)),
                    (
                        prob_ce(sigmoid(x), y).1,
                        fd(&|x| prob_ce(x, y).0, sigmoid(x)),
                    ),
                    (esmm(x, 0.3, y, 0.2).1, fd(&|a| esmm(a, 0.3, y, 0.2).0, x)),
                    (esmm(0.3, x, y, 0.2).2, fd(&|b| esmm(0.3, b, y, 0.2).0, x)),
                ];
                for (i, (analytic, numeric)) in checks.into_iter().enumerate() {
                    assert!(
                        (analytic - numeric).abs() < 1e-7 * (1.0 + numeric.abs()),
                        "check {i} at x = {x}, y = {y}: {analytic} vs {numeric}"
                    );
                }
            }
        }
    }
}

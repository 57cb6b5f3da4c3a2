// Per-row binary and regression losses (docs/LOSSES.md, "Per-row terms"). Each returns
// vec2(loss, dloss/dinput) for one row (vec3 with two differentiable inputs); the fused row
// kernel (src/losses/rows/) calls them for every term that reads the row, so the inputs are read
// once for all terms.

//#import common.wgsl

// Rows each invocation of a row group's forward and statistics passes sums before the workgroup
// reduction (`ROWS_PER_INVOCATION` in src/losses/rows/kernel.rs).
const ROWS_PER_INVOCATION: u32 = 8u;

// Sigmoid CE with a (possibly smoothed) label y: softplus(x) - x*y, written as
// y*softplus(-x) + (1-y)*softplus(x) so that neither tail cancels.
fn sigmoid_ce(x: f32, y: f32) -> vec2<f32> {
    let loss = y * softplus(-x) + (1.0 - y) * softplus(x);
    let grad = (1.0 - y) * sigmoid(x) - y * sigmoid(-x);
    return vec2<f32>(loss, grad);
}

// PyTorch BCEWithLogits with pos_weight: (1-y)x + (1+(pw-1)y)softplus(-x)
// = (1-y)softplus(x) + pw*y*softplus(-x).
fn sigmoid_ce_pos_weight(x: f32, y: f32, pw: f32) -> vec2<f32> {
    let loss = (1.0 - y) * softplus(x) + pw * y * softplus(-x);
    let grad = (1.0 - y) * sigmoid(x) - pw * y * sigmoid(-x);
    return vec2<f32>(loss, grad);
}

fn l2(x: f32, y: f32) -> vec2<f32> {
    let d = x - y;
    return vec2<f32>(d * d, 2.0 * d);
}

fn sigmoid_l2(x: f32, y: f32) -> vec2<f32> {
    let s = sigmoid(x);
    let d = s - y;
    return vec2<f32>(d * d, 2.0 * d * s * sigmoid(-x));
}

const PROB_EPS: f32 = 1e-7;

// Binary CE on a probability p with complement q = 1 - p passed in (callers that know q more
// precisely than 1 - p, e.g. σ(-x), pass it). Returns (loss, dloss/dp).
fn prob_ce_q(p: f32, q: f32, y: f32) -> vec2<f32> {
    let loss = -y * log(p + PROB_EPS) - (1.0 - y) * log(q + PROB_EPS);
    let grad = -y / (p + PROB_EPS) + (1.0 - y) / (q + PROB_EPS);
    return vec2<f32>(loss, grad);
}

fn prob_ce(p: f32, y: f32) -> vec2<f32> {
    return prob_ce_q(p, 1.0 - p, y);
}

const FOCAL_CLIP: f32 = 1e-7;

// EasyRec BINARY_FOCAL_LOSS per row: modulator (1 - p_t)^γ · α_t times the sigmoid CE with the
// smoothed label ys; p_t uses the unsmoothed y and p = clip(σ(x), 1e-7, 1 - 1e-7). The modulator
// is not detached. alpha < 0 means "alpha unset".
fn focal(x: f32, y: f32, ys: f32, gamma: f32, alpha: f32) -> vec2<f32> {
    let s = sigmoid(x);
    let sn = sigmoid(-x);
    let p = clamp(s, FOCAL_CLIP, 1.0 - FOCAL_CLIP);
    let q = clamp(sn, FOCAL_CLIP, 1.0 - FOCAL_CLIP);
    let inside = s > FOCAL_CLIP && s < 1.0 - FOCAL_CLIP;
    // 1 - p_t = y(1 - p) + (1 - y)p, formed from q to keep the tail.
    let one_m_pt = y * q + (1.0 - y) * p;
    var alpha_t = 1.0;
    if (alpha >= 0.0) {
        alpha_t = alpha * y + (1.0 - alpha) * (1.0 - y);
    }
    let modulator = pow(one_m_pt, gamma) * alpha_t;
    let ce = sigmoid_ce(x, ys);
    var dmod = 0.0;
    if (gamma != 0.0 && inside) {
        // d(1 - p_t)/dx = (1 - 2y) · σ(x)σ(-x)
        dmod = alpha_t * gamma * pow(one_m_pt, gamma - 1.0) * (1.0 - 2.0 * y) * s * sn;
    }
    return vec2<f32>(modulator * ce.x, dmod * ce.x + modulator * ce.y);
}

// ESMM (Ma et al. SIGIR 2018): CE(σ(a), click) + CE(σ(a)σ(b), buy) on probabilities.
// Returns (loss, dloss/da, dloss/db).
fn esmm(a: f32, b: f32, click: f32, buy: f32) -> vec3<f32> {
    let sa = sigmoid(a);
    let sna = sigmoid(-a);
    let sb = sigmoid(b);
    let snb = sigmoid(-b);
    let ctr = prob_ce_q(sa, sna, click);
    // 1 - σ(a)σ(b) = σ(-a) + σ(a)σ(-b), exact in the tails.
    let ctcvr = prob_ce_q(sa * sb, sna + sa * snb, buy);
    let da = ctr.y * sa * sna + ctcvr.y * sb * sa * sna;
    let db = ctcvr.y * sa * sb * snb;
    return vec3<f32>(ctr.x + ctcvr.x, da, db);
}

// order_calibrate_loss (AITM, Xi et al. KDD 2021; EasyRec ORDER_CALIBRATE_LOSS): relu(σ(x) − σ(xr))
// for a tower x that should not exceed its relation tower xr. Returns (loss, dloss/dx,
// dloss/dxr): σ'(x) and −σ'(xr) where σ(x) > σ(xr), 0 elsewhere (relu's derivative at 0 is 0).
fn order_calibrate(x: f32, xr: f32) -> vec3<f32> {
    let p = sigmoid(x);
    let pr = sigmoid(xr);
    let d = p - pr;
    if d > 0.0 {
        return vec3<f32>(d, p * sigmoid(-x), -pr * sigmoid(-xr));
    }
    return vec3<f32>(0.0);
}

// ziln_loss (EasyRec ZILN_LOSS, zero_inflated_lognormal_loss; docs/LOSSES.md, "ziln_loss") for
// one row: its share of the term value and its gradient to the row's three logits, and its
// predicted mean (zero_inflated_lognormal_pred). x = (p logit, μ, σ logit), y ≥ 0 the amount;
// bw = (1/B, 1/(#positive + 1e-8)) from the statistics pass; c = (classification_weight,
// regression_weight, mu_regularization, sigma_regularization); clip = (sqrt(1e-7), max_sigma,
// max_log_clip_value).
struct ZilnRow {
    x: f32,        // the row's share of the value
    y: vec3<f32>,  // d value / d x
    p: f32,        // the prediction
}

const HALF_LN_2PI: f32 = 0.9189385332046727;

fn ziln(x: vec3<f32>, y: f32, bw: vec2<f32>, c: vec4<f32>, clip: vec3<f32>, return_log: bool) -> ZilnRow {
    let pos = y > 0.0;
    let ce = sigmoid_ce(x.x, select(0.0, 1.0, pos));
    let mu = x.y;
    // σ = clip(softplus(x₂)); like tf.clip_by_value the gradient passes inside [min, max] only.
    let s = softplus(x.z);
    let sig = clamp(s, clip.x, clip.y);
    let dsig = select(0.0, sigmoid(x.z), s >= clip.x && s <= clip.y);
    // A row with y = 0 reads the safe label 1 (as EasyRec) and is masked by r = 0.
    let ln_y = log(select(1.0, y, pos));
    let z = (ln_y - mu) / sig;
    let nll = 0.5 * z * z + log(sig) + HALF_LN_2PI + ln_y;
    let r = select(0.0, c.y * bw.y, pos);
    let loss = bw.x * (c.x * ce.x + c.z * mu * mu + c.w * x.z * x.z) + r * nll;
    let grad = vec3<f32>(
        bw.x * c.x * ce.y,
        bw.x * 2.0 * c.z * mu - r * z / sig,
        bw.x * 2.0 * c.w * x.z + r * (1.0 - z * z) / sig * dsig,
    );
    let log_pred = -softplus(-x.x) + mu + 0.5 * sig * sig;
    let pred = select(exp(clamp(log_pred, -100.0, clip.z)), log_pred, return_log);
    return ZilnRow(loss, grad, pred);
}

// Knowledge distillation on one logit per row (docs/LOSSES.md §10; EasyRec build_kd_loss,
// AutoFAS): student x, teacher y, both turned into logits and divided by T (inv_t = 1/T). Each
// returns (loss, dloss/dx); the teacher gets no gradient.
const KD_EPS: f32 = 1e-7;
const KD_LN_EPS: f32 = -16.11809565095832;

// EasyRec's logit of a probability: log(c/(1 − c)) with c = clip(p, 1e-7, 1 − 1e-7), formed from
// min(p, 1 − p) (exact in f32) so that the upper clip is as exact as the lower one. Returns
// (logit, dlogit/dp), the derivative 0 where the clip holds p (tf.clip_by_value's gradient).
fn kd_prob_logit(p: f32) -> vec2<f32> {
    let lower = p <= 0.5;
    let m = select(1.0 - p, p, lower);
    let c = clamp(m, KD_EPS, 0.5);
    let l = log(c) - log(1.0 - c);
    var d = 0.0;
    if (m >= KD_EPS) {
        d = 1.0 / (c * (1.0 - c));
    }
    return vec2<f32>(select(-l, l, lower), d);
}

// (s/T, d(s/T)/dx) with s = x for a logit, EasyRec's logit of x for a probability.
fn kd_input(x: f32, is_logit: bool, inv_t: f32) -> vec2<f32> {
    if (is_logit) {
        return vec2<f32>(x * inv_t, inv_t);
    }
    return kd_prob_logit(x) * inv_t;
}

// kl_divergence_loss: Keras' KLD on [1 − q, q] against [1 − p, p], both clipped to [1e-7, 1], in
// logs (log σ(z) = −softplus(−z)); the clip's gradient is 0 where it holds.
fn kd_kl(x: f32, y: f32, inv_t: f32, pred_logit: bool, label_logit: bool) -> vec2<f32> {
    let zs = kd_input(x, pred_logit, inv_t);
    let z = zs.x;
    let v = kd_input(y, label_logit, inv_t).x;
    let lp = -softplus(-z);
    let lpn = -softplus(z);
    let lq = max(-softplus(-v), KD_LN_EPS);
    let lqn = max(-softplus(v), KD_LN_EPS);
    let q = exp(lq);
    let qn = exp(lqn);
    let loss = q * (lq - max(lp, KD_LN_EPS)) + qn * (lqn - max(lpn, KD_LN_EPS));
    let g = select(0.0, -q * sigmoid(-z), lp >= KD_LN_EPS)
        + select(0.0, qn * sigmoid(z), lpn >= KD_LN_EPS);
    return vec2<f32>(loss, g * zs.y);
}

// binary_cross_entropy_loss with a teacher: BCE-with-logits of z against the target σ(v).
fn kd_bce(x: f32, y: f32, inv_t: f32, pred_logit: bool, label_logit: bool) -> vec2<f32> {
    let zs = kd_input(x, pred_logit, inv_t);
    let z = zs.x;
    let v = kd_input(y, label_logit, inv_t).x;
    let q = sigmoid(v);
    let qn = sigmoid(-v);
    let loss = q * softplus(-z) + qn * softplus(z);
    let g = qn * sigmoid(z) - q * sigmoid(-z);
    return vec2<f32>(loss, g * zs.y);
}

// l2_distill_loss (AutoFAS): ‖[1 − q, q] − [1 − p, p]‖² = 2(q − p)².
fn l2_distill(x: f32, y: f32, inv_t: f32) -> vec2<f32> {
    let z = x * inv_t;
    let p = sigmoid(z);
    let d = sigmoid(y * inv_t) - p;
    return vec2<f32>(2.0 * d * d, -4.0 * d * p * sigmoid(-z) * inv_t);
}

// The combine pass: `combine` (one workgroup) reduces per-term partial sums -> term values; the weighting strategy
// (docs/LOSSES.md, "Combining terms"); flooding; the gradient coefficient of every term; learned-weight
// gradients and their optimiser step; state updates. Everything the host would otherwise have to
// read back stays here, so a step is one submission.

//#import common.wgsl

struct Settings {
    term_count: u32,
    strategy: u32,      // 0 fixed, 1 uncertainty, 2 random, 3 ema_reweight
    optimizer: u32,     // 0 none, 1 sgd, 2 adam
    seed: u32,
    flooding: u32,      // 1 when a flood level is set
    flood_level: f32,
    learning_rate: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    ema_main: u32,
    ema_aux: u32,
    ema_alpha: f32,
    ema_lambda: f32,
    commit_src: u32,    // words of `aux` (this step's GHM-C accumulators) ...
    commit_dst: u32,    // ... copied onto `state` from here when the step succeeds
    commit_count: u32,
    finite_base: u32,   // words of `aux` the GPU value checks flag (first bad element) ...
    finite_count: u32,  // ... one per check; read and cleared by `weigh`
    ema_detach: u32,    // 1 when EMA's θ̃ is detached (detach_theta)
}

struct TermInfo {
    partial_base: u32,
    partial_count: u32,
    reduction: u32,     // 0 nonzero_mean, 1 weighted_mean, 2 mean, 3 sum
    learn: u32,         // 1 when the uncertainty strategy learns this weight
    rows: f32,          // B, the denominator of `mean`
    weight: f32,        // fixed weight
    half: f32,          // c_k of the uncertainty form: 0.5 for regression terms, else 1
    static_denom: f32,  // the reduction's denominator when it does not depend on the data, else 0
    kind: u32,          // KIND_ROWS, KIND_PAIRS, KIND_JRC or KIND_LISTWISE
    ge_partial_base: u32, // JRC: the listwise part's partials (as many as the CE's); listwise: (Σ g·x, Σ g)
    alpha: f32,         // JRC fixed: α·ce + (1 − α)·ge
    jrc_learn: u32,     // JRC: 1 for the learned form e^{−u1}·ce + u1/2 + e^{−u2}·ge + u2/2; listwise: scale_logits
    jrc_state: u32,     // JRC: first state word of u1, m1, v1, u2, m2, v2, Adam step (listwise: w, m, v, b, m, v, step)
    optimizer: u32,     // JRC's optimiser of u: 0 none, 1 sgd, 2 adam
    learning_rate: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    temperature: f32,   // listwise: T (d total/d(w, b) divides by it)
    _pad1: u32,
}

// Layout of `scalars` (f32) and `state` (u32 words, f32 ones bitcast); mirrored in src/combine.rs.
const S_TOTAL: u32 = 0u;
const S_RAW_TOTAL: u32 = 1u;
const S_SIGN: u32 = 2u;
const S_TERM_BASE: u32 = 8u;
const S_TERM_STRIDE: u32 = 16u;
const T_VALUE: u32 = 0u;
const T_WEIGHT: u32 = 1u;
const T_COEF: u32 = 2u;
const T_DENOM: u32 = 3u;
const T_LOG_VAR_GRAD: u32 = 4u;
const T_NUMERATOR: u32 = 5u;
const T_INVALID: u32 = 6u;
const T_LOG_VAR: u32 = 7u;
const T_COEF2: u32 = 8u;        // JRC: coefficient of the listwise gradient
const T_CE: u32 = 9u;
const T_GE: u32 = 10u;
const T_U1: u32 = 11u;
const T_U2: u32 = 12u;
const T_DU1: u32 = 13u;
const T_DU2: u32 = 14u;

const KIND_ROWS: u32 = 0u;      // partials (Σ f·l, Σ f, #{f ≠ 0}, invalid rows)
const KIND_PAIRS: u32 = 1u;     // partials (Σ w·l, Σ w, #{w ≠ 0}, #pairs) over pairs
const KIND_JRC: u32 = 2u;       // CE partials as rows, listwise ones from ge_partial_base
const KIND_LISTWISE: u32 = 3u;  // (Σ l_S, N, N, 0); with scale_logits (Σ g·x, Σ g) from ge_partial_base

const ST_STEP: u32 = 0u;
const ST_ADAM_T: u32 = 1u;
const ST_THETA: u32 = 2u;
const ST_TERM_BASE: u32 = 4u;
const ST_TERM_STRIDE: u32 = 3u;  // s, adam m, adam v

// Storage, not uniform: see `Chunk` in common.wgsl (lavapipe's uniform inlining).
@group(0) @binding(0) var<storage, read> settings: Settings;
@group(0) @binding(1) var<storage, read> terms: array<TermInfo>;
@group(0) @binding(2) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<u32>;
@group(0) @binding(5) var<storage, read_write> aux: array<u32>;

fn term_slot(k: u32, field: u32) -> u32 {
    return S_TERM_BASE + k * S_TERM_STRIDE + field;
}

fn state_f32(i: u32) -> f32 {
    return bitcast<f32>(state[i]);
}

fn set_state_f32(i: u32, x: f32) {
    state[i] = bitcast<u32>(x);
}


fn rlw_uniform(seed: u32, step: u32, k: u32, j: u32) -> f32 {
    let h = pcg_hash(pcg_hash(pcg_hash(seed) ^ step) ^ (2u * k + j));
    return (f32(h >> 8u) + 0.5) / 16777216.0;
}

fn rlw_normal(seed: u32, step: u32, k: u32) -> f32 {
    let u1 = rlw_uniform(seed, step, k, 0u);
    let u2 = rlw_uniform(seed, step, k, 1u);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// RLW normaliser of this step's normals: (max, Σ exp(normal - max)).
fn rlw_norm(step: u32) -> vec2<f32> {
    var norm = vec2<f32>(NEG_BIG, 0.0);
    if (settings.strategy == 2u) {
        for (var k = 0u; k < settings.term_count; k = k + 1u) {
            norm.x = max(norm.x, rlw_normal(settings.seed, step, k));
        }
        for (var k = 0u; k < settings.term_count; k = k + 1u) {
            norm.y = norm.y + exp(rlw_normal(settings.seed, step, k) - norm.x);
        }
    }
    return norm;
}

// d total / d L_k before flooding: the term's weight, except with ema_reweight's
// detach_theta = false, where θ_{t+1} = α·L_main/D + (1 − α)·θ_t (D = L_main + λ·L_aux) depends
// on this step's values: d/dL_main = 1 + α·λ·L_aux²/D², d/dL_aux = θ_{t+1} − α·λ·L_main·L_aux/D²
// (docs/LOSSES.md §8.4; θ̃ = θ_t, a constant, when D = 0).
fn grad_weight(k: u32, weight: f32) -> f32 {
    if (settings.strategy != 3u || settings.ema_detach == 1u) {
        return weight;
    }
    let lm = scalars[term_slot(settings.ema_main, T_VALUE)];
    let la = scalars[term_slot(settings.ema_aux, T_VALUE)];
    let d = lm + settings.ema_lambda * la;
    if (d == 0.0) {
        return weight;
    }
    let c = settings.ema_alpha * settings.ema_lambda * la / (d * d);
    if (k == settings.ema_main) {
        return weight + c * la;
    }
    if (k == settings.ema_aux) {
        return weight - c * lm;
    }
    return weight;
}

// Term k's weight as far as the state decides it: fixed, learned (from s), random, EMA's main.
// EMA's auxiliary weight comes from this step's values and is set by `weigh`.
fn state_weight(k: u32, step: u32, norm: vec2<f32>) -> f32 {
    let t = terms[k];
    if (settings.strategy == 1u && t.learn == 1u) {
        return t.half * exp(-state_f32(ST_TERM_BASE + k * ST_TERM_STRIDE));
    }
    if (settings.strategy == 2u) {
        return exp(rlw_normal(settings.seed, step, k) - norm.x) / norm.y;
    }
    if (settings.strategy == 3u && k == settings.ema_main) {
        return 1.0;
    }
    return t.weight;
}

// Whether a term has partials in a second slot (JRC's listwise part, a listwise term's Σ g·x, Σ g).
fn has_second_part(t: TermInfo) -> bool {
    return t.kind == KIND_JRC || (t.kind == KIND_LISTWISE && t.jrc_learn == 1u);
}

@compute @workgroup_size(256)
fn combine(@builtin(local_invocation_index) lid: u32) {
    // 1. Term values: each term's partials summed in a fixed order (JRC: both parts).
    for (var k = 0u; k < settings.term_count; k = k + 1u) {
        let t = terms[k];
        var acc = vec4<f32>(0.0);
        var ge_acc = vec4<f32>(0.0);
        for (var i = lid; i < t.partial_count; i = i + WG) {
            acc = acc + partials[t.partial_base + i];
            if (has_second_part(t)) {
                ge_acc = ge_acc + partials[t.ge_partial_base + i];
            }
        }
        let sum = workgroup_sum(lid, acc);
        let ge_sum = workgroup_sum(lid, ge_acc);
        if (lid == 0u) {
            var denom = 1.0;
            if (t.static_denom != 0.0) {
                denom = t.static_denom;
            } else if (t.reduction == 0u) {
                denom = sum.z;
            } else if (t.reduction == 1u) {
                denom = sum.y;
            } else if (t.reduction == 2u) {
                denom = select(t.rows, sum.w, t.kind == KIND_PAIRS);
            }
            var value = 0.0;
            if (denom != 0.0) {
                value = sum.x / denom;
            }
            if (t.kind == KIND_JRC) {
                let ce = value;
                let ge = ge_sum.x / t.rows;
                scalars[term_slot(k, T_CE)] = ce;
                scalars[term_slot(k, T_GE)] = ge;
                if (t.jrc_learn == 1u) {
                    let u1 = state_f32(t.jrc_state);
                    let u2 = state_f32(t.jrc_state + 3u);
                    value = exp(-u1) * ce + 0.5 * u1 + exp(-u2) * ge + 0.5 * u2;
                    scalars[term_slot(k, T_U1)] = u1;
                    scalars[term_slot(k, T_U2)] = u2;
                } else {
                    value = t.alpha * ce + (1.0 - t.alpha) * ge;
                }
            }
            if (t.kind == KIND_LISTWISE && t.jrc_learn == 1u) {
                // The learned (w, b) this step used, and Σ g·x, Σ g for d total/d(w, b).
                scalars[term_slot(k, T_U1)] = state_f32(t.jrc_state);
                scalars[term_slot(k, T_U2)] = state_f32(t.jrc_state + 3u);
                scalars[term_slot(k, T_CE)] = ge_sum.x;
                scalars[term_slot(k, T_GE)] = ge_sum.y;
            }
            scalars[term_slot(k, T_VALUE)] = value;
            scalars[term_slot(k, T_DENOM)] = denom;
            scalars[term_slot(k, T_NUMERATOR)] = sum.x;
            scalars[term_slot(k, T_INVALID)] = select(0.0, sum.w, t.kind == KIND_ROWS);
        }
    }
    // Every entry point binds the same buffers, so one bind group layout serves them.
    _ = state[0];
    _ = aux[0];
}

// One optimiser step on the learned parameter at state word `at` (m, v at the next two words):
// sgd or bias-corrected Adam at step `t`.
fn optimise(at: u32, g: f32, optimizer: u32, lr: f32, beta1: f32, beta2: f32, epsilon: f32, t: u32) {
    var s = state_f32(at);
    if (optimizer == 1u) {
        s = s - lr * g;
    } else {
        let m = beta1 * state_f32(at + 1u) + (1.0 - beta1) * g;
        let v = beta2 * state_f32(at + 2u) + (1.0 - beta2) * g * g;
        set_state_f32(at + 1u, m);
        set_state_f32(at + 2u, v);
        let tf = f32(t);
        let m_hat = m / (1.0 - pow(beta1, tf));
        let v_hat = v / (1.0 - pow(beta2, tf));
        s = s - lr * m_hat / (sqrt(v_hat) + epsilon);
    }
    set_state_f32(at, s);
}

// The serial part runs as its own one-invocation dispatch: inside a barrier-synchronised
// workgroup it is far slower on software adapters (lavapipe runs each barrier section as a
// coroutine over the whole workgroup).
@compute @workgroup_size(1)
fn weigh() {
    _ = partials[0];
    _ = aux[0];
    // 2. Effective weights and the raw total, in term order.
    let n = settings.term_count;
    let step = state[ST_STEP];
    var invalid = 0.0;
    for (var k = 0u; k < n; k = k + 1u) {
        invalid = invalid + scalars[term_slot(k, T_INVALID)];
    }

    // The GPU value checks of device-buffer inputs: the first that found a bad value, and
    // where (each word holds 0xffffffff − the first bad element; 0: none). Cleared for the next
    // step.
    var nonfinite = 0u;
    var nonfinite_at = 0u;
    for (var i = 0u; i < settings.finite_count; i = i + 1u) {
        let v = aux[settings.finite_base + i];
        if (v != 0u && nonfinite == 0u) {
            nonfinite = i + 1u;
            nonfinite_at = 0xffffffffu - v;
        }
        aux[settings.finite_base + i] = 0u;
    }
    scalars[S_NONFINITE] = bitcast<f32>(nonfinite);
    scalars[S_NONFINITE_AT] = bitcast<f32>(nonfinite_at);

    let norm = rlw_norm(step);

    // EMA reweighting: θ from this step's detached values.
    var theta = state_f32(ST_THETA);
    if (settings.strategy == 3u) {
        let main = scalars[term_slot(settings.ema_main, T_VALUE)];
        let aux = scalars[term_slot(settings.ema_aux, T_VALUE)];
        let d = main + settings.ema_lambda * aux;
        var target_theta = theta;
        if (d != 0.0) {
            target_theta = main / d;
        }
        theta = settings.ema_alpha * target_theta + (1.0 - settings.ema_alpha) * theta;
    }

    var raw = 0.0;
    for (var k = 0u; k < n; k = k + 1u) {
        let t = terms[k];
        let value = scalars[term_slot(k, T_VALUE)];
        var weight = state_weight(k, step, norm);
        var log_var_grad = 0.0;
        var log_var = 0.0;
        if (settings.strategy == 1u && t.learn == 1u) {
            log_var = state_f32(ST_TERM_BASE + k * ST_TERM_STRIDE);
            raw = raw + 0.5 * log_var;
            log_var_grad = -weight * value + 0.5;
        } else if (settings.strategy == 3u && k == settings.ema_aux) {
            weight = theta;
        }
        raw = raw + weight * value;
        scalars[term_slot(k, T_WEIGHT)] = weight;
        scalars[term_slot(k, T_LOG_VAR_GRAD)] = log_var_grad;
        scalars[term_slot(k, T_LOG_VAR)] = log_var;
    }

    // 3. Flooding (Ishida et al. 2020), last: |raw - b| + b, gradient sign(raw - b).
    var total = raw;
    var flood_sign = 1.0;
    if (settings.flooding == 1u) {
        let d = raw - settings.flood_level;
        flood_sign = sign(d);
        total = abs(d) + settings.flood_level;
    }
    scalars[S_TOTAL] = total;
    scalars[S_RAW_TOTAL] = raw;
    scalars[S_SIGN] = flood_sign;
    scalars[S_INVALID] = invalid;

    // 4. Gradient coefficient of each term: d total / d L_k / denominator, read by the
    //    backward passes; d total / d s_k with the flooding sign.
    for (var k = 0u; k < n; k = k + 1u) {
        let t = terms[k];
        let denom = scalars[term_slot(k, T_DENOM)];
        let scale = grad_weight(k, scalars[term_slot(k, T_WEIGHT)]) * flood_sign;
        // JRC: each part's factor in the term's value, and d total / d u.
        var ce_factor = 1.0;
        if (t.kind == KIND_JRC) {
            var ge_factor = 1.0 - t.alpha;
            ce_factor = t.alpha;
            if (t.jrc_learn == 1u) {
                let e1 = exp(-scalars[term_slot(k, T_U1)]);
                let e2 = exp(-scalars[term_slot(k, T_U2)]);
                ce_factor = e1;
                ge_factor = e2;
                scalars[term_slot(k, T_DU1)] = scale * (0.5 - e1 * scalars[term_slot(k, T_CE)]);
                scalars[term_slot(k, T_DU2)] = scale * (0.5 - e2 * scalars[term_slot(k, T_GE)]);
            }
            scalars[term_slot(k, T_COEF2)] = scale * ge_factor / t.rows;
        }
        var coef = 0.0;
        if (denom != 0.0) {
            coef = scale * ce_factor / denom;
        }
        scalars[term_slot(k, T_COEF)] = coef;
        if (t.kind == KIND_LISTWISE && t.jrc_learn == 1u) {
            // z = (x·|w| + b)/T: d total/dw = coef·sign(w)·Σ g·x/T, d total/db = coef·Σ g/T.
            let w = scalars[term_slot(k, T_U1)];
            scalars[term_slot(k, T_DU1)] = coef * sign(w) * scalars[term_slot(k, T_CE)] / t.temperature;
            scalars[term_slot(k, T_DU2)] = coef * scalars[term_slot(k, T_GE)] / t.temperature;
        }
        scalars[term_slot(k, T_LOG_VAR_GRAD)] = scalars[term_slot(k, T_LOG_VAR_GRAD)] * flood_sign;
    }

    // 5. State updates, only when the step is valid (a failed step changes no state).
    if (invalid != 0.0 || nonfinite != 0u) {
        return;
    }
    if (settings.strategy == 1u && settings.optimizer != 0u) {
        var adam_t = state[ST_ADAM_T];
        if (settings.optimizer == 2u) {
            adam_t = adam_t + 1u;
            state[ST_ADAM_T] = adam_t;
        }
        for (var k = 0u; k < n; k = k + 1u) {
            if (terms[k].learn != 1u) {
                continue;
            }
            let g = scalars[term_slot(k, T_LOG_VAR_GRAD)];
            optimise(ST_TERM_BASE + k * ST_TERM_STRIDE, g, settings.optimizer, settings.learning_rate,
                settings.beta1, settings.beta2, settings.epsilon, adam_t);
        }
    }
    // JRC's learned u1, u2 and the listwise terms' (w, b), each term with its own optimiser and
    // Adam step (the same state layout).
    for (var k = 0u; k < n; k = k + 1u) {
        let t = terms[k];
        if (!(t.kind == KIND_JRC || t.kind == KIND_LISTWISE) || t.jrc_learn != 1u || t.optimizer == 0u) {
            continue;
        }
        let step_t = state[t.jrc_state + 6u] + 1u;
        state[t.jrc_state + 6u] = step_t;
        optimise(t.jrc_state, scalars[term_slot(k, T_DU1)], t.optimizer, t.learning_rate, t.beta1,
            t.beta2, t.epsilon, step_t);
        optimise(t.jrc_state + 3u, scalars[term_slot(k, T_DU2)], t.optimizer, t.learning_rate,
            t.beta1, t.beta2, t.epsilon, step_t);
    }
    if (settings.strategy == 3u) {
        set_state_f32(ST_THETA, theta);
    }
    for (var i = 0u; i < settings.commit_count; i = i + 1u) {
        state[settings.commit_dst + i] = aux[settings.commit_src + i];
    }
    state[ST_STEP] = step + 1u;
}

// Runs before the forward passes when no gradient scale depends on this step's values (no
// flooding, no EMA reweighting): every term with a data-independent denominator gets its
// gradient coefficient from the state alone, so its row group can write gradients in its forward
// pass. `weigh` later writes the same coefficients (same operations, so the same bits).
@compute @workgroup_size(1)
fn coefficients() {
    _ = partials[0];
    _ = aux[0];
    let step = state[ST_STEP];
    let norm = rlw_norm(step);
    for (var k = 0u; k < settings.term_count; k = k + 1u) {
        let denom = terms[k].static_denom;
        if (denom != 0.0) {
            scalars[term_slot(k, T_COEF)] = state_weight(k, step, norm) / denom;
        }
    }
}

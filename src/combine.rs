//! The combine pass (`shaders/combine.wgsl`): one workgroup turns the partial sums of every term
//! into term values, applies the weighting strategy and flooding, writes each term's gradient
//! coefficient for the backward passes, and updates the GPU-resident state. Layout constants
//! here mirror the shader's.

use crate::config::{LossConfig, Optimizer, Reduction, Strategy};
use crate::kernel::{internal, Params, PassSpec, Shader, Work};
use crate::wgsl::Specialization;

// The layout constants mirror combine.wgsl; a test checks them against the shader, so some exist
// only to be checked.
/// Scalars block (f32): total, raw total, flooding sign, invalid-row count, then one record
/// of `S_TERM_STRIDE` floats per term from `S_TERM_BASE`.
pub(crate) const S_TOTAL: usize = 0;
pub(crate) const S_RAW_TOTAL: usize = 1;
pub(crate) const S_SIGN: usize = 2;
pub(crate) const S_INVALID: usize = 3;
/// The first GPU value check that refused an input (its index + 1, u32 bits; 0: none) and the
/// element (u32 bits); see finite.wgsl.
pub(crate) const S_NONFINITE: usize = 4;
pub(crate) const S_NONFINITE_AT: usize = 5;
pub(crate) const S_TERM_BASE: usize = 8;
pub(crate) const S_TERM_STRIDE: usize = 16;
pub(crate) const T_VALUE: usize = 0;
pub(crate) const T_WEIGHT: usize = 1;
pub(crate) const T_COEF: usize = 2;
#[allow(dead_code)]
pub(crate) const T_DENOM: usize = 3;
pub(crate) const T_LOG_VAR_GRAD: usize = 4;
pub(crate) const T_INVALID: usize = 6;
pub(crate) const T_LOG_VAR: usize = 7;
/// JRC: the coefficient of the listwise part's gradient (T_COEF is the calibration part's).
pub(crate) const T_COEF2: usize = 8;
/// JRC: the calibration CE, the listwise loss, the learned u1 and u2, and d total/d u1, u2.
pub(crate) const T_CE: usize = 9;
pub(crate) const T_GE: usize = 10;
pub(crate) const T_U1: usize = 11;
pub(crate) const T_U2: usize = 12;
pub(crate) const T_DU1: usize = 13;
pub(crate) const T_DU2: usize = 14;

/// Words of a JRC term's learned state: u1, m1, v1, u2, m2, v2 (f32 bits), Adam step.
pub(crate) const JRC_STATE_WORDS: u32 = 7;

/// What a term's partials are (`TermInfo::kind`): per-row ones (the default).
#[allow(dead_code)]
pub(crate) const KIND_ROWS: u32 = 0;
/// Partials over pairs: `.w` counts the pairs (the denominator of `mean`), nothing is invalid.
pub(crate) const KIND_PAIRS: u32 = 1;
/// JRC: the calibration CE's partials, and the listwise part's from `ge_partial_base`.
pub(crate) const KIND_JRC: u32 = 2;

/// A listwise term: partials (Σ l_S, N, N, 0); with `scale_logits` its second slot holds
/// (Σ g·x, Σ g) and (w, b) live in the state like JRC's u (T_U1, T_U2, T_DU1, T_DU2; T_CE and
/// T_GE hold the second slot's two sums).
pub(crate) const KIND_LISTWISE: u32 = 3;

/// Words of a listwise term's learned affine: w, m, v, b, m, v (f32 bits), Adam step (the layout
/// of [`JRC_STATE_WORDS`], so that one optimiser loop serves both).
pub(crate) const SCALE_STATE_WORDS: u32 = 7;

/// State block (u32 words): step, Adam step, EMA θ (f32 bits), reserved, then s, m, v per term.
#[allow(dead_code)]
pub(crate) const ST_STEP: usize = 0;
#[allow(dead_code)]
pub(crate) const ST_ADAM_T: usize = 1;
pub(crate) const ST_THETA: usize = 2;
pub(crate) const ST_TERM_BASE: usize = 4;
pub(crate) const ST_TERM_STRIDE: usize = 3;

/// Floats in the scalars block for `terms` terms.
pub(crate) fn scalars_len(terms: usize) -> usize {
    S_TERM_BASE + terms * S_TERM_STRIDE
}

/// Words in the state block for `terms` terms.
pub(crate) fn state_len(terms: usize) -> usize {
    ST_TERM_BASE + terms * ST_TERM_STRIDE
}

crate::gpu_struct! {
    /// The combine pass's settings (`Settings` in combine.wgsl): the strategy, its optimiser,
    /// flooding, EMA reweighting and the commit of the GHM-C accumulators.
    pub(crate) struct Settings in "combine.wgsl" test settings_layout {
        term_count: u32,
        /// 0 fixed, 1 uncertainty, 2 random, 3 ema_reweight.
        strategy: u32,
        /// 0 none, 1 sgd, 2 adam.
        optimizer: u32,
        seed: u32,
        /// 1 when a flood level is set.
        flooding: u32,
        flood_level: f32,
        learning_rate: f32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        ema_main: u32,
        ema_aux: u32,
        ema_alpha: f32,
        ema_lambda: f32,
        /// Words of `aux` from `commit_src` copied onto `state` from `commit_dst` when a step
        /// succeeds (the GHM-C accumulators).
        commit_src: u32,
        commit_dst: u32,
        commit_count: u32,
        /// Words of `aux` the GPU value checks of device buffers flag, one per check; `weigh`
        /// reads and clears them.
        finite_base: u32,
        finite_count: u32,
        /// 1 when EMA's θ̃ is detached (`detach_theta`).
        ema_detach: u32,
    }
}

crate::gpu_struct! {
    /// One term's record for the combine pass (`TermInfo` in combine.wgsl): where its partials
    /// are, how they reduce, and its weighting.
    pub(crate) struct TermInfo in "combine.wgsl" test term_info_layout {
        partial_base: u32,
        partial_count: u32,
        /// 0 nonzero_mean, 1 weighted_mean, 2 mean, 3 sum.
        reduction: u32,
        /// 1 when the uncertainty strategy learns this weight.
        learn: u32,
        /// B, the denominator of `mean`.
        rows: f32,
        /// The fixed weight.
        weight: f32,
        /// c_k of the uncertainty form: 0.5 for regression terms, else 1.
        half: f32,
        /// The reduction's denominator when it does not depend on the data, else 0.
        static_denom: f32,
        /// [`KIND_ROWS`], [`KIND_PAIRS`], [`KIND_JRC`] or [`KIND_LISTWISE`].
        kind: u32,
        /// JRC: the listwise part's partials (as many as the CE's); listwise with
        /// `scale_logits`: the (Σ g·x, Σ g) partials.
        ge_partial_base: u32,
        /// JRC fixed: α·ce + (1 − α)·ge.
        alpha: f32,
        /// JRC: 1 for the learned form; listwise: 1 with `scale_logits`.
        jrc_learn: u32,
        /// JRC: first state word of u1, m1, v1, u2, m2, v2, Adam step (listwise: w, …, b, …).
        jrc_state: u32,
        /// JRC's optimiser of u (listwise: of w, b): 0 none, 1 sgd, 2 adam.
        optimizer: u32,
        learning_rate: f32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        /// Listwise: T (d total/d(w, b) divides by it).
        temperature: f32,
        _pad1: u32,
    }
}

/// The optimiser code and parameters of `opt` (combine.wgsl: 0 none, 1 sgd, 2 adam).
pub(crate) fn optimizer_words(opt: &Optimizer) -> (u32, [f32; 4]) {
    match *opt {
        Optimizer::None => (0, [0.0; 4]),
        Optimizer::Sgd { learning_rate } => (1, [learning_rate as f32, 0.0, 0.0, 0.0]),
        Optimizer::Adam {
            learning_rate,
            beta1,
            beta2,
            epsilon,
        } => (
            2,
            [
                learning_rate as f32,
                beta1 as f32,
                beta2 as f32,
                epsilon as f32,
            ],
        ),
    }
}

impl Settings {
    pub(crate) fn new(config: &LossConfig) -> Self {
        let index = |name: &str| {
            config
                .losses
                .iter()
                .position(|t| t.name == name)
                .unwrap_or(0) as u32
        };
        let mut s = Settings {
            term_count: config.losses.len() as u32,
            ..Default::default()
        };
        match &config.strategy {
            Strategy::Fixed => {}
            Strategy::Uncertainty(opt) => {
                s.strategy = 1;
                let (code, [lr, b1, b2, eps]) = optimizer_words(opt);
                s.optimizer = code;
                s.learning_rate = lr;
                s.beta1 = b1;
                s.beta2 = b2;
                s.epsilon = eps;
            }
            Strategy::Random { seed } => {
                s.strategy = 2;
                s.seed = *seed;
            }
            Strategy::EmaReweight(e) => {
                s.strategy = 3;
                s.ema_main = index(&e.main);
                s.ema_aux = index(&e.aux);
                s.ema_alpha = e.alpha as f32;
                s.ema_lambda = e.lambda as f32;
                s.ema_detach = e.detach_theta as u32;
            }
        }
        if let Some(b) = config.flooding {
            s.flooding = 1;
            s.flood_level = b as f32;
        }
        s
    }
}

pub(crate) fn reduction_code(r: Reduction) -> u32 {
    match r {
        Reduction::NonzeroMean => 0,
        Reduction::WeightedMean => 1,
        Reduction::Mean => 2,
        Reduction::Sum => 3,
    }
}

/// The combine passes, all binding settings (read-only storage, never a uniform: see
/// docs/ARCHITECTURE.md, "Driver defects"), term table, partials, scalars, state, aux:
/// `coefficients` (one invocation, before the forward passes, only when some row group writes its
/// gradients in its forward pass), `combine` (one workgroup: reduce the partials) and `weigh`
/// (one invocation: strategy, flooding, coefficients, state).
pub(crate) fn passes(
    settings: usize,
    terms: usize,
    partials: usize,
    scalars: usize,
    state: usize,
    aux: usize,
) -> [PassSpec; 3] {
    let binds = vec![
        internal("settings", settings),
        internal("terms", terms),
        internal("partials", partials),
        internal("scalars", scalars),
        internal("state", state),
        internal("aux", aux),
    ];
    ["coefficients", "combine", "weigh"].map(|entry| PassSpec {
        label: entry.into(),
        shader: Shader::File("combine.wgsl", Specialization::new()),
        entry,
        binds: binds.clone(),
        work: Work::Single,
        reads: Vec::new(),
        params: Params::none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust mirror of the shader's layout constants must match combine.wgsl.
    #[test]
    fn layout_matches_the_shader() {
        let value = |name: &str| -> usize {
            let line = crate::wgsl::shader_file("combine.wgsl")
                .unwrap()
                .lines()
                .find(|l| l.starts_with(&format!("const {name}: u32 = ")))
                .unwrap_or_else(|| panic!("{name} not in combine.wgsl (with its imports)"));
            line.split('=')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches([';', 'u'])
                .parse()
                .unwrap()
        };
        for (name, v) in [
            ("S_TOTAL", S_TOTAL),
            ("S_RAW_TOTAL", S_RAW_TOTAL),
            ("S_SIGN", S_SIGN),
            ("S_INVALID", S_INVALID),
            ("S_NONFINITE", S_NONFINITE),
            ("S_NONFINITE_AT", S_NONFINITE_AT),
            ("S_TERM_BASE", S_TERM_BASE),
            ("S_TERM_STRIDE", S_TERM_STRIDE),
            ("T_VALUE", T_VALUE),
            ("T_WEIGHT", T_WEIGHT),
            ("T_COEF", T_COEF),
            ("T_DENOM", T_DENOM),
            ("T_LOG_VAR_GRAD", T_LOG_VAR_GRAD),
            ("T_INVALID", T_INVALID),
            ("T_LOG_VAR", T_LOG_VAR),
            ("T_COEF2", T_COEF2),
            ("T_CE", T_CE),
            ("T_GE", T_GE),
            ("T_U1", T_U1),
            ("T_U2", T_U2),
            ("T_DU1", T_DU1),
            ("T_DU2", T_DU2),
            ("KIND_ROWS", KIND_ROWS as usize),
            ("KIND_PAIRS", KIND_PAIRS as usize),
            ("KIND_JRC", KIND_JRC as usize),
            ("KIND_LISTWISE", KIND_LISTWISE as usize),
            ("ST_STEP", ST_STEP),
            ("ST_ADAM_T", ST_ADAM_T),
            ("ST_THETA", ST_THETA),
            ("ST_TERM_BASE", ST_TERM_BASE),
            ("ST_TERM_STRIDE", ST_TERM_STRIDE),
        ] {
            assert_eq!(value(name), v, "{name}");
        }
        assert_eq!(std::mem::size_of::<Settings>(), 80);
        assert_eq!(std::mem::size_of::<TermInfo>(), 80);
    }
}

//! The plan's state between steps: saving, loading (with the checks of `crate::state` and the
//! range checks of the words here), resetting; and what the state words hold ([`StateMap`]).

use super::Plan;
use crate::combine::{self, ST_ADAM_T, ST_STEP, ST_TERM_BASE, ST_TERM_STRIDE, ST_THETA};
use crate::config::{LossConfig, Optimizer, Strategy};
use crate::error::{Error, Result};
use crate::losses::jrc::params::{JrcParams, JrcWeighting};
use crate::losses::retrieval::params::CrossBatchParams;
use crate::losses::statistics::params::GhmParams;
use crate::report::read_buffer;
use crate::state;

/// A region of the state words that holds one term's state.
#[derive(Clone, Debug)]
pub(crate) struct StateRegion {
    pub term: String,
    pub offset: u32,
    pub kind: StateKind,
}

/// What a term keeps in the state.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StateKind {
    /// GHM-C's committed accumulators, one per bin (f32 ≥ 0).
    Ghm { bins: u32 },
    /// JRC's learned u1, m1, v1, u2, m2, v2 (f32) and its Adam step.
    Jrc,
    /// A listwise term's learned w, m, v, b, m, v (f32; w starts at 1) and its Adam step.
    Scale,
    /// A memory bank's head and fill; its rows' values (embeddings and log_q, with any padding
    /// of their buffers) are words [first, first + count) of the saved words, after the state.
    Bank {
        rows: u64,
        first: usize,
        count: usize,
    },
}

/// What the state words hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct StateMap {
    pub regions: Vec<StateRegion>,
}

fn optimizer_name(o: &Optimizer) -> &'static str {
    match o {
        Optimizer::None => "none",
        Optimizer::Sgd { .. } => "sgd",
        Optimizer::Adam { .. } => "adam",
    }
}

/// The lines that name everything in `config` that shapes its state (not the hyperparameters a
/// resumed run may change, such as learning rates).
fn describe(config: &LossConfig) -> Vec<String> {
    let strategy = match &config.strategy {
        Strategy::Fixed => "fixed".to_string(),
        Strategy::Uncertainty(o) => format!("uncertainty, optimizer {}", optimizer_name(o)),
        Strategy::Random { .. } => "random".to_string(),
        Strategy::EmaReweight(e) => format!("ema_reweight, main '{}', aux '{}'", e.main, e.aux),
    };
    let mut lines = vec![format!("strategy: {strategy}")];
    for t in &config.losses {
        let mut line = format!(
            "term '{}': {}, learn_loss_weight = {}",
            t.name,
            t.kind.loss_type(),
            t.learn_loss_weight
        );
        if let Some(p) = t.kind.params::<GhmParams>() {
            line.push_str(&format!(", bins = {}", p.bins));
        }
        if let Some(p) = t.kind.params::<JrcParams>() {
            match &p.weighting {
                JrcWeighting::Fixed => line.push_str(", weights fixed"),
                JrcWeighting::Uncertainty(o) => line.push_str(&format!(
                    ", weights learned with optimizer {}",
                    optimizer_name(o)
                )),
            }
        }
        if let Some(o) = t.listwise_scale() {
            line.push_str(&format!(
                ", scale (w, b) learned with optimizer {}",
                optimizer_name(&o)
            ));
        }
        if let Some(p) = t.kind.params::<CrossBatchParams>() {
            line.push_str(&format!(", bank_size = {}", p.bank_rows()));
        }
        lines.push(line);
    }
    lines
}

/// The f32 at word `i`.
fn f32_at(words: &[u32], i: usize) -> f32 {
    f32::from_bits(words[i])
}

impl StateMap {
    /// Checks that `words` are a state some run of `config` can reach: finite learned weights
    /// and moments, second moments and accumulators ≥ 0, Adam steps not beyond the step count,
    /// banks whose head and fill fit them and whose rows are finite.
    pub(crate) fn check(&self, config: &LossConfig, words: &[u32]) -> Result<()> {
        let bad = |what: String| {
            Err(Error::State(format!(
                "the state is not one a run can reach: {what}"
            )))
        };
        let step = words[ST_STEP];
        if words[ST_ADAM_T] > step {
            return bad(format!(
                "the Adam step {} is beyond the step count {step}",
                words[ST_ADAM_T]
            ));
        }
        if matches!(config.strategy, Strategy::EmaReweight(_))
            && !f32_at(words, ST_THETA).is_finite()
        {
            return bad(format!("the EMA θ is {}", f32_at(words, ST_THETA)));
        }
        for (k, t) in config.losses.iter().enumerate() {
            let base = ST_TERM_BASE + k * ST_TERM_STRIDE;
            let (s, m, v) = (
                f32_at(words, base),
                f32_at(words, base + 1),
                f32_at(words, base + 2),
            );
            if !(s.is_finite() && m.is_finite() && v.is_finite() && v >= 0.0) {
                return bad(format!(
                    "term '{}' has log-variance {s}, moments {m} and {v}",
                    t.name
                ));
            }
        }
        for r in &self.regions {
            r.check(words, step)
                .or_else(|what| bad(format!("term '{}': {what}", r.term)))?;
        }
        Ok(())
    }
}

impl StateRegion {
    fn check(&self, words: &[u32], step: u32) -> std::result::Result<(), String> {
        let at = self.offset as usize;
        match self.kind {
            StateKind::Ghm { bins } => {
                let acc = (0..bins as usize).map(|i| f32_at(words, at + i));
                if let Some(x) = acc.clone().find(|x| !(x.is_finite() && *x >= 0.0)) {
                    return Err(format!("a GHM-C accumulator is {x} (they are counts >= 0)"));
                }
            }
            StateKind::Jrc | StateKind::Scale => {
                let what = match self.kind {
                    StateKind::Jrc => "JRC weights",
                    _ => "listwise scale (w, b)",
                };
                let u: Vec<f32> = (0..6).map(|i| f32_at(words, at + i)).collect();
                if u.iter().any(|x| !x.is_finite()) || u[2] < 0.0 || u[5] < 0.0 {
                    return Err(format!("the learned {what} and moments are {u:?}"));
                }
                if words[at + 6] > step {
                    return Err(format!(
                        "the Adam step {} of the learned {what} is beyond the step count {step}",
                        words[at + 6]
                    ));
                }
            }
            StateKind::Bank { rows, first, count } => {
                let (head, fill) = (words[at] as u64, words[at + 1] as u64);
                if head >= rows || fill > rows || (fill < rows && head != fill) {
                    return Err(format!(
                        "the bank's head {head} and fill {fill} are not those of a bank of {rows} rows \
                         (head < rows, fill <= rows, and head = fill until it is full)"
                    ));
                }
                let bank = &words[first..first + count];
                if let Some(i) = bank.iter().position(|w| !f32::from_bits(*w).is_finite()) {
                    return Err(format!(
                        "the bank's value {i} is {}",
                        f32::from_bits(bank[i])
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Plan {
    fn state_buffer_words(&self) -> usize {
        self.state_buffers
            .iter()
            .map(|&i| (self.internal[i].size() / 4) as usize)
            .sum()
    }

    /// The state a fresh plan starts with: its words, then the (zeroed) memory banks.
    pub(super) fn initial_state(&self) -> Vec<u32> {
        let mut words = vec![0u32; self.state_words + self.state_buffer_words()];
        if let Strategy::EmaReweight(e) = &self.config.strategy {
            words[combine::ST_THETA] = (e.theta0 as f32).to_bits();
        }
        // A listwise term's learned w starts at 1 (EasyRec's ones_initializer), b at 0.
        for r in &self.state_map.regions {
            if let StateKind::Scale = r.kind {
                words[r.offset as usize] = 1.0f32.to_bits();
            }
        }
        words
    }

    /// Writes state words: the state buffer's, then (when given) the memory banks'.
    pub(super) fn write_state(&self, words: &[u32]) {
        let (head, mut rest) = words.split_at(self.state_words.min(words.len()));
        let queue = &self.engine.queue;
        queue.write_buffer(
            &self.internal[self.core.state],
            0,
            bytemuck::cast_slice(head),
        );
        for &i in &self.state_buffers {
            let b = &self.internal[i];
            let n = ((b.size() / 4) as usize).min(rest.len());
            if n > 0 {
                queue.write_buffer(b, 0, bytemuck::cast_slice(&rest[..n]));
            }
            rest = &rest[n..];
        }
    }

    /// Reads back the GPU-resident state (learned weights, optimiser moments, EMA θ, step count,
    /// GHM-C accumulators, learned JRC weights, memory banks) as bytes for a checkpoint. Blocks
    /// until the GPU is idle.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let b = &self.internal[self.core.state];
        let bytes = read_buffer(&self.engine, b, 0, b.size())?;
        let mut words: Vec<u32> = bytemuck::cast_slice(&bytes)[..self.state_words].to_vec();
        for &i in &self.state_buffers {
            let b = &self.internal[i];
            let bytes = read_buffer(&self.engine, b, 0, b.size())?;
            words.extend_from_slice(bytemuck::cast_slice(&bytes));
        }
        Ok(state::encode(&self.state_description(), &words))
    }

    /// The length in bytes of what [`Plan::save_state`] returns, known without reading the GPU
    /// (a trainer sizing a checkpoint slot, say).
    pub fn saved_state_len(&self) -> usize {
        state::encoded_len(
            &self.state_description(),
            self.state_words + self.state_buffer_words(),
        )
    }

    /// Restores a state saved by a plan of the same config; the next step continues exactly as
    /// the saved run would have. A state of another plan (strategy, optimiser, terms, learned
    /// weights, GHM-C bins, banks), a changed or truncated blob (checksum), or words no run can
    /// reach (a non-finite learned weight, a bank head beyond the bank) are refused with a
    /// message naming what is wrong, and the plan's state is left as it was.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let words = state::decode(
            bytes,
            &self.state_description(),
            self.state_words + self.state_buffer_words(),
        )?;
        self.state_map.check(&self.config, &words)?;
        self.write_state(&words);
        Ok(())
    }

    /// The lines that name everything that shapes this plan's state.
    fn state_description(&self) -> Vec<String> {
        let mut lines = describe(&self.config);
        lines.push(format!(
            "state words: {} (then {} words of memory banks)",
            self.state_words,
            self.state_buffer_words()
        ));
        lines
    }

    /// Marks every memory bank (`cross_batch_softmax`) full, keeping its rows as they are (zero in
    /// a fresh plan), so that a benchmark measures the cost of a full bank without first stepping
    /// M/B times. The next step uses all M rows as negatives.
    pub fn fill_banks(&mut self) {
        for &(word, rows) in &self.banks {
            self.engine.queue.write_buffer(
                &self.internal[self.core.state],
                (word as u64 + 1) * 4,
                bytemuck::bytes_of(&(rows as u32)),
            );
        }
    }

    /// Restores the state a fresh plan starts with.
    pub fn reset_state(&mut self) {
        let words = self.initial_state();
        self.write_state(&words);
    }
}

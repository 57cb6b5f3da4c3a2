//! The float64 CPU reference: every term and weighting strategy of `docs/LOSSES.md`, written
//! plainly so that a reader can check it against the formulas, and so that the GPU engine can be
//! tested against it.
//!
//! [`Reference::step`] evaluates every term on a [`HostBatch`] (per-row losses and analytic
//! derivatives, then the term's reduction), combines the term values with the configured strategy
//! and flooding, and returns the total, each term's value and effective weight, d(total)/d(tensor)
//! for every tensor bound to a differentiable role, d(total)/d(s_k) for learned uncertainty
//! weights and d(total)/d(u1, u2) for `jrc_loss` terms with learned weights. The state carried
//! between steps (learned s, Adam moments, EMA θ, step counter, GHM-C accumulators, JRC u, the
//! memory banks of `cross_batch_softmax`) changes only when a step succeeds.
//!
//! Choices docs/LOSSES.md leaves open, made here (the GPU must match them):
//! - binary labels (classification with one logit, focal, `cross_entropy_loss`, ESMM) and the
//!   probabilities of `cross_entropy_loss` must lie in [0, 1]; `l2_loss` and `sigmoid_l2_loss`
//!   labels are any reals;
//! - softmax CE needs C ≥ 2; with probability targets and class weights the row loss is PyTorch's
//!   Σ_c c_c·t'_c·(lse − z_c) with ω_i = w_i, and `ignore_index` does not apply;
//! - `classification` with one logit refuses the softmax-only options, and with C ≥ 2 refuses
//!   `pos_weight`;
//! - OHEM replaces the term's reduction (plain mean over the kept rows);
//! - GHM-C rows with w_i ≤ 0 are not valid and contribute nothing; `ghm_c` takes no reduction;
//! - F1-reweighted: a row is a positive when its unsmoothed label is exactly 1, and the reduction
//!   applies to the row weights r_i·w_i (so `weighted_mean` divides by Σ r_i·w_i, whose neg_w
//!   also carries gradient).
//! - pairwise terms: the pairs are (i, j) with y_i > y_j strictly (labels are any finite reals,
//!   graded 0, 1, 2, 3 allowed) in the same session; the pair weight is w_i; a pair's index is
//!   i·B + j with the original row indices (rows may come in any session order); session ids
//!   must be integers; logits and labels must be finite;
//! - `pairwise_logistic_loss`: d' = d − hinge_margin (0 when unset) − (y_i − y_j)/T when
//!   use_label_margin (both can apply);
//! - `pairwise_focal_loss`: exactly the binary focal loss with label 1 at logit d (modulator not
//!   detached, clip 1e-7, no smoothing); with hinge_margin m a pair with d ≥ m does not exist at
//!   all (not in any denominator, not among OHEM's P pairs);
//! - `pairwise_hinge_loss`: the derivative is −1 where the relu argument is > 0 and 0 otherwise
//!   (0 at the kink); the margins are not divided by T;
//! - pairwise reductions as for rows, over the pairs (`nonzero_mean` counts pairs with w_i ≠ 0,
//!   `mean` divides by the number of pairs); a zero denominator or no pair gives 0;
//! - pairwise OHEM: v = w_i·l per pair, k = clamp(round(P·r), 1, P) (half away from zero), ties at
//!   the k-th value keep the lowest pair index, kept v ≤ 0 are dropped, plain mean of the rest;
//!   the reduction is ignored;
//! - `jrc_loss`: labels must be exactly 0 or 1 and session ids are required; ce is the term's
//!   reduction (default `nonzero_mean`) of the two-column softmax CE with the sample weights; ge is
//!   Σ_i L_i / B over all rows, unweighted; without same_label_loss row i with label c has
//!   L_i = lse({z_{i,c}} ∪ {z_{j,c} : j in its session, y_j ≠ c}) − z_{i,c} (so the other rows get
//!   gradient in column c too), and L_i = 0 when its session has no row of the other label;
//! - `jrc_loss` with uncertainty weighting: (u1, u2) start at 0 and live in the state per term
//!   ([`JrcState`]); d total/du (effective weight and flooding sign included) is in the output,
//!   and the term's own optimiser (none, SGD, or Adam with the term's own step counter) steps u
//!   after a successful step;
//! - retrieval and embedding terms: embeddings are reals `[B, d]` with B ≥ 1, d ≥ 1, finite,
//!   the same shape across the roles of a term; `cosine` is x̂ = x / max(‖x‖, 1e-12) (PyTorch
//!   `F.normalize`), its gradient (g − x̂(x̂·g))/‖x‖ where ‖x‖ > 1e-12 and g/1e-12 elsewhere;
//!   rows are reduced with the term's reduction and sample weights over the rows that count (the
//!   others are in no numerator and no denominator); a tensor bound to two roles gets both
//!   gradients;
//! - `in_batch_softmax`, `cross_batch_softmax`: item_ids are integers compared exactly (any i64,
//!   stored with the bank rows whenever the role is bound, even without hit removal); log_q is
//!   finite reals `[B]` (or `[B, 1]`), 0 without the role; every row counts;
//! - `cross_batch_softmax` ([`BankState`]): the bank is used as negatives iff the successful
//!   steps before this one are ≥ warmup_steps; its columns are the filled slots
//!   `slots[..fill]`, logit sim(u_i, e)/T − log_q of the stored (normalised under cosine,
//!   detached) embedding; bank rows are never the positive, get no gradient, and with
//!   remove_accidental_hits are removed when their id equals id_i. After a successful step
//!   (warm-up included) batch row i goes to slot (head + i) mod M in order (B > M: the last
//!   write to a slot wins), head ← (head + B) mod M, fill ← min(fill + B, M); a failed step
//!   changes no bank, and a state whose bank is unreachable (wrong slot count, head ≠ fill
//!   before full, holes, ids not matching the `item_ids` binding, non-finite values) is refused;
//! - `contrastive_loss` `nt_xent`: the 2B rows of [a; b] all count, rows r and r + B both take
//!   w_r (`mean` divides by 2B, `nonzero_mean` by 2·#{w_i ≠ 0});
//! - `softmax_cross_entropy_with_negative_mining`: K ≥ B is an error; row i's k-th negative is
//!   item row (i − s_k) mod B (`tf.roll`), s_k = k without seed and
//!   `mining_shift(seed, step mod 2^32, k − 1, B)` ([`crate::rng::mining_shift`]) with one, step =
//!   the successful steps before this one; a negative is hard when (sp − margin) − sn < 0
//!   strictly (the test is not differentiated); rows count when labels are absent or label_i > 0
//!   (labels finite reals);
//! - `circle_loss`, `multi_similarity_loss`: labels are finite reals or integers compared for
//!   exact equality, session ids integers; j ≠ i is a positive when the label and the session
//!   (if any) are equal, a negative otherwise. Circle: a_p, a_n are detached (constants in the
//!   gradient, so the gradient is not the derivative of the value), a row counts when it has a
//!   positive and a negative; multi-similarity: dS/dcos = 1 where cos > 0 and 0 elsewhere,
//!   every row counts, and `eps` is accepted but unused (EasyRec uses it only with `ms_mining`,
//!   not implemented).
//!
//! - `ziln_loss`: logits [B, 3], labels finite and ≥ 0; `sample_weights` and `reduction` are
//!   refused (EasyRec ignores per-row weights and fixes its means); σ's clip passes the gradient
//!   at its bounds and nowhere outside them (TensorFlow's `clip_by_value`); the per-row
//!   prediction is returned in [`ReferenceOutput::predictions`].
//!
//! Modules: `inputs` (reading and checking tensors), `binary` and `softmax` (per-row losses),
//! `ghm` (GHM-C), `f1` (F1-reweighted), `pairwise` (pairwise-in-session terms), `jrc` (`jrc_loss`),
//! `retrieval` (`in_batch_softmax`, `cross_batch_softmax` and its bank, `contrastive_loss`,
//! negative mining; the similarity helpers), `metric` (`circle_loss`, `multi_similarity_loss`),
//! `combine` (reductions, OHEM, strategies), `terms` (one term from tensors to value and gradient),
//! `ziln` (`ziln_loss` and its prediction).

pub(crate) mod binary;
pub(crate) mod combine;
pub(crate) mod distill;
mod f1;
mod ghm;
mod inputs;
pub(crate) mod jrc;
pub(crate) mod listwise;
pub(crate) mod metric;
pub(crate) mod pairwise;
pub(crate) mod retrieval;
pub(crate) mod rows;
pub(crate) mod softmax;
mod state;
pub(crate) mod terms;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_distill;
#[cfg(test)]
mod tests_listwise;
#[cfg(test)]
mod tests_pairwise;
#[cfg(test)]
mod tests_retrieval;
pub(crate) mod ziln;

use crate::config::Strategy;
use crate::config::{LossConfig, LossTerm, NonFinite};
use crate::error::{Error, Result};
use crate::losses::jrc::params::{JrcParams, JrcWeighting};
use crate::losses::retrieval::params::CrossBatchParams;
use crate::losses::statistics::params::GhmParams;
use crate::tensor::HostBatch;
pub use state::{BankRow, BankState, JrcState, ReferenceState};
use std::collections::BTreeMap;

impl ReferenceState {
    /// The state before the first step of `config`.
    pub fn initial(config: &LossConfig) -> Self {
        let k = config.losses.len();
        Self {
            step: 0,
            log_vars: vec![0.0; k],
            adam_m: vec![0.0; k],
            adam_v: vec![0.0; k],
            adam_t: 0,
            ema_theta: match &config.strategy {
                Strategy::EmaReweight(ema) => ema.theta0,
                _ => 0.0,
            },
            ghm_acc: config
                .losses
                .iter()
                .map(|t| match t.kind.params::<GhmParams>() {
                    Some(p) => vec![0.0; p.bins as usize],
                    None => Vec::new(),
                })
                .collect(),
            // JRC's u start at 0; a listwise term's learned (w, b) at (1, 0), in the same slot.
            jrc: config
                .losses
                .iter()
                .map(|t| match t.listwise_scale() {
                    Some(_) => JrcState {
                        u: [1.0, 0.0],
                        ..JrcState::default()
                    },
                    None => JrcState::default(),
                })
                .collect(),
            banks: config
                .losses
                .iter()
                .map(|t| {
                    let p = t.kind.params::<CrossBatchParams>()?;
                    Some(BankState::empty(p.bank_rows() as usize))
                })
                .collect(),
        }
    }
}

/// What one reference step gives back.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceOutput {
    /// The total loss, after the weighting strategy and flooding.
    pub total: f64,
    /// Each term's value L_k, in config order.
    pub values: Vec<(String, f64)>,
    /// Each term's effective weight e_k this step (fixed weight, c_k·e^{−s_k}, RLW weight, 1 or θ),
    /// without the flooding sign.
    pub weights: Vec<(String, f64)>,
    /// d total / d tensor for every tensor bound to a differentiable role
    /// ([`crate::TermKind::differentiable_roles`]), as many values as the tensor, summed over every
    /// term that reads it.
    pub grads: BTreeMap<String, Vec<f64>>,
    /// d total / d s_k per term (0 for terms whose weight is not learned).
    pub log_var_grads: Vec<f64>,
    /// d total / d(u1, u2) per term for `jrc_loss` terms with uncertainty weighting, and
    /// d total / d(w, b) for listwise terms with `scale_logits`: the term's effective weight
    /// e_k × the flooding sign × dL_k/du ([0, 0] for the other terms).
    pub jrc_u_grads: Vec<[f64; 2]>,
    /// The per-row prediction of every term that has one (`ziln_loss`: its predicted mean), by
    /// term name.
    pub predictions: BTreeMap<String, Vec<f64>>,
}

/// The f64 reference engine for one configuration, with its state.
#[derive(Clone, Debug)]
pub struct Reference {
    config: LossConfig,
    state: ReferenceState,
}

impl Reference {
    /// A reference for `config` (validated again here) in its initial state.
    pub fn new(config: &LossConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            state: ReferenceState::initial(config),
        })
    }

    /// One step: evaluates every term, combines them, and updates the state (learned s, Adam
    /// moments, EMA θ, step counter, GHM-C accumulators, learned JRC u) only on success. A bad
    /// input gives an [`Error::Tensor`] naming the tensor and the term, and leaves the state as
    /// it was.
    pub fn step(&mut self, batch: &HostBatch) -> Result<ReferenceOutput> {
        self.check_state()?;
        let s = &self.state;
        let evaluated = self
            .config
            .losses
            .iter()
            .enumerate()
            .map(|(k, term)| {
                let before = terms::TermState {
                    step: s.step,
                    ghm_acc: &s.ghm_acc[k],
                    jrc_u: s.jrc[k].u,
                    bank: s.banks[k].as_ref(),
                };
                evaluate(term, batch, before, self.config.nonfinite)
            })
            .collect::<Result<Vec<_>>>()?;
        let values: Vec<f64> = evaluated.iter().map(|t| t.value).collect();
        let combined = combine::combine(&self.config, &values, &self.state);
        let mut grads: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (term, e) in evaluated.iter().zip(&combined.grad_weights) {
            let scale = e * combined.sign;
            for (tensor, g) in &term.grads {
                let acc = grads
                    .entry(tensor.clone())
                    .or_insert_with(|| vec![0.0; g.len()]);
                for (a, gi) in acc.iter_mut().zip(g) {
                    *a += scale * gi;
                }
            }
        }
        let jrc_u_grads: Vec<[f64; 2]> = evaluated
            .iter()
            .zip(&combined.grad_weights)
            .map(|(term, e)| term.jrc_du.map(|du| e * combined.sign * du))
            .collect();
        let mut next = combined.next;
        for ((term, g), jrc) in self
            .config
            .losses
            .iter()
            .zip(&jrc_u_grads)
            .zip(&mut next.jrc)
        {
            let weighting = term.kind.params::<JrcParams>().map(|p| &p.weighting);
            if let Some(JrcWeighting::Uncertainty(optimizer)) = weighting {
                combine::step_jrc_u(optimizer, *g, jrc);
            }
            if let Some(optimizer) = term.listwise_scale() {
                combine::step_jrc_u(&optimizer, *g, jrc);
            }
        }
        let mut predictions = BTreeMap::new();
        for (term, value) in self.config.losses.iter().zip(&evaluated) {
            if let Some(p) = &value.prediction {
                predictions.insert(term.name.clone(), p.clone());
            }
        }
        (next.ghm_acc, next.banks) = evaluated.into_iter().map(|t| (t.ghm_acc, t.bank)).unzip();
        let names = self.config.losses.iter().map(|t| t.name.clone());
        let output = ReferenceOutput {
            total: combined.total,
            values: names.clone().zip(values).collect(),
            weights: names.zip(combined.weights).collect(),
            grads,
            log_var_grads: combined.log_var_grads,
            jrc_u_grads,
            predictions,
        };
        self.state = next;
        Ok(output)
    }

    /// The current state.
    pub fn state(&self) -> &ReferenceState {
        &self.state
    }

    /// Replaces the state (tests, checkpoints). Its per-term vectors must have one entry per term;
    /// the next [`Reference::step`] checks that.
    pub fn set_state(&mut self, state: ReferenceState) {
        self.state = state;
    }

    /// The configuration this reference runs.
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    fn check_state(&self) -> Result<()> {
        let k = self.config.losses.len();
        let s = &self.state;
        for (what, len) in [
            ("log_vars", s.log_vars.len()),
            ("adam_m", s.adam_m.len()),
            ("adam_v", s.adam_v.len()),
            ("jrc", s.jrc.len()),
            ("banks", s.banks.len()),
        ] {
            if len != k {
                return Err(Error::State(format!(
                    "reference state has {len} {what} but the config has {k} terms"
                )));
            }
        }
        let initial = ReferenceState::initial(&self.config);
        let acc_ok = s.ghm_acc.len() == k
            && s.ghm_acc
                .iter()
                .zip(&initial.ghm_acc)
                .all(|(a, b)| a.len() == b.len());
        if !acc_ok {
            return Err(Error::State(
                "reference state's GHM-C accumulators do not match the config's ghm_c terms (one \
                 per bin)"
                    .into(),
            ));
        }
        for (term, bank) in self.config.losses.iter().zip(&s.banks) {
            let problem = match (term.kind.params::<CrossBatchParams>(), bank) {
                (Some(p), Some(bank)) => bank
                    .check(p.bank_rows() as usize, term.input("item_ids").is_some())
                    .err(),
                (Some(_), None) => {
                    Some("the state holds no memory bank for this cross_batch_softmax".into())
                }
                (_, Some(_)) => Some(
                    "the state holds a memory bank but the term is no cross_batch_softmax".into(),
                ),
                (_, None) => None,
            };
            if let Some(problem) = problem {
                return Err(Error::State(format!(
                    "reference state of term '{}': {problem}",
                    term.name
                )));
            }
        }
        Ok(())
    }
}

/// Evaluates `term` on `batch` from the state before the step through its family's reference,
/// checking every tensor it reads.
fn evaluate(
    term: &LossTerm,
    batch: &HostBatch,
    state: terms::TermState,
    nonfinite: NonFinite,
) -> Result<terms::TermValue> {
    let entry = term.kind.entry().ok_or_else(|| {
        Error::Config(format!(
            "term '{}': unknown loss_type '{}'",
            term.name,
            term.kind.loss_type()
        ))
    })?;
    // Integer labels are reals to the reference, as to the kernels (losses::labels).
    let viewed = crate::losses::labels::real_view(term, batch);
    let batch = viewed.as_ref().unwrap_or(batch);
    inputs::check_values(term, entry, batch, nonfinite)?;
    entry.family.reference(entry, term, batch, state)
}

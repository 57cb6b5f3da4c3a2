//! What one term's reference evaluation reads and returns. Each family's reference lives beside
//! its formulas: [`super::rows`] (per-row and batch-wide terms), [`super::softmax`],
//! [`super::pairwise`], [`super::jrc`], [`super::retrieval`] (retrieval, contrastive and negative
//! mining) and [`super::metric`]; the family's [`crate::losses::family::Family::reference`] points
//! to it.

use super::state::BankState;

/// One term's value L_k and dL_k/d(tensor) for each tensor bound to a differentiable role
/// (same length as the tensor). A tensor read through two roles appears twice; the caller sums.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TermValue {
    /// The reduced term value L_k.
    pub value: f64,
    /// (tensor name, dL_k/d tensor).
    pub grads: Vec<(String, Vec<f64>)>,
    /// GHM-C momentum accumulators after this step (empty for other terms).
    pub ghm_acc: Vec<f64>,
    /// dL_k/d(u1, u2) of a `jrc_loss` term with uncertainty weighting, or dL_k/d(w, b) of a
    /// listwise term with `scale_logits` (0 otherwise).
    pub jrc_du: [f64; 2],
    /// The memory bank of a `cross_batch_softmax` term after this step (None otherwise).
    pub bank: Option<BankState>,
    /// The per-row prediction of a term that has one (`ziln_loss`: its predicted mean).
    pub prediction: Option<Vec<f64>>,
}

impl TermValue {
    /// A term value without state: no GHM-C accumulators, no JRC d/du, no bank.
    pub(crate) fn plain(value: f64, grads: Vec<(String, Vec<f64>)>) -> Self {
        Self {
            value,
            grads,
            ghm_acc: Vec::new(),
            jrc_du: [0.0; 2],
            bank: None,
            prediction: None,
        }
    }
}

/// What one term reads from the state before the step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TermState<'a> {
    /// Successful steps so far (the seeded shifts of negative mining, the warm-up of
    /// `cross_batch_softmax`).
    pub step: u64,
    /// The term's GHM-C accumulators (empty for other terms).
    pub ghm_acc: &'a [f64],
    /// The learned (u1, u2) of a `jrc_loss` term with uncertainty weighting, or (w, b) of a
    /// listwise term with `scale_logits` (unused otherwise).
    pub jrc_u: [f64; 2],
    /// The memory bank of a `cross_batch_softmax` term (None for other terms).
    pub bank: Option<&'a BankState>,
}

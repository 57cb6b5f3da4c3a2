//! The parameters of the retrieval terms (docs/LOSSES.md, "Retrieval and embedding terms"):
//! `in_batch_softmax`, `cross_batch_softmax` and `contrastive_loss`.

use crate::losses::params::positive;
use crate::losses::params::{ParamContext, ParamError, Params};
use serde::{Deserialize, Serialize};

/// The largest `bank_size` of `cross_batch_softmax`.
pub const MAX_BANK_SIZE: u32 = 1 << 24;

/// How a retrieval or contrastive term scores a pair of embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// u·v.
    Dot,
    /// û·v̂ with x̂ = x / max(‖x‖, 1e-12) (PyTorch `F.normalize`), gradient through the
    /// normalisation.
    Cosine,
}

impl Similarity {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dot => "dot",
            Self::Cosine => "cosine",
        }
    }
}

/// Which InfoNCE form `contrastive_loss` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContrastiveVariant {
    /// Rows a_i against columns b_j; the positive is b_i (EasyRec `info_nce_loss`).
    InfoNce,
    /// SimCLR NT-Xent over the 2B rows of [a; b]: each row's positive is its other view, the
    /// negatives are the other 2B − 2 rows (EasyRec `nce_loss`).
    NtXent,
}

/// What `in_batch_softmax` and `cross_batch_softmax` share, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalParams {
    /// T: s_ij = sim(u_i, v_j)/T − log_q_j.
    pub temperature: f64,
    /// Dot or cosine.
    pub similarity: Similarity,
    /// Columns j ≠ i (and bank rows) with item_id_j = item_id_i get −∞.
    pub remove_accidental_hits: bool,
}

/// `remove_accidental_hits`: default true when `item_ids` is bound, and refused without it.
fn check_hits(hits: &mut Option<bool>, ctx: &ParamContext) -> Result<(), ParamError> {
    let has_ids = ctx.binds("item_ids");
    let h = hits.unwrap_or(has_ids);
    if h && !has_ids {
        return Err(ParamError::new(
            "remove_accidental_hits",
            "'remove_accidental_hits' needs the 'item_ids' role (the ids to compare)",
        ));
    }
    *hits = Some(h);
    Ok(())
}

/// `in_batch_softmax` (TFRS `Retrieval`; Yi et al. RecSys 2019 for the logQ correction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InBatchParams {
    /// T.
    pub temperature: f64,
    /// Dot (default) or cosine.
    pub similarity: Similarity,
    /// Default: true when `item_ids` is bound.
    pub remove_accidental_hits: Option<bool>,
}

impl Default for InBatchParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            similarity: Similarity::Dot,
            remove_accidental_hits: None,
        }
    }
}

impl Params for InBatchParams {
    fn check(&mut self, ctx: &ParamContext) -> Result<(), ParamError> {
        check_hits(&mut self.remove_accidental_hits, ctx)?;
        positive("temperature", self.temperature)
    }
}

impl InBatchParams {
    /// The resolved options.
    pub fn retrieval(&self) -> RetrievalParams {
        RetrievalParams {
            temperature: self.temperature,
            similarity: self.similarity,
            remove_accidental_hits: self.remove_accidental_hits.unwrap_or(false),
        }
    }
}

/// `cross_batch_softmax` (CBNS, Wang et al. SIGIR 2021).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossBatchParams {
    /// T.
    pub temperature: f64,
    /// Dot (default) or cosine.
    pub similarity: Similarity,
    /// Default: true when `item_ids` is bound.
    pub remove_accidental_hits: Option<bool>,
    /// M: rows of the bank (required).
    pub bank_size: Option<u32>,
    /// Steps during which the bank is filled but not used as negatives.
    pub warmup_steps: u32,
}

impl Default for CrossBatchParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            similarity: Similarity::Dot,
            remove_accidental_hits: None,
            bank_size: None,
            warmup_steps: 0,
        }
    }
}

impl Params for CrossBatchParams {
    fn check(&mut self, ctx: &ParamContext) -> Result<(), ParamError> {
        let Some(bank_size) = self.bank_size else {
            return Err(ParamError::new(
                "bank_size",
                "'bank_size' (rows of the memory bank) is required",
            ));
        };
        if !(1..=MAX_BANK_SIZE).contains(&bank_size) {
            return Err(ParamError::new(
                "bank_size",
                format!("'bank_size' must be in [1, {MAX_BANK_SIZE}], got {bank_size}"),
            ));
        }
        check_hits(&mut self.remove_accidental_hits, ctx)?;
        positive("temperature", self.temperature)
    }
}

impl CrossBatchParams {
    /// The resolved options.
    pub fn retrieval(&self) -> RetrievalParams {
        RetrievalParams {
            temperature: self.temperature,
            similarity: self.similarity,
            remove_accidental_hits: self.remove_accidental_hits.unwrap_or(false),
        }
    }

    /// M.
    pub fn bank_rows(&self) -> u32 {
        self.bank_size.unwrap_or(1)
    }
}

/// `contrastive_loss` (Yao et al. CIKM 2021).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContrastiveParams {
    /// τ.
    pub temperature: f64,
    /// Cosine (default) or dot.
    pub similarity: Similarity,
    /// InfoNCE (default) or NT-Xent.
    pub variant: ContrastiveVariant,
}

impl Default for ContrastiveParams {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            similarity: Similarity::Cosine,
            variant: ContrastiveVariant::InfoNce,
        }
    }
}

impl Params for ContrastiveParams {
    fn check(&mut self, _: &ParamContext) -> Result<(), ParamError> {
        positive("temperature", self.temperature)
    }
}

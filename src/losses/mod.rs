//! Loss families, one module each: its loss types (names, roles, typed parameters), its checks
//! against the batch's shapes, its passes and the pointer to its f64 reference
//! (`src/reference/<family>.rs`); its kernels are `shaders/<family>.wgsl`. The families are
//! - [`rows`]: per-row terms in the fused row kernel;
//! - [`statistics`]: batch-wide row terms (GHM-C, OHEM focal, F1-reweighted);
//! - [`softmax`]: softmax cross-entropy;
//! - [`distill`]: knowledge distillation (row terms for one column, softmax terms for [B, C]);
//! - [`pairwise`], [`jrc`] and [`listwise`]: terms over rows grouped by session ([`session`]);
//! - [`retrieval`], [`metric`], [`mining`]: terms over embeddings ([`embedding`]);
//! - [`ziln`]: the zero-inflated lognormal loss, a row term over [B, 3] logits with a per-row
//!   prediction.
//!
//! Shared mechanisms exist once: [`family`] (what every family declares), [`params`] (typed
//! parameters), [`registry`] (every loss type), [`shapes`] (checks), [`common`] (kernel helpers), [`select`] (GPU top-k),
//! [`session`] (grouping by session), [`embedding`] (prep and apply of similarity rows),
//! [`labels`] (labels of any dtype, cast once to what the kernels read).

pub(crate) mod common;
pub(crate) mod distill;
pub(crate) mod embedding;
pub(crate) mod family;
pub(crate) mod jrc;
pub(crate) mod labels;
pub(crate) mod listwise;
pub(crate) mod metric;
pub(crate) mod mining;
pub(crate) mod pairwise;
pub(crate) mod params;
pub(crate) mod registry;
pub(crate) mod retrieval;
pub(crate) mod rows;
pub(crate) mod select;
pub(crate) mod session;
pub(crate) mod shapes;
pub(crate) mod softmax;
pub(crate) mod statistics;
pub(crate) mod ziln;

//! lossfuse: a GPU loss engine for recommender and retrieval training.
//!
//! One batch of named tensors per training step goes in; every configured loss term, the weighted
//! total and the gradient of the total for every differentiable input come out, from one queue
//! submission. Every term has an f64 CPU reference ([`reference`](mod@reference)) that the GPU is tested against.
//! Formulas: `docs/LOSSES.md`; architecture: `docs/ARCHITECTURE.md`.
//!
//! ```no_run
//! use lossfuse::{Batch, DType, Engine, LossConfig, Shapes};
//! let engine = Engine::new()?;
//! let config = LossConfig::from_toml_str(r#"
//! [[losses]]
//! loss_type = "classification"
//! logits = "ctr_logits"
//! labels = "click"
//! "#)?;
//! let shapes = Shapes::new()
//!     .tensor("ctr_logits", &[4], DType::F32)
//!     .tensor("click", &[4], DType::F32);
//! let mut plan = engine.plan(&config, &shapes)?;
//! let logits = [0.5f32, -1.0, 2.0, 0.0];
//! let click = [1.0f32, 0.0, 1.0, 0.0];
//! let out = plan.step(&Batch::new().tensor("ctr_logits", &logits).tensor("click", &click))?;
//! let report = out.report_blocking()?;
//! let grad: &wgpu::Buffer = out.grad("ctr_logits")?; // stays on the GPU for the trainer
//! # let _ = (report, grad);
//! # Ok::<(), lossfuse::Error>(())
//! ```

#![warn(missing_docs)]

pub mod batch;
mod combine;
pub mod config;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod kernel;
mod layout;
mod losses;
mod parse;
pub mod plan;
pub mod reference;
pub mod report;
pub mod rng;
mod schedule;
mod state;
pub mod tensor;
pub mod wgsl;

pub use batch::{Batch, DType, Input, OwnedBatch, Shapes, TensorSpec};
pub use config::{LossConfig, LossTerm, NonFinite, Reduction, Strategy, TermKind, TermParams};
pub use engine::{AdapterSummary, Engine, EngineOptions};
pub use error::{Error, Result};
pub use losses::family::{Role, RoleKind};
pub use losses::jrc::JrcWeighting;
pub use losses::pairwise::PairLoss;
pub use losses::retrieval::{ContrastiveVariant, RetrievalParams, Similarity};
pub use losses::softmax::params::SoftmaxParams;
pub use parse::loss_types;
pub use plan::Plan;
pub use report::{JrcReport, Report, ScaleReport, StepCounters, StepOutput, TermReport};
pub use tensor::{HostBatch, HostData, HostTensor};
pub use wgpu;

/// Each loss type's parameters, for configs built in code with [`TermKind::new`]: EasyRec's keys
/// and defaults (`Default`), checked by [`LossConfig::validate`]. Formulas: `docs/LOSSES.md`.
pub mod params {
    pub use crate::losses::distill::params::{
        BceParams, DistillKind, KlParams, L2DistillParams, Teacher,
    };
    pub use crate::losses::jrc::params::JrcParams;
    pub use crate::losses::listwise::params::{
        ListSpec, ListTargets, ListwiseDistillParams, ListwiseRankParams,
    };
    pub use crate::losses::metric::params::{CircleParams, MultiSimilarityParams};
    pub use crate::losses::mining::params::MiningParams;
    pub use crate::losses::pairwise::params::{
        PairWiseParams, PairwiseFocalParams, PairwiseHingeParams, PairwiseLogisticParams,
    };
    pub use crate::losses::params::NoParams;
    pub use crate::losses::retrieval::params::{
        ContrastiveParams, CrossBatchParams, InBatchParams, MAX_BANK_SIZE,
    };
    pub use crate::losses::rows::params::{ClassificationParams, FocalParams};
    pub use crate::losses::softmax::params::SoftmaxParams;
    pub use crate::losses::statistics::params::{F1Params, GhmParams, MAX_GHM_BINS};
    pub use crate::losses::ziln::params::{ZilnParams, MAX_LOG_CLIP};
}

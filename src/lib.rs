//! lossfuse: a GPU loss engine for recommender and retrieval training.
//!
//! One batch of named tensors per training step goes in; every configured loss term, the weighted
//! total and the gradient of the total for every differentiable input come out, from one queue
//! submission. Every term has an f64 CPU reference ([`reference`](mod@reference)) that the GPU is tested against.
//! Formulas: `shared/LOSSES.md`; architecture: `shared/DESIGN.md`.
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
mod losses;
pub mod plan;
pub mod reference;
pub mod report;
pub mod rng;
mod schedule;
mod state;
pub mod tensor;
pub mod wgsl;

pub use batch::{Batch, DType, Input, OwnedBatch, Shapes, TensorSpec};
pub use config::{
    ContrastiveVariant, JrcWeighting, LossConfig, LossTerm, PairLoss, Reduction, RetrievalParams,
    Similarity, Strategy, TermKind,
};
pub use engine::{AdapterSummary, Engine, EngineOptions};
pub use error::{Error, Result};
pub use plan::Plan;
pub use report::{JrcReport, Report, StepCounters, StepOutput, TermReport};
pub use tensor::{HostBatch, HostData, HostTensor};
pub use wgpu;

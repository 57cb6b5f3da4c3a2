//! lossfuse: a GPU loss engine for recommender and retrieval training.
//!
//! One batch of named tensors per training step goes in; every configured loss term, the weighted
//! total and the gradient of the total for every differentiable input come out, from one queue
//! submission. Every term has an f64 CPU reference ([`reference`]) that the GPU is tested against.
//! Formulas: `shared/LOSSES.md`; architecture: `shared/DESIGN.md`.

pub mod config;
pub mod error;
pub mod reference;
pub mod rng;
pub mod tensor;

pub use config::{LossConfig, LossTerm, Reduction, Strategy, TermKind};
pub use error::{Error, Result};
pub use tensor::{HostBatch, HostData, HostTensor};

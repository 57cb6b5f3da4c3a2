//! lossfuse's losses inside a Burn model.
//!
//! Burn (0.23.0-pre.1, its wgpu backend on wgpu 30, fusion on) and lossfuse share one wgpu device
//! ([`init`], [`share`]). [`LossfuseLoss::forward`] takes Burn tensors by name, binds their wgpu
//! buffers where they are (a fusion tensor is resolved first, which runs the fused work that
//! produces it), runs one lossfuse step, and returns the total as a Burn tensor: with autodiff
//! inputs, an autodiff tensor whose backward scales lossfuse's gradients by the upstream
//! gradient (a custom `Backward` op). Errors are `lossfuse::Error`s, never panics.
//!
//! ```no_run
//! use lossfuse_burn::{init, Inputs, LossfuseLoss};
//! use burn::backend::wgpu::WgpuBackend;
//! use burn::tensor::{Distribution, Tensor};
//!
//! let (device, engine) = init(WgpuBackend::Auto).unwrap();
//! let device = device.autodiff();
//! let loss = LossfuseLoss::from_toml(
//!     "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'class'\n",
//!     &engine,
//! )
//! .unwrap();
//! let logits = Tensor::<2>::random([64, 10], Distribution::Default, &device).require_grad();
//! let class = Tensor::<1, burn::tensor::Int>::from_ints([3; 64], &device);
//! let out = loss
//!     .forward(Inputs::new().float("logits", logits.clone()).int("class", class))
//!     .unwrap();
//! let grads = out.total.backward();
//! let d_logits = logits.grad(&grads).unwrap();
//! ```

mod backward;
mod device;
mod inputs;
mod loss;
mod record;
mod tensors;

pub use burn;
pub use device::{init, share};
pub use inputs::Inputs;
pub use loss::{LossOutput, LossfuseLoss};
pub use lossfuse;

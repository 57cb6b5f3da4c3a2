//! [`LossfuseLoss`]: a lossfuse plan stepped on Burn tensors, its total an autodiff tensor.

use crate::backward::track;
use crate::inputs::{Checkpointing, FloatInput, Inputs, Item};
use crate::tensors::{bind, empty_f32, flush, BoundTensor, FusionPrimitive};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, DType as BurnDType, TensorData, TensorMetadata};
use burn::module::ParamId;
use burn::tensor::{Device, Tensor};
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
use burn_cubecl::Cube;
use lossfuse::{Batch, DType, Engine, Error, LossConfig, Plan, Report, Result, Shapes};
use std::sync::{Arc, Mutex};

/// lossfuse's losses as a Burn loss: [`LossfuseLoss::forward`] binds the step's Burn tensors
/// without copying them, runs one `Plan::step` on the shared device, and returns the total as a
/// Burn tensor whose backward gives every differentiable input lossfuse's gradient times the
/// upstream gradient. The plan (and its GPU state: memory banks, GHM-C histograms, learned
/// weights) lives as long as the loss; clones share it.
#[derive(Clone)]
pub struct LossfuseLoss {
    pub(crate) inner: Arc<Mutex<Inner>>,
}

pub(crate) struct Inner {
    pub engine: Engine,
    pub config: LossConfig,
    pub plan: Option<Plan>,
    /// Where Burn's tensors live: given, or learnt from the first step's inputs.
    pub device: Option<Device>,
    /// The id of the state's parameter in Burn's records (kept across saves and loads).
    pub state_id: ParamId,
    /// A state a record brought that the plan refused, returned by the next `forward`.
    pub refused_state: Option<Error>,
}

impl std::fmt::Debug for LossfuseLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        let terms: Vec<&str> = inner
            .config
            .losses
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        f.debug_struct("LossfuseLoss")
            .field("terms", &terms)
            .finish()
    }
}

/// What one [`LossfuseLoss::forward`] returns.
pub struct LossOutput {
    /// The total loss, one value; an autodiff tensor when some input was.
    pub total: Tensor<1>,
    /// Every term's value and weight, read back with the total.
    pub report: Report,
}

impl LossOutput {
    /// A term's value by name.
    pub fn term(&self, name: &str) -> Option<f32> {
        self.report.term(name).map(|t| t.value)
    }
}

/// A step's bound tensors and the floats among them, in input order.
struct Bound {
    tensors: Vec<(String, BoundTensor)>,
    floats: Vec<(String, FloatInput)>,
}

impl LossfuseLoss {
    /// A loss over `config` on `engine`'s device (the device Burn's tensors live on; see
    /// [`crate::init`]). The plan is built at the first step, from its tensors' shapes.
    pub fn new(config: LossConfig, engine: &Engine) -> Self {
        let inner = Inner {
            engine: engine.clone(),
            config,
            plan: None,
            device: None,
            state_id: ParamId::new(),
            refused_state: None,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// A loss whose plan is built now for `shapes`, its tensors on `device`: what loading a
    /// checkpoint into a fresh loss needs (the state's size follows from the plan).
    pub fn planned(
        config: LossConfig,
        shapes: &Shapes,
        device: &Device,
        engine: &Engine,
    ) -> Result<Self> {
        let loss = Self::new(config, engine);
        {
            let mut inner = loss.lock();
            inner.ensure_plan(shapes)?;
            inner.device = Some(device.clone());
        }
        Ok(loss)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// As [`LossfuseLoss::new`], from a TOML loss config.
    pub fn from_toml(toml: &str, engine: &Engine) -> Result<Self> {
        Ok(Self::new(LossConfig::from_toml_str(toml)?, engine))
    }

    /// One step over `inputs`: the total and every term. Waits for the step's scalars (a read of
    /// a few bytes), so that a refused step is an `Err` here, never a panic or a silent value.
    pub fn forward(&self, inputs: Inputs) -> Result<LossOutput> {
        let device = inputs.device.clone();
        let bound = bind_all(inputs)?;
        let mut inner = self.lock();
        if let Some(e) = inner.refused_state.take() {
            return Err(e);
        }
        if inner.device.is_none() {
            inner.device = device;
        }
        let shapes = shapes_of(&bound.tensors)?;
        inner.ensure_plan(&shapes)?;
        let engine = inner.engine.clone();
        let plan = inner.plan.as_mut().expect("planned");
        if let Some((_, first)) = bound.tensors.first() {
            flush(first)?;
        }
        let batch = bound.tensors.iter().fold(Batch::new(), |b, (name, t)| {
            let (buffer, offset) = t.buffer();
            b.buffer_at(name.clone(), buffer, offset)
        });
        let out = plan.step(&batch)?;
        let report = out.report_blocking()?;
        let like = &bound.tensors.first().expect("a step reads a tensor").1.cube;
        let mut grads = Vec::new();
        let mut encoder = engine.device().create_command_encoder(&Default::default());
        for (name, input) in &bound.floats {
            if let (FloatInput::Tracked(..), Ok(buffer)) = (input, out.grad(name)) {
                let shape = TensorMetadata::shape(&input.primitive());
                let (tensor, target) = empty_f32(name, like, shape.clone())?;
                let (dst, offset) = target.buffer();
                let bytes = shape.num_elements() as u64 * 4;
                if bytes > 0 {
                    encoder.copy_buffer_to_buffer(buffer, 0, dst, offset, bytes);
                }
                grads.push((name.clone(), tensor, target));
            }
        }
        engine.queue().submit([encoder.finish()]);
        let total_data = TensorData::new(vec![report.total], [1]);
        let total = <Cube as FloatTensorOps<Cube>>::float_from_data(total_data, &like.device);
        let total = assemble(total, bound.floats, grads);
        Ok(LossOutput { total, report })
    }

    /// The plan's GPU state (learned weights, optimiser moments, memory banks, GHM-C
    /// accumulators) as bytes, `Plan::save_state`'s format; empty before the first step.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let inner = self.lock();
        inner.plan.as_ref().map_or(Ok(Vec::new()), Plan::save_state)
    }
}

impl Inner {
    /// Builds the plan for `shapes`, or rebuilds it for new shapes with the state carried over.
    pub(crate) fn ensure_plan(&mut self, shapes: &Shapes) -> Result<()> {
        if self.plan.as_ref().is_some_and(|p| p.shapes() == shapes) {
            return Ok(());
        }
        let mut plan = self.engine.plan(&self.config, shapes)?;
        if let Some(old) = &self.plan {
            plan.load_state(&old.save_state()?)?;
        }
        self.plan = Some(plan);
        Ok(())
    }
}

/// Binds every input's storage; refuses a tensor of another backend by name.
fn bind_all(inputs: Inputs) -> Result<Bound> {
    let mut bound = Bound {
        tensors: Vec::new(),
        floats: Vec::new(),
    };
    for (name, item) in inputs.items {
        let (primitive, int): (FusionPrimitive, bool) = match &item {
            Item::Float(f) => (f.primitive(), false),
            Item::Int(p) => (p.clone(), true),
            Item::Foreign(kind) => {
                return Err(Error::Tensor {
                    tensor: name,
                    term: None,
                    message: format!(
                        "not a {kind} tensor of Burn's wgpu backend (lossfuse-burn binds wgpu \
                         tensors, with or without autodiff)"
                    ),
                })
            }
        };
        bound
            .tensors
            .push((name.clone(), bind(&name, primitive, int)?));
        if let Item::Float(f) = item {
            bound.floats.push((name, f));
        }
    }
    Ok(bound)
}

/// lossfuse's shapes and dtypes of the bound tensors.
fn shapes_of(tensors: &[(String, BoundTensor)]) -> Result<Shapes> {
    let mut shapes = Shapes::new();
    for (name, t) in tensors {
        let dtype = match t.cube.dtype {
            BurnDType::F32 => DType::F32,
            BurnDType::I32 => DType::I32,
            BurnDType::U32 => DType::U32,
            BurnDType::I64 => DType::I64,
            BurnDType::U64 => DType::U64,
            other => {
                return Err(Error::Tensor {
                    tensor: name.clone(),
                    term: None,
                    message: format!(
                        "dtype {other:?}: lossfuse reads F32 floats and I32, U32, I64 or U64 ints"
                    ),
                })
            }
        };
        let dims = t.cube.meta.shape().clone();
        shapes.insert(name.clone(), &dims.to_vec(), dtype);
    }
    Ok(shapes)
}

/// The total as a Burn tensor: plain when no input is tracked, else the autodiff node over the
/// tracked inputs and their gradients.
fn assemble(
    total: FusionPrimitive,
    floats: Vec<(String, FloatInput)>,
    grads: Vec<(String, FusionPrimitive, BoundTensor)>,
) -> Tensor<1> {
    let mut tracked: Vec<(FloatTensor<Autodiff<Cube>>, FusionPrimitive)> = Vec::new();
    let mut strategy = None;
    for (name, input) in floats {
        if let FloatInput::Tracked(t, c) = input {
            if let Some((_, g, _)) = grads.iter().find(|(n, _, _)| *n == name) {
                tracked.push((t, g.clone()));
                strategy = Some(c);
            }
        }
    }
    match strategy {
        None => Tensor::from_primitive::<Cube>(total),
        Some(Checkpointing::None) => Tensor::from_primitive::<Autodiff<Cube, NoCheckpointing>>(
            track::<Cube, NoCheckpointing>(total, tracked),
        ),
        Some(Checkpointing::Balanced) => Tensor::from_primitive::<
            Autodiff<Cube, BalancedCheckpointing>,
        >(track::<Cube, BalancedCheckpointing>(
            total, tracked,
        )),
    }
}

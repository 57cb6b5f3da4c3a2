//! A step's Burn tensors by name, taken apart into their wgpu-backend primitives.

use crate::tensors::FusionPrimitive;
use burn::backend::tensor::FloatTensor;
use burn::backend::Autodiff;
use burn::tensor::{Device, Int, Tensor};
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
use burn_cubecl::Cube;

/// The gradient-checkpointing strategy of an autodiff tensor's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checkpointing {
    None,
    Balanced,
}

/// A float input: untracked (a plain wgpu tensor) or an autodiff tensor.
pub(crate) enum FloatInput {
    Plain(FusionPrimitive),
    Tracked(FloatTensor<Autodiff<Cube>>, Checkpointing),
}

impl FloatInput {
    /// The primitive lossfuse reads.
    pub fn primitive(&self) -> FusionPrimitive {
        match self {
            FloatInput::Plain(p) => p.clone(),
            FloatInput::Tracked(t, _) => t.primitive().clone(),
        }
    }
}

pub(crate) enum Item {
    Float(FloatInput),
    Int(FusionPrimitive),
    /// Not a tensor of Burn's wgpu backend: refused by name at `forward`.
    Foreign(&'static str),
}

/// The tensors of one step, by the names the loss config uses (the roles: logits, labels,
/// embeddings, session ids, sample weights). Float tensors may be autodiff tensors: the total's
/// gradient reaches those lossfuse differentiates.
#[derive(Default)]
pub struct Inputs {
    pub(crate) items: Vec<(String, Item)>,
    /// The first tensor's device.
    pub(crate) device: Option<Device>,
}

impl Inputs {
    /// No tensors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A float tensor (logits, predictions, embeddings, float labels, sample weights).
    pub fn float<const D: usize>(mut self, name: impl Into<String>, tensor: Tensor<D>) -> Self {
        self.device.get_or_insert_with(|| tensor.device());
        let item = float_input(tensor).map_or(Item::Foreign("float"), Item::Float);
        self.items.push((name.into(), item));
        self
    }

    /// An int tensor (class ids, integer labels, session ids).
    pub fn int<const D: usize>(mut self, name: impl Into<String>, tensor: Tensor<D, Int>) -> Self {
        self.device.get_or_insert_with(|| tensor.device());
        let item = int_input(tensor).map_or(Item::Foreign("int"), Item::Int);
        self.items.push((name.into(), item));
        self
    }
}

fn float_input<const D: usize>(tensor: Tensor<D>) -> Option<FloatInput> {
    if let Ok(p) = tensor.clone().try_into_primitive::<Cube>() {
        return Some(FloatInput::Plain(p));
    }
    if let Ok(t) = tensor
        .clone()
        .try_into_primitive::<Autodiff<Cube, NoCheckpointing>>()
    {
        return Some(FloatInput::Tracked(t, Checkpointing::None));
    }
    let t = tensor
        .try_into_primitive::<Autodiff<Cube, BalancedCheckpointing>>()
        .ok()?;
    Some(FloatInput::Tracked(t, Checkpointing::Balanced))
}

fn int_input<const D: usize>(tensor: Tensor<D, Int>) -> Option<FusionPrimitive> {
    if let Ok(p) = tensor.clone().try_into_primitive::<Cube>() {
        return Some(p);
    }
    if let Ok(p) = tensor
        .clone()
        .try_into_primitive::<Autodiff<Cube, NoCheckpointing>>()
    {
        return Some(p);
    }
    tensor
        .try_into_primitive::<Autodiff<Cube, BalancedCheckpointing>>()
        .ok()
}

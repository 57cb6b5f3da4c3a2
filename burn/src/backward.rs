//! The autodiff node of a lossfuse step: the total's gradient with respect to each
//! differentiable input is lossfuse's gradient times the upstream gradient (a custom `Backward`
//! op, as Burn's `examples/custom-wgpu-kernel` writes one).
//!
//! Burn's `Backward` has a fixed number of parents, a step any number of differentiable inputs;
//! so the total is carried through one two-parent node per input: `[carried, input]`, whose
//! output is the total itself (no arithmetic) and whose backward passes the upstream gradient to
//! `carried` and `G · upstream` to `input`.

use burn::backend::tensor::FloatTensor;
use burn::backend::AutodiffBackend;
use burn::backend::{Backend, Shape};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::Autodiff;

/// An autodiff float primitive over `B` (burn-autodiff's `AutodiffTensor`, unnamed outside it).
pub(crate) type Tracked<B, C> = FloatTensor<Autodiff<B, C>>;

/// d total / d input, held until the backward pass.
#[derive(Debug)]
struct LossGrad;

impl<B: Backend> Backward<B, 2> for LossGrad {
    /// lossfuse's gradient of the input, and a shape of ones of its rank (the upstream
    /// gradient, one value, broadcast over it).
    type State = (FloatTensor<B>, Shape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [carried, input] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        let (grad, ones) = ops.state;
        if let Some(node) = input {
            let scale = B::float_reshape(upstream.clone(), ones);
            grads.register::<B>(node.id, B::float_mul(grad, scale));
        }
        if let Some(node) = carried {
            grads.register::<B>(node.id, upstream);
        }
    }
}

/// The total as an autodiff tensor whose backward gives each `(input, grad)` its gradient.
pub(crate) fn track<B: Backend, C: CheckpointStrategy>(
    total: FloatTensor<B>,
    inputs: Vec<(Tracked<B, C>, FloatTensor<B>)>,
) -> Tracked<B, C> {
    let mut carried = <Autodiff<B, C> as AutodiffBackend>::from_inner(total);
    for (input, grad) in inputs {
        let ones = Shape::from(vec![
            1;
            burn::backend::TensorMetadata::shape(&grad).num_dims()
        ]);
        let value = carried.primitive().clone();
        carried = match LossGrad
            .prepare::<C>([carried.node(), input.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((grad, ones), value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        };
    }
    carried
}

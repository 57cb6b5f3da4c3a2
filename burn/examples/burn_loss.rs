//! The README's Burn example: two lossfuse terms on a Burn model, trained with Burn's optimizer.

use burn::backend::wgpu::WgpuBackend;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lossfuse_burn::{init, Inputs, LossfuseLoss};

#[derive(Module, Debug)]
struct Model {
    class_head: Linear,
    ctr_head: Linear,
}

fn main() -> Result<(), lossfuse::Error> {
    let (device, engine) = init(WgpuBackend::Auto)?; // one wgpu device for Burn and lossfuse
    let device = device.autodiff();
    let loss = LossfuseLoss::from_toml(
        "loss_weight_strategy = 'uncertainty'\n\
         [[losses]]\nname = 'ce'\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'class'\nlearn_loss_weight = true\n\
         [[losses]]\nname = 'ctr'\nloss_type = 'classification'\nlogits = 'ctr'\nlabels = 'click'\nlearn_loss_weight = true\n",
        &engine,
    )?;
    let mut model = Model {
        class_head: LinearConfig::new(32, 10).init(&device),
        ctr_head: LinearConfig::new(32, 1).init(&device),
    };
    let mut optimizer = AdamConfig::new().init();
    let b: usize = 256;
    let features = Tensor::<2>::random([b, 32], Distribution::Default, &device);
    let class: Vec<i32> = (0..b).map(|i| (i % 10) as i32).collect();
    let click: Vec<f32> = (0..b).map(|i| (i % 4 == 0) as i32 as f32).collect();
    let mut first = None;
    for step in 0..30 {
        let out = loss.forward(
            Inputs::new()
                .float("logits", model.class_head.forward(features.clone()))
                .int(
                    "class",
                    Tensor::<1, Int>::from_data(TensorData::new(class.clone(), [b]), &device),
                )
                .float("ctr", model.ctr_head.forward(features.clone()).reshape([b]))
                .float(
                    "click",
                    Tensor::<1>::from_data(TensorData::new(click.clone(), [b]), &device),
                ),
        )?;
        let total = out.report.total;
        first.get_or_insert(total);
        if step % 10 == 0 {
            println!(
                "step {step}: total {total:.4}, ce {:.4}",
                out.term("ce").unwrap_or(f32::NAN)
            );
        }
        let grads = GradientsParams::from_grads(out.total.backward(), &model);
        model = optimizer.step(1e-2, model, grads);
    }
    let last = loss.forward(
        Inputs::new()
            .float("logits", model.class_head.forward(features.clone()))
            .int(
                "class",
                Tensor::<1, Int>::from_data(TensorData::new(class, [b]), &device),
            )
            .float("ctr", model.ctr_head.forward(features).reshape([b]))
            .float(
                "click",
                Tensor::<1>::from_data(TensorData::new(click, [b]), &device),
            ),
    )?;
    let (first, last) = (first.unwrap_or(f32::NAN), last.report.total);
    println!(
        "total {first:.4} -> {last:.4}: {}",
        if last < first {
            "falls"
        } else {
            "DOES NOT FALL"
        }
    );
    assert!(last < first, "the loss must fall");
    Ok(())
}

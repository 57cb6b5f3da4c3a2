//! The plan's GPU state travels in Burn's module records: a checkpoint of a model holding a
//! `LossfuseLoss` restores it bit for bit (memory bank, learned weights, Adam moments), Burn's
//! optimizer leaves it alone, and a record of another config is refused by the next `forward`.

mod common;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use common::{devices, host};
use lossfuse::{DType, Engine, LossConfig, Shapes};
use lossfuse_burn::{Inputs, LossfuseLoss};

const CROSS_BATCH: &str = "loss_weight_strategy = 'uncertainty'\n\
[[losses]]\nname = 'xbatch'\nloss_type = 'cross_batch_softmax'\nuser = 'u'\nitem = 'v'\nbank_size = 64\nlearn_loss_weight = true\n\
[[losses]]\nname = 'inbatch'\nloss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\nlearn_loss_weight = true\n";

const B: usize = 16;
const D: usize = 8;

#[derive(Module, Debug)]
struct Towers {
    user: Linear,
    item: Linear,
    loss: LossfuseLoss,
}

fn towers(device: &Device, engine: &Engine, toml: &str) -> Towers {
    let shapes = Shapes::new()
        .tensor("u", &[B, D], DType::F32)
        .tensor("v", &[B, D], DType::F32);
    let config = LossConfig::from_toml_str(toml).unwrap();
    Towers {
        user: LinearConfig::new(D, D).init(device),
        item: LinearConfig::new(D, D).init(device),
        loss: LossfuseLoss::planned(config, &shapes, device, engine).unwrap(),
    }
}

/// One step on fixed features: the total (and the loss output's backward for the optimizer).
fn step(model: &Towers, x: &Tensor<2>) -> lossfuse_burn::LossOutput {
    let inputs = Inputs::new()
        .float("u", model.user.forward(x.clone()))
        .float("v", model.item.forward(x.clone().flip([0])));
    model.loss.forward(inputs).unwrap()
}

#[test]
fn a_checkpoint_restores_the_state_bit_for_bit() {
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let x = Tensor::<2>::random([B, D], Distribution::Default, &device);
        let model = towers(&device, &engine, CROSS_BATCH);
        for _ in 0..3 {
            step(&model, &x);
        }
        let saved = model.loss.save_state().unwrap();
        let record = model.clone().into_record();
        let path =
            std::env::temp_dir().join(format!("lossfuse-burn-{name}-{}.bpk", std::process::id()));
        model.clone().save_file(&path).unwrap();
        let later: Vec<f32> = (0..2).map(|_| step(&model, &x).report.total).collect();
        for resumed in [
            towers(&device, &engine, CROSS_BATCH).load_record(record),
            towers(&device, &engine, CROSS_BATCH).load_file(&path),
        ] {
            assert_eq!(resumed.loss.save_state().unwrap(), saved, "{name}");
            let again: Vec<f32> = (0..2).map(|_| step(&resumed, &x).report.total).collect();
            assert_eq!(again, later, "{name}: the resumed run continues exactly");
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn the_optimizer_leaves_the_state_alone() {
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let device = device.autodiff();
        let x = Tensor::<2>::random([B, D], Distribution::Default, &device);
        let mut model = towers(&device, &engine, CROSS_BATCH);
        let mut optimizer = AdamConfig::new().init();
        let weights = host(&model.user.weight.val().inner());
        for _ in 0..5 {
            let out = step(&model, &x);
            let before = model.loss.save_state().unwrap();
            let grads = GradientsParams::from_grads(out.total.backward(), &model);
            model = optimizer.step(5e-2, model, grads);
            assert_eq!(model.loss.save_state().unwrap(), before, "{name}");
        }
        // The optimizer did move the towers.
        let moved = host(&model.user.weight.val().inner());
        assert!(
            moved != weights && moved.iter().all(|w| w.is_finite()),
            "{name}"
        );
    }
}

#[test]
fn a_record_of_another_config_is_refused_by_the_next_forward() {
    let other = CROSS_BATCH.replace("bank_size = 64", "bank_size = 32");
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let x = Tensor::<2>::random([B, D], Distribution::Default, &device);
        let source = towers(&device, &engine, &other);
        step(&source, &x);
        let target = towers(&device, &engine, CROSS_BATCH);
        step(&target, &x);
        let before = target.loss.save_state().unwrap();
        // Another bank size is another state size: Burn's loader names the shape mismatch.
        let refused = target.clone().try_load_record(source.into_record());
        assert!(refused.is_err(), "{name}");
        assert_eq!(target.loss.save_state().unwrap(), before, "{name}");
        // Same size, other config: lossfuse's load refuses it at the next forward.
        let swapped = CROSS_BATCH.replace("name = 'xbatch'", "name = 'ybatch'");
        let source = towers(&device, &engine, &swapped);
        step(&source, &x);
        let target = target.load_record(source.into_record());
        let inputs = Inputs::new()
            .float("u", target.user.forward(x.clone()))
            .float("v", target.item.forward(x.clone()));
        let e = target
            .loss
            .forward(inputs)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("state"), "{name}: {e}");
        assert_eq!(target.loss.save_state().unwrap(), before, "{name}");
        assert!(step(&target, &x).report.total.is_finite());
    }
}

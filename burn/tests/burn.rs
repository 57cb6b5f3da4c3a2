//! lossfuse inside Burn, on both software adapters: gradients through a Burn model are lossfuse's
//! own, bit for bit where nothing is added; fused Burn work is resolved before the step; errors are
//! `Err`s naming the tensor.

use burn::nn::LinearConfig;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lossfuse::{Batch, DType, Engine, LossConfig, Shapes};
use lossfuse_burn::{Inputs, LossfuseLoss};
mod common;
use common::{devices, host};

const SOFTMAX_AND_SIGMOID: &str = "\
[[losses]]\nname = 'ce'\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'class'\n\
[[losses]]\nname = 'ctr'\nloss_type = 'classification'\nlogits = 'ctr'\nlabels = 'click'\nweight = 0.5\n";

/// lossfuse's own step on host copies of the same values: its report and d total / d logits,
/// d total / d ctr.
fn own_step(
    engine: &Engine,
    logits: &[f32],
    class: &[i32],
    ctr: &[f32],
    click: &[f32],
) -> (lossfuse::Report, Vec<f32>, Vec<f32>) {
    let (b, c) = (class.len(), logits.len() / class.len());
    let config = LossConfig::from_toml_str(SOFTMAX_AND_SIGMOID).unwrap();
    let shapes = Shapes::new()
        .tensor("logits", &[b, c], DType::F32)
        .tensor("class", &[b], DType::I32)
        .tensor("ctr", &[b], DType::F32)
        .tensor("click", &[b], DType::F32);
    let mut plan = engine.plan(&config, &shapes).unwrap();
    let batch = Batch::new()
        .tensor("logits", logits)
        .ids("class", class)
        .tensor("ctr", ctr)
        .tensor("click", click);
    let out = plan.step(&batch).unwrap();
    let report = out.report_blocking().unwrap();
    (
        report,
        out.read_grad("logits").unwrap(),
        out.read_grad("ctr").unwrap(),
    )
}

/// A Burn model (two linear heads on shared features, fused elementwise work in between) trained
/// through lossfuse: the gradients reaching the heads' outputs are lossfuse's own bit for bit,
/// scaled exactly by an upstream factor, and the weights' gradients are Burn's matmul of them.
#[test]
fn gradients_through_a_burn_model_are_lossfuses_own() {
    let (b, d, c) = (96, 16, 7);
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let device = device.autodiff();
        let head = LinearConfig::new(d, c).init(&device);
        let ctr_head = LinearConfig::new(d, 1).init(&device);
        let x = Tensor::<2>::random([b, d], Distribution::Default, &device);
        // Fused elementwise work before the loss: resolved before lossfuse binds the buffers.
        let logits = head.forward(x.clone().mul_scalar(2.0).tanh());
        let ctr = ctr_head.forward(x.clone()).reshape([b]);
        let class: Vec<i32> = (0..b as i32).map(|i| (i * 5 + 1) % c as i32).collect();
        let click: Vec<f32> = (0..b).map(|i| (i % 3 == 0) as i32 as f32).collect();
        let class_t = Tensor::<1, Int>::from_data(TensorData::new(class.clone(), [b]), &device);
        let click_t = Tensor::<1>::from_data(TensorData::new(click.clone(), [b]), &device);
        let loss = LossfuseLoss::from_toml(SOFTMAX_AND_SIGMOID, &engine).unwrap();
        let inputs = Inputs::new()
            .float("logits", logits.clone())
            .int("class", class_t)
            .float("ctr", ctr.clone())
            .float("click", click_t);
        let out = loss.forward(inputs).unwrap();
        let (report, g_logits, g_ctr) =
            own_step(&engine, &host(&logits), &class, &host(&ctr), &click);
        assert_eq!(out.report, report, "{name}");
        assert_eq!(host(&out.total), vec![report.total], "{name}");
        assert_eq!(out.term("ce"), Some(report.terms[0].value));
        let grads = out.total.mul_scalar(2.5).backward();
        let scaled = |g: &[f32]| g.iter().map(|v| v * 2.5).collect::<Vec<f32>>();
        // Through the heads: weight gradients are Burn's matmul of lossfuse's output gradients.
        let close = |what: &str, got: Vec<f32>, want: Vec<f32>| {
            assert_eq!(got.len(), want.len(), "{name} {what}");
            for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{name} {what} {i}: {a} vs {e}"
                );
            }
        };
        let features = x.clone().mul_scalar(2.0).tanh().inner();
        let dev = features.device();
        let g = Tensor::<2>::from_data(TensorData::new(scaled(&g_logits), [b, c]), &dev);
        let want = host(&features.transpose().matmul(g.clone()));
        close(
            "class weight",
            host(&head.weight.grad(&grads).unwrap().inner()),
            want,
        );
        let bias = head.bias.as_ref().unwrap().grad(&grads).unwrap();
        close(
            "class bias",
            host(&bias.inner()),
            host(&g.sum_dim(0).reshape([c])),
        );
        let g = Tensor::<2>::from_data(TensorData::new(scaled(&g_ctr), [b, 1]), &dev);
        let want = host(&x.clone().inner().transpose().matmul(g));
        close(
            "ctr weight",
            host(&ctr_head.weight.grad(&grads).unwrap().inner()),
            want,
        );
    }
}

/// Without autodiff the total is a plain tensor, and gradients are not asked for.
#[test]
fn inference_tensors_give_a_plain_total() {
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let (b, c): (usize, usize) = (32, 4);
        let logits = Tensor::<2>::random([b, c], Distribution::Default, &device);
        let class: Vec<i32> = (0..b as i32).map(|i| i % c as i32).collect();
        let ctr = Tensor::<1>::random([b], Distribution::Default, &device);
        let click: Vec<f32> = (0..b).map(|i| (i % 2) as f32).collect();
        let loss = LossfuseLoss::from_toml(SOFTMAX_AND_SIGMOID, &engine).unwrap();
        let out = loss
            .forward(
                Inputs::new()
                    .float("logits", logits.clone())
                    .int(
                        "class",
                        Tensor::<1, Int>::from_data(TensorData::new(class.clone(), [b]), &device),
                    )
                    .float("ctr", ctr.clone())
                    .float(
                        "click",
                        Tensor::<1>::from_data(TensorData::new(click.clone(), [b]), &device),
                    ),
            )
            .unwrap();
        let (report, _, _) = own_step(&engine, &host(&logits), &class, &host(&ctr), &click);
        assert_eq!(out.report, report, "{name}");
        assert!(!out.total.is_autodiff());
    }
}

/// Two tracked inputs of one term (in-batch softmax over user and item towers): each gets its
/// own gradient through the carried node.
#[test]
fn every_tracked_input_gets_its_gradient() {
    let toml =
        "[[losses]]\nloss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\ntemperature = 0.5\n";
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let device = device.autodiff();
        let (b, d) = (24, 8);
        let u = Tensor::<2>::random([b, d], Distribution::Default, &device).require_grad();
        let v = Tensor::<2>::random([b, d], Distribution::Default, &device).require_grad();
        let loss = LossfuseLoss::from_toml(toml, &engine).unwrap();
        let out = loss
            .forward(Inputs::new().float("u", u.clone()).float("v", v.clone()))
            .unwrap();
        let grads = out.total.mul_scalar(0.75).backward();
        let config = LossConfig::from_toml_str(toml).unwrap();
        let shapes =
            Shapes::new()
                .tensor("u", &[b, d], DType::F32)
                .tensor("v", &[b, d], DType::F32);
        let mut plan = engine.plan(&config, &shapes).unwrap();
        let (hu, hv) = (host(&u), host(&v));
        let own = plan
            .step(&Batch::new().tensor("u", &hu).tensor("v", &hv))
            .unwrap();
        // Bit for bit: lossfuse's gradient times the upstream 0.75 (one f32 product each).
        let scaled = |g: Vec<f32>| g.into_iter().map(|x| x * 0.75).collect::<Vec<f32>>();
        assert_eq!(
            host(&u.grad(&grads).unwrap()),
            scaled(own.read_grad("u").unwrap()),
            "{name}"
        );
        assert_eq!(
            host(&v.grad(&grads).unwrap()),
            scaled(own.read_grad("v").unwrap()),
            "{name}"
        );
    }
}

/// Bad input is an `Err` naming the tensor, and the loss still works afterwards.
#[test]
fn bad_inputs_are_errors_naming_the_tensor() {
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let (b, c) = (16, 3);
        let loss = LossfuseLoss::from_toml(SOFTMAX_AND_SIGMOID, &engine).unwrap();
        let logits = Tensor::<2>::random([b, c], Distribution::Default, &device);
        let ctr = Tensor::<1>::random([b], Distribution::Default, &device);
        let click = Tensor::<1>::zeros([b], &device);
        let class = |ids: Vec<i32>| Tensor::<1, Int>::from_data(TensorData::new(ids, [b]), &device);
        let inputs = |ids: Vec<i32>| {
            Inputs::new()
                .float("logits", logits.clone())
                .int("class", class(ids))
                .float("ctr", ctr.clone())
                .float("click", click.clone())
        };
        let missing = Inputs::new()
            .float("logits", logits.clone())
            .int("class", class(vec![0; b]));
        let e = loss
            .forward(missing)
            .err()
            .expect("ctr is missing")
            .to_string();
        assert!(e.contains("'ctr'"), "{name}: {e}");
        // A class id outside [0, C) read from the device: refused by the GPU check.
        let mut ids = vec![1; b];
        ids[5] = 9;
        let e = loss
            .forward(inputs(ids))
            .err()
            .expect("class 9 of 3")
            .to_string();
        assert!(
            e.contains("'class'") && e.contains("outside"),
            "{name}: {e}"
        );
        assert!(loss.forward(inputs(vec![2; b])).is_ok(), "{name}");
        // A batch of another size: the plan is rebuilt for it.
        let small = Inputs::new()
            .float("logits", Tensor::<2>::zeros([4, c], &device))
            .int(
                "class",
                Tensor::<1, Int>::from_data(TensorData::new(vec![0i32; 4], [4]), &device),
            )
            .float("ctr", Tensor::<1>::zeros([4], &device))
            .float("click", Tensor::<1>::zeros([4], &device));
        let out = loss.forward(small).unwrap();
        assert!(
            (out.term("ce").unwrap() - (3f32).ln()).abs() < 1e-6,
            "{name}"
        );
    }
}

/// A stateful term over several steps (the cross-batch bank fills from the bound item
/// buffers, wherever Burn placed them): every step's report is the own plan's on the same values.
#[test]
fn a_memory_bank_fills_from_burns_buffers() {
    let toml =
        "[[losses]]\nloss_type = 'cross_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'\n\
                bank_size = 48\nsimilarity = 'cosine'\ntemperature = 0.2\n";
    let (_turn, devices) = devices();
    for (name, device, engine) in devices {
        let (b, d) = (16usize, 8usize);
        let loss = LossfuseLoss::from_toml(toml, &engine).unwrap();
        let config = LossConfig::from_toml_str(toml).unwrap();
        let shapes = Shapes::new()
            .tensor("u", &[b, d], DType::F32)
            .tensor("v", &[b, d], DType::F32)
            .tensor("ids", &[b], DType::I32);
        let mut plan = engine.plan(&config, &shapes).unwrap();
        for step in 0..5usize {
            // Other tensors allocated in between place each step's inputs elsewhere in the pool.
            let _spacer = Tensor::<1>::zeros([37 * (step + 1)], &device);
            let u = Tensor::<2>::random([b, d], Distribution::Default, &device);
            let v = Tensor::<2>::random([b, d], Distribution::Default, &device);
            let ids: Vec<i32> = (0..b as i32).map(|i| (i * 7 + step as i32) % 40).collect();
            let ids_t = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [b]), &device);
            let out = loss
                .forward(
                    Inputs::new()
                        .float("u", u.clone())
                        .float("v", v.clone())
                        .int("ids", ids_t),
                )
                .unwrap();
            let (hu, hv) = (host(&u), host(&v));
            let own = plan
                .step(
                    &Batch::new()
                        .tensor("u", &hu)
                        .tensor("v", &hv)
                        .ids("ids", &ids),
                )
                .unwrap()
                .report_blocking()
                .unwrap();
            assert_eq!(out.report, own, "{name} step {step}");
        }
    }
}

//! Faults of the device and of device buffers: a buffer of another device, a lost device, a plan
//! larger than the adapter allows. Each is an error naming what is at fault, never a panic, and a
//! refused step changes no state.

mod common;
use common::*;
use lossfuse::{Batch, DType, Engine, EngineOptions, Error, LossConfig, Shapes};

const CONFIG: &str = "loss_weight_strategy = 'uncertainty'\n\
    [uncertainty]\noptimizer = 'adam'\nlearning_rate = 0.01\n\
    [[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nlearn_loss_weight = true\n\
    [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nlearn_loss_weight = true\n";

fn inputs(b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(3);
    let x = (0..b).map(|_| rng.range(-3.0, 3.0) as f32).collect();
    let y = (0..b).map(|_| (rng.unit() < 0.3) as i32 as f32).collect();
    (x, y)
}

fn is_gl(engine: &Engine) -> bool {
    engine.adapter().backend.eq_ignore_ascii_case("gl")
}

#[test]
fn a_buffer_of_another_device_is_an_error_naming_the_tensor() {
    let b = 500;
    let (x, y) = inputs(b);
    let config = LossConfig::from_toml_str(CONFIG).unwrap();
    let shapes = Shapes::new()
        .tensor("x", &[b], DType::F32)
        .tensor("y", &[b], DType::F32);
    let others = engines();
    for engine in engines() {
        let mut plan = engine.plan(&config, &shapes).unwrap();
        plan.step(&Batch::new().tensor("x", &x).tensor("y", &y))
            .unwrap()
            .report_blocking()
            .unwrap();
        let before = plan.save_state().unwrap();
        let mine = device_buffer(engine.device(), engine.queue(), &y);
        for other in &others {
            let theirs = device_buffer(other.device(), other.queue(), &x);
            if is_gl(&engine) || is_gl(other) {
                // Each GL engine has a wgpu instance of its own, and wgpu cannot tell a buffer's
                // instance: its id may name a buffer of this device. It must not panic.
                let _ = plan.step(&Batch::new().buffer("x", &theirs).buffer("y", &mine));
                plan.load_state(&before).unwrap();
                continue;
            }
            let e = plan
                .step(&Batch::new().buffer("x", &theirs).buffer("y", &mine))
                .err()
                .expect("a buffer of another device is refused");
            assert!(matches!(e, Error::Tensor { .. }), "{e:?}");
            assert!(e.to_string().contains("'x'"), "{e}");
            assert!(e.to_string().contains("device"), "{e}");
            assert_eq!(plan.save_state().unwrap(), before);
        }
        // The plan goes on with buffers of its own device.
        let own = device_buffer(engine.device(), engine.queue(), &x);
        let out = plan
            .step(&Batch::new().buffer("x", &own).buffer("y", &mine))
            .unwrap();
        assert!(out.report_blocking().unwrap().total.is_finite());
    }
}

#[test]
fn a_lost_device_is_an_error_from_the_next_step() {
    let b = 300;
    let (x, y) = inputs(b);
    let config = LossConfig::from_toml_str(CONFIG).unwrap();
    let shapes = Shapes::new()
        .tensor("x", &[b], DType::F32)
        .tensor("y", &[b], DType::F32);
    for adapter in Engine::enumerate() {
        let engine = Engine::from_adapter(&adapter, EngineOptions::default()).unwrap();
        let mut plan = engine.plan(&config, &shapes).unwrap();
        let batch = Batch::new().tensor("x", &x).tensor("y", &y);
        plan.step(&batch).unwrap().report_blocking().unwrap();
        engine.device().destroy();
        for _ in 0..2 {
            let result = plan
                .step(&batch)
                .and_then(|out| out.report_blocking().map(|_| ()));
            let e = result.expect_err("a step on a destroyed device fails");
            assert!(matches!(e, Error::Gpu(_)), "{e:?}");
        }
        assert!(engine.plan(&config, &shapes).is_err());
    }
}

#[test]
fn a_plan_larger_than_the_adapter_allows_says_what_it_asked() {
    for engine in engines() {
        let max = engine.device().limits().max_buffer_size;
        // One f32 column of more rows than the largest buffer holds bytes.
        let rows = (max / 4 + 1) as usize;
        let config = LossConfig::from_toml_str(
            "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n",
        )
        .unwrap();
        let shapes =
            Shapes::new()
                .tensor("x", &[rows], DType::F32)
                .tensor("y", &[rows], DType::F32);
        let e = engine.plan(&config, &shapes).err().expect("too large");
        let text = e.to_string();
        assert!(text.contains(&format!("{}", rows as u64 * 4)), "{text}");
        assert!(text.contains(&format!("{max}")), "{text}");
    }
}

#[test]
fn the_gpu_value_check_finds_the_first_bad_element_across_workgroups_and_chunks() {
    let b = 100_000;
    let (mut x, y) = inputs(b);
    x[99_999] = f32::NAN;
    x[77_777] = f32::INFINITY;
    let config = LossConfig::from_toml_str(CONFIG).unwrap();
    let shapes = Shapes::new()
        .tensor("x", &[b], DType::F32)
        .tensor("y", &[b], DType::F32);
    for options in [
        EngineOptions::default(),
        EngineOptions {
            max_binding_bytes: Some(64 * 1024),
            ..Default::default()
        },
    ] {
        for engine in engines_with(options) {
            let mut plan = engine.plan(&config, &shapes).unwrap();
            let before = plan.save_state().unwrap();
            let xb = device_buffer(engine.device(), engine.queue(), &x);
            let yb = device_buffer(engine.device(), engine.queue(), &y);
            let out = plan
                .step(&Batch::new().buffer("x", &xb).buffer("y", &yb))
                .unwrap();
            let e = out
                .report_blocking()
                .expect_err("an Inf in a device buffer");
            let text = e.to_string();
            assert!(
                text.contains("'x'") && text.contains("element 77777"),
                "{text}"
            );
            assert_eq!(plan.save_state().unwrap(), before);
            // The flags were cleared: a clean step after it is accepted.
            let clean = device_buffer(engine.device(), engine.queue(), &inputs(b).0);
            let out = plan
                .step(&Batch::new().buffer("x", &clean).buffer("y", &yb))
                .unwrap();
            assert!(out.report_blocking().unwrap().total.is_finite());
        }
    }
}

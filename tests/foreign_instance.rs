//! A buffer made by another wgpu instance. wgpu 30 cannot tell a buffer's instance; its id is
//! looked up in the plan's instance, where it is missing (wgpu panics, which lossfuse catches) or
//! names another buffer. Either way the step is an error naming the tensor and the state is kept.
//! Alone in its test binary, so that the ids the instances hand out are predictable.

mod common;
use common::*;
use lossfuse::wgpu;
use lossfuse::{Batch, DType, Error, LossConfig, Shapes};

#[test]
fn a_buffer_of_another_instance_is_refused() {
    let b = 256;
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..b).map(|_| rng.range(-2.0, 2.0) as f32).collect();
    let y: Vec<f32> = (0..b).map(|_| (rng.unit() < 0.5) as i32 as f32).collect();
    let config = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\n",
    )
    .unwrap();
    let shapes = Shapes::new()
        .tensor("x", &[b], DType::F32)
        .tensor("y", &[b], DType::F32);
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster_block(instance.request_adapter(&Default::default())).unwrap();
    let (device, _queue) = pollster_block(adapter.request_device(&Default::default())).unwrap();
    // Ids of the foreign instance: the first few collide with the plan's own buffers, the last
    // with nothing in the plan's instance.
    let foreign: Vec<wgpu::Buffer> = (0..400)
        .map(|_| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("foreign"),
                size: (b * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })
        .collect();
    for engine in engines() {
        let mut plan = engine.plan(&config, &shapes).unwrap();
        plan.step(&Batch::new().tensor("x", &x).tensor("y", &y))
            .unwrap()
            .report_blocking()
            .unwrap();
        let before = plan.save_state().unwrap();
        for buffer in [&foreign[0], &foreign[1], &foreign[399]] {
            match plan.step(&Batch::new().buffer("x", buffer).tensor("y", &y)) {
                Err(e @ Error::Tensor { .. }) => {
                    eprintln!("refused: {e}");
                    assert!(e.to_string().contains("'x'"), "{e}")
                }
                Err(e) => panic!("expected an error naming 'x', got {e:?}"),
                Ok(_) => panic!("a buffer of another instance was bound"),
            }
            assert_eq!(plan.save_state().unwrap(), before);
        }
        let out = plan
            .step(&Batch::new().tensor("x", &x).tensor("y", &y))
            .unwrap();
        assert!(out.report_blocking().unwrap().total.is_finite());
    }
}

fn pollster_block<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

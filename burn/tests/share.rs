//! Burn and lossfuse on a wgpu setup the application acquired itself (`lossfuse_burn::share`):
//! one device, and the step's results are those of lossfuse's own plan on that device.

use burn::backend::wgpu::WgpuSetup;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lossfuse::wgpu;
use lossfuse::{Batch, DType, Shapes};
use lossfuse_burn::{share, Inputs, LossfuseLoss};

fn own_setup(backends: wgpu::Backends) -> Option<WgpuSetup> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).ok()?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("the application's device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .ok()?;
    let backend = adapter.get_info().backend;
    Some(WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    })
}

#[test]
fn both_run_on_the_applications_own_device() {
    let require = std::env::var("LOSSFUSE_REQUIRE").unwrap_or_default();
    let Some(setup) = own_setup(wgpu::Backends::VULKAN) else {
        assert!(!require.contains("vulkan"), "no Vulkan adapter");
        return;
    };
    let app_device = setup.device.clone();
    let (device, engine) = share(setup).unwrap();
    assert!(
        engine.device() == &app_device,
        "lossfuse runs on the application's device"
    );
    let toml =
        "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'class'\n";
    let (b, c) = (40usize, 6usize);
    let logits = Tensor::<2>::random([b, c], Distribution::Default, &device);
    let class: Vec<i32> = (0..b).map(|i| (i % c) as i32).collect();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(class.clone(), [b]), &device);
    let loss = LossfuseLoss::from_toml(toml, &engine).unwrap();
    let out = loss
        .forward(
            Inputs::new()
                .float("logits", logits.clone())
                .int("class", ids),
        )
        .unwrap();
    let host: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
    let shapes =
        Shapes::new()
            .tensor("logits", &[b, c], DType::F32)
            .tensor("class", &[b], DType::I32);
    let config = lossfuse::LossConfig::from_toml_str(toml).unwrap();
    let mut plan = engine.plan(&config, &shapes).unwrap();
    let own = plan
        .step(&Batch::new().tensor("logits", &host).ids("class", &class))
        .unwrap()
        .report_blocking()
        .unwrap();
    assert_eq!(out.report, own);
}

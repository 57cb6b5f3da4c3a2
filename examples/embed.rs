//! A trainer embedding lossfuse: the trainer owns the device and the tensors' buffers; lossfuse
//! binds them without copies and hands back the gradient as a buffer. The README shows this code.

use lossfuse::wgpu;
use lossfuse::{Batch, DType, Engine, LossConfig, Shapes};

fn storage_buffer(device: &wgpu::Device, queue: &wgpu::Queue, values: &[f32]) -> wgpu::Buffer {
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("trainer tensor"),
        size: (values.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    queue.write_buffer(&b, 0, &bytes);
    b
}

fn main() -> lossfuse::Result<()> {
    // Stand-in for the trainer's own device: any wgpu device works.
    let owner = Engine::new()?;
    let (device, queue) = (owner.device().clone(), owner.queue().clone());
    let b = 4096;
    let logits: Vec<f32> = (0..b)
        .map(|i| ((i * 7919) % 200) as f32 / 25.0 - 4.0)
        .collect();
    let labels: Vec<f32> = (0..b).map(|i| (i % 5 == 0) as i32 as f32).collect();
    let logits_buf = storage_buffer(&device, &queue, &logits);
    let labels_buf = storage_buffer(&device, &queue, &labels);

    let engine = Engine::from_device(device, queue)?;
    let config = LossConfig::from_toml_str(
        r#"
[[losses]]
loss_type = "classification"
logits = "ctr_logits"
labels = "click"
[[losses]]
loss_type = "binary_focal_loss"
logits = "ctr_logits"
labels = "click"
alpha = 0.25
"#,
    )?;
    let shapes =
        Shapes::new()
            .tensor("ctr_logits", &[b], DType::F32)
            .tensor("click", &[b], DType::F32);
    let mut plan = engine.plan(&config, &shapes)?;
    for step in 0..3 {
        let out = plan.step(
            &Batch::new()
                .buffer("ctr_logits", &logits_buf)
                .buffer("click", &labels_buf),
        )?;
        let grad: &wgpu::Buffer = out.grad("ctr_logits")?;
        let report = out.report_blocking()?;
        println!(
            "step {step}: total {:.6}, gradient buffer of {} bytes, {} bytes uploaded",
            report.total,
            grad.size(),
            out.counters().bytes_uploaded
        );
    }
    let checkpoint = plan.save_state()?;
    plan.load_state(&checkpoint)?;
    Ok(())
}

//! What the Burn tests share: the devices, opened once per process, and host copies.
#![allow(dead_code)]

use burn::backend::wgpu::WgpuBackend;
use burn::tensor::{Device, Tensor};
use lossfuse::Engine;
use lossfuse_burn::init;
use std::sync::OnceLock;

/// Burn's device and lossfuse's engine on it, per graphics API, opened once per process (Burn
/// registers a runtime once).
///
/// The tests take turns (the returned guard): on GL, wgpu-hal gives up (panicking) on its context
/// lock after a second, which two threads stepping on one shared GL device can exceed.
pub fn devices() -> (
    std::sync::MutexGuard<'static, ()>,
    Vec<(&'static str, Device, Engine)>,
) {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    static DEVICES: OnceLock<Vec<(&'static str, Device, Engine)>> = OnceLock::new();
    let devices = DEVICES
        .get_or_init(|| {
            let require = std::env::var("LOSSFUSE_REQUIRE").unwrap_or_default();
            let mut found = Vec::new();
            for (name, api) in [("vulkan", WgpuBackend::Vulkan), ("gl", WgpuBackend::Gl)] {
                match init(api) {
                    Ok((device, engine)) => found.push((name, device, engine)),
                    Err(e) if require.contains(name) => panic!("{name} is required: {e}"),
                    Err(e) => eprintln!("skipping {name}: {e}"),
                }
            }
            assert!(!found.is_empty(), "no wgpu adapter for Burn");
            found
        })
        .clone();
    (turn, devices)
}

pub fn host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone().into_data().try_to_vec::<f32>().unwrap()
}

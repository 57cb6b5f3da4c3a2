//! One wgpu device for Burn and lossfuse, shared either way round.
//!
//! Both run on wgpu 30, so a `wgpu::Device` and `wgpu::Queue` pair serves both: lossfuse's
//! [`Engine::from_device`] takes them as they are, and Burn registers an existing setup with
//! `Device::wgpu_options().setup(..)` (burn-tensor 0.23 `wgpu.rs`).

use burn::backend::wgpu::{WgpuBackend, WgpuSetup};
use burn::tensor::Device;
use lossfuse::{Engine, Error, Result};

/// Burn acquires the device (`Device::wgpu_options().graphics_api(api)`, `Auto` for its own
/// choice) and lossfuse runs on Burn's device and queue: the usual way for a Burn trainer.
pub fn init(api: WgpuBackend) -> Result<(Device, Engine)> {
    let options = Device::wgpu_options();
    let options = match api {
        WgpuBackend::Auto => options,
        api => options.graphics_api(api),
    };
    let (device, setup) = options
        .init_with_setup()
        .map_err(|e| Error::Adapter(format!("Burn could not open its wgpu device: {e}")))?;
    let engine = Engine::from_device(setup.device.clone(), setup.queue.clone())?;
    Ok((device, engine))
}

/// Both run on a setup the application acquired itself (instance, adapter, device, queue):
/// Burn registers it, and lossfuse takes its device and queue. Register a setup once.
pub fn share(setup: WgpuSetup) -> Result<(Device, Engine)> {
    let engine = Engine::from_device(setup.device.clone(), setup.queue.clone())?;
    let device = Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| Error::Adapter(format!("Burn could not register the wgpu setup: {e}")))?;
    Ok((device, engine))
}

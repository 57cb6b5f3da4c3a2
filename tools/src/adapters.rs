//! `lossfuse adapters`: one block per adapter the machine has, with the limits lossfuse plans by.

use crate::error::{CliError, CliResult};
use lossfuse::{AdapterSummary, Engine};
use lossfuse_cli::{out, outln};

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= MIB {
        format!("{n} bytes ({:.1} MiB)", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The printed block of one adapter.
pub fn describe(index: usize, a: &AdapterSummary) -> String {
    let (lo, hi) = a.subgroup_sizes;
    let subgroups = if lo == 0 && hi == 0 {
        "unknown".to_string()
    } else {
        format!("{lo}..{hi}")
    };
    let lines = [
        ("name", a.name.clone()),
        ("backend", a.backend.clone()),
        ("device type", a.device_type.clone()),
        ("driver", a.driver.clone()),
        ("subgroup sizes", subgroups),
        ("max storage binding", bytes(a.max_storage_binding)),
        ("max buffer", bytes(a.max_buffer)),
        (
            "storage buffers per stage",
            a.max_storage_buffers_per_stage.to_string(),
        ),
        (
            "workgroups per dimension",
            a.max_workgroups_per_dimension.to_string(),
        ),
        (
            "invocations per workgroup",
            a.max_invocations_per_workgroup.to_string(),
        ),
        ("workgroup memory", bytes(a.max_workgroup_storage as u64)),
        (
            "timestamps",
            if a.timestamps { "yes" } else { "no" }.to_string(),
        ),
    ];
    let mut s = format!("adapter {index}: {}\n", a.label());
    for (k, v) in lines {
        s.push_str(&format!("  {k:<26} {v}\n"));
    }
    s
}

/// Runs `lossfuse adapters`; no adapter at all is an error.
pub fn run() -> CliResult<()> {
    let adapters = Engine::adapters();
    if adapters.is_empty() {
        return Err(CliError::Lib(lossfuse::Error::Adapter(
            lossfuse::engine::no_adapter_help(),
        )));
    }
    for (i, a) in adapters.iter().enumerate() {
        if i > 0 {
            outln!()?;
        }
        out!("{}", describe(i, a))?;
    }
    Ok(())
}

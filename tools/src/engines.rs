//! Which adapters a command runs on: `--adapter NAME` (repeatable, a case-insensitive substring
//! of "name (backend)"), shared by `lossfuse bench` and `lossfuse check`.

use crate::error::{CliError, CliResult};
use lossfuse::{Engine, EngineOptions};

/// The engines `--adapter` names (each filter must match an adapter; the first match is taken,
/// as `eval --adapter` does), else those `LOSSFUSE_ADAPTER` names, else every adapter. Only the
/// chosen adapters are opened.
pub fn open(filters: &[String], options: EngineOptions) -> CliResult<Vec<Engine>> {
    let env = std::env::var("LOSSFUSE_ADAPTER")
        .ok()
        .filter(|s| !s.is_empty());
    let from = if filters.is_empty() {
        "LOSSFUSE_ADAPTER"
    } else {
        "--adapter"
    };
    let filters: Vec<String> = if filters.is_empty() {
        env.into_iter().collect()
    } else {
        filters.to_vec()
    };
    let adapters = Engine::enumerate();
    if adapters.is_empty() {
        // Engine::all gives the library's message on how to install an adapter.
        return Ok(Engine::all(options)?);
    }
    // As `AdapterSummary::label` prints it; matched case-insensitively.
    let label = |a: &lossfuse::wgpu::Adapter| {
        let info = a.get_info();
        format!("{} ({:?})", info.name, info.backend)
    };
    let mut chosen: Vec<usize> = Vec::new();
    if filters.is_empty() {
        chosen = (0..adapters.len()).collect();
    }
    for f in &filters {
        let needle = f.to_lowercase();
        let matched: Vec<usize> = (0..adapters.len())
            .filter(|&i| label(&adapters[i]).to_lowercase().contains(&needle))
            .collect();
        if matched.is_empty() {
            return Err(CliError::Usage(format!(
                "{from}: no adapter matches '{f}'; found: {}",
                adapters.iter().map(label).collect::<Vec<_>>().join(", ")
            )));
        }
        // The first match, as `eval --adapter` picks; repeat the flag for more.
        if !chosen.contains(&matched[0]) {
            chosen.push(matched[0]);
        }
    }
    chosen
        .into_iter()
        .map(|i| Engine::from_adapter(&adapters[i], options.clone()).map_err(Into::into))
        .collect()
}

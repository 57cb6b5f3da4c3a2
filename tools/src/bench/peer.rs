//! The PyTorch peer of `lossfuse bench` (`--peer torch[:PYTHON]`) and the input dump it reads
//! (`--dump-inputs DIR`). The peer is `bench/peers/torch_peer.py`, carried inside the binary (so
//! that a binary copied to another machine, as `bench/gpu/run.sh` does, brings it along) and
//! written next to the dumped inputs before it runs. It implements every shape as a PyTorch user
//! would, forward and backward with autograd, eager and compiled, and prints its times and its
//! first-step loss as JSON; the bench compares that loss with lossfuse's.

use super::{BenchRow, Case, ReferenceRun};
use crate::error::{CliError, CliResult};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The peer script, as committed in `bench/peers/torch_peer.py`.
pub const TORCH_PEER: &str = include_str!("../../../bench/peers/torch_peer.py");

/// Which peer runs, and with which Python.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The Python interpreter (`python3` unless given).
    pub python: String,
}

impl PeerSpec {
    /// Parses `torch` or `torch:PYTHON`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, python) = match text.split_once(':') {
            Some((n, p)) => (n, p),
            None => (text, "python3"),
        };
        if name != "torch" {
            return Err(format!(
                "unknown peer '{name}': the one peer is 'torch' (or 'torch:PYTHON')"
            ));
        }
        if python.is_empty() {
            return Err("--peer torch:PYTHON needs the interpreter after the colon".into());
        }
        Ok(Self {
            python: python.to_string(),
        })
    }
}

/// Timing of one column of the peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerTimes {
    /// Median seconds per step.
    pub median_s: f64,
    /// Fastest step.
    pub min_s: f64,
    /// Steps timed.
    pub steps: u32,
}

/// What the peer gave for one shape.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerRun {
    /// It ran.
    Ran {
        /// Where it ran (`cpu`, `cuda`).
        device: String,
        /// torch's intra-op threads.
        threads: u32,
        /// The torch version.
        torch: String,
        /// Its first step's total loss.
        loss: f64,
        /// Eager mode.
        eager: PeerTimes,
        /// torch.compile, where it worked.
        compiled: Option<PeerTimes>,
        /// Why there is no compiled column, or that the device fell back.
        note: String,
    },
    /// It did not run, and why.
    Skipped(String),
}

impl PeerRun {
    /// The peer's eager median, when it ran.
    pub fn eager_s(&self) -> Option<f64> {
        match self {
            PeerRun::Ran { eager, .. } => Some(eager.median_s),
            PeerRun::Skipped(_) => None,
        }
    }

    /// The compiled median, when there is one.
    pub fn compiled_s(&self) -> Option<f64> {
        match self {
            PeerRun::Ran { compiled, .. } => compiled.as_ref().map(|c| c.median_s),
            PeerRun::Skipped(_) => None,
        }
    }

    /// The note: why it was skipped, or what the run says of itself.
    pub fn note(&self) -> &str {
        match self {
            PeerRun::Ran { note, .. } => note,
            PeerRun::Skipped(why) => why,
        }
    }
}

/// The peer's best median (compiled where faster) over the row's median: above 1 lossfuse is
/// faster.
pub fn vs_peer(row: &BenchRow) -> Option<f64> {
    let eager = row.peer.eager_s()?;
    let best = row.peer.compiled_s().map_or(eager, |c| c.min(eager));
    Some(best / row.median_s)
}

/// |lossfuse − peer| / |peer| of the first step's total loss.
pub fn peer_rel_diff(row: &BenchRow) -> Option<f64> {
    match row.peer {
        PeerRun::Ran { loss, .. } => Some((row.first_total - loss).abs() / loss.abs().max(1e-30)),
        PeerRun::Skipped(_) => None,
    }
}

/// Writes `DIR/<shape>.safetensors` (the inputs the GPU read: reals F32 bit for bit, ids I64)
/// and `DIR/<shape>.json` (the shape's metadata, its configs, lossfuse's and the reference's
/// first-step totals when known).
pub fn dump_case(
    dir: &Path,
    case: &Case,
    first_total: Option<f64>,
    reference: &ReferenceRun,
) -> CliResult<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::file(dir, format!("cannot create the folder: {e}")))?;
    let tensors = dir.join(format!("{}.safetensors", case.name));
    crate::io::write_batch(&tensors, &case.host_batch())?;
    let reference_total = match reference {
        ReferenceRun::Ran { total, .. } => Some(*total),
        ReferenceRun::Skipped(_) => None,
    };
    let meta = serde_json::json!({
        "shape": case.name,
        "family": case.family.name(),
        "rows": case.rows,
        "dim": case.dim,
        "bank": case.bank,
        "classes": case.classes,
        "configs": case.config_texts,
        "lossfuse_total_loss": first_total,
        "reference_total_loss": reference_total,
    });
    let text = serde_json::to_string_pretty(&meta)
        .map_err(|e| CliError::file(dir, format!("cannot write the metadata: {e}")))?;
    crate::files::write_bytes(&dir.join(format!("{}.json", case.name)), text.as_bytes())
}

/// Settings of a peer run.
#[derive(Clone, Debug)]
pub struct PeerOptions<'a> {
    /// The peer.
    pub spec: &'a PeerSpec,
    /// The folder holding the dumped inputs (the script is written there too).
    pub dir: &'a Path,
    /// Timed steps, as lossfuse's.
    pub steps: u32,
    /// Untimed steps first.
    pub warmup: u32,
    /// `--time-budget`, as lossfuse's.
    pub time_budget: Option<f64>,
    /// `cuda` when an adapter is an NVIDIA GPU, else `cpu`.
    pub device: &'a str,
    /// torch.set_num_threads.
    pub threads: usize,
    /// Whether to time torch.compile too.
    pub compile: bool,
}

/// Writes the peer script into the dump folder and returns its path.
fn script(dir: &Path) -> CliResult<PathBuf> {
    let path = dir.join("torch_peer.py");
    crate::files::write_bytes(&path, TORCH_PEER.as_bytes())?;
    Ok(path)
}

/// Runs the peer on one dumped shape. Python or torch missing, an unknown shape or a failing
/// script give [`PeerRun::Skipped`] with the reason: the bench goes on without the peer.
pub fn run_peer(o: &PeerOptions, shape: &str) -> CliResult<PeerRun> {
    let script = script(o.dir)?;
    let mut cmd = Command::new(&o.spec.python);
    cmd.arg(&script)
        .arg("--inputs")
        .arg(o.dir)
        .args(["--shape", shape, "--device", o.device])
        .args(["--steps", &o.steps.to_string()])
        .args(["--warmup", &o.warmup.to_string()])
        .args(["--threads", &o.threads.to_string()]);
    if let Some(b) = o.time_budget {
        cmd.args(["--time-budget", &b.to_string()]);
    }
    if !o.compile {
        cmd.arg("--no-compile");
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            return Ok(PeerRun::Skipped(format!(
                "cannot run '{}': {e}",
                o.spec.python
            )))
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last_line = |s: &str| s.lines().last().unwrap_or("").trim().to_string();
    match out.status.code() {
        Some(0) => Ok(parse_output(&String::from_utf8_lossy(&out.stdout))),
        Some(3) => Ok(PeerRun::Skipped(format!("the torch peer has no '{shape}'"))),
        Some(4) => Ok(PeerRun::Skipped(format!(
            "no torch for '{}' ({}); see the README to install the peer",
            o.spec.python,
            last_line(&stderr)
        ))),
        code => Ok(PeerRun::Skipped(format!(
            "the torch peer failed (exit {}): {}",
            code.map_or("by a signal".into(), |c| c.to_string()),
            last_line(&stderr)
        ))),
    }
}

/// Reads the peer's JSON line.
pub fn parse_output(stdout: &str) -> PeerRun {
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
    else {
        return PeerRun::Skipped("the torch peer printed no result".into());
    };
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return PeerRun::Skipped(format!("the torch peer's output is not JSON: {e}")),
    };
    let times = |v: &serde_json::Value| -> Option<PeerTimes> {
        Some(PeerTimes {
            median_s: v.get("median_s")?.as_f64()?,
            min_s: v.get("min_s")?.as_f64()?,
            steps: v.get("steps")?.as_u64()? as u32,
        })
    };
    let (Some(eager), Some(loss)) = (times(&v["eager"]), v["loss"].as_f64()) else {
        return PeerRun::Skipped(format!(
            "the torch peer's result lacks times or loss: {line}"
        ));
    };
    let notes: Vec<&str> = ["device_note", "compiled_note"]
        .iter()
        .filter_map(|k| v[k].as_str())
        .collect();
    PeerRun::Ran {
        device: v["device"].as_str().unwrap_or("?").to_string(),
        threads: v["threads"].as_u64().unwrap_or(0) as u32,
        torch: v["torch"].as_str().unwrap_or("?").to_string(),
        loss,
        eager,
        compiled: times(&v["compiled"]),
        note: notes.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_specs_name_torch_and_an_optional_python() {
        assert_eq!(PeerSpec::parse("torch").unwrap().python, "python3");
        assert_eq!(
            PeerSpec::parse("torch:/opt/venv/bin/python")
                .unwrap()
                .python,
            "/opt/venv/bin/python"
        );
        assert!(PeerSpec::parse("jax").unwrap_err().contains("'jax'"));
        assert!(PeerSpec::parse("torch:").is_err());
    }

    #[test]
    fn peer_output_is_read_or_explained() {
        let line = r#"{"shape": "s", "device": "cpu", "device_note": null, "threads": 2, "torch": "2.9.1", "loss": 1.5, "eager": {"median_s": 0.25, "min_s": 0.2, "steps": 5}, "compiled": null, "compiled_note": "torch.compile failed: X"}"#;
        let run = parse_output(&format!("warming up\n{line}\n"));
        assert_eq!(run.eager_s(), Some(0.25));
        assert_eq!(run.compiled_s(), None);
        assert_eq!(run.note(), "torch.compile failed: X");
        assert!(matches!(run, PeerRun::Ran { loss, threads: 2, .. } if loss == 1.5));
        assert!(matches!(parse_output(""), PeerRun::Skipped(_)));
        assert!(parse_output("{\"loss\": 1}").note().contains("lacks"));
    }
}

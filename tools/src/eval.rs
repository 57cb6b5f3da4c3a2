//! `lossfuse eval`: one or more steps of a config over a batch read from a safetensors file, on a
//! GPU adapter or on the f64 reference; the last step's losses, weights and gradients are written
//! to a safetensors file and printed as a table.

use crate::error::{CliError, CliResult};
use crate::io::{read_batch, write_tensors, OutTensor};
use lossfuse::reference::Reference;
use lossfuse::{Engine, EngineOptions, HostBatch, LossConfig, OwnedBatch, Shapes};
use lossfuse_cli::bench::progress::StepCounter;
use lossfuse_cli::files::{check_output, same_file};
use lossfuse_cli::outln;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `lossfuse eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Loss configuration (.toml, or .json by extension).
    #[arg(long)]
    pub config: PathBuf,
    /// Input batch: a safetensors file of named tensors (F32/F64 reals, I32/I64/U32/U64 ids).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write loss/<term>, loss/total, weight/<term>, grad/<tensor> and
    /// prediction/<term> (safetensors, f32).
    #[arg(long)]
    pub output: PathBuf,
    /// Run on the first adapter whose "name (backend)" contains this (case-insensitive), e.g.
    /// `vulkan`, `gl`, `llvmpipe`. Default: LOSSFUSE_ADAPTER, else the default adapter.
    #[arg(long, conflicts_with = "reference")]
    pub adapter: Option<String>,
    /// Run the float64 CPU reference instead of a GPU.
    #[arg(long)]
    pub reference: bool,
    /// Steps over the same batch (state carries between them); the last one is written.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Do not print the table of results.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One term's results of the last step.
#[derive(Clone, Debug)]
pub struct TermResult {
    /// Term name.
    pub name: String,
    /// L_k.
    pub value: f64,
    /// Effective weight: the fixed weight, or c·e^{−s} for a learned one (c = 0.5 for
    /// `l2_loss` and `sigmoid_l2_loss`, else 1), the RLW or EMA weight.
    pub weight: f64,
    /// The learned log-variance s used this step, when the term's weight is learned.
    pub log_var: Option<f64>,
    /// Whether the term is a regression term (c = 0.5 in its learned weight).
    pub regression: bool,
    /// d total / d s_k when the term's weight is learned.
    pub log_var_grad: Option<f64>,
    /// d total / d (u1, u2) of a `jrc_loss` term with learned weights.
    pub jrc_u_grad: Option<[f64; 2]>,
    /// d total / d (w, b) of a listwise term with `scale_logits`.
    pub scale_grad: Option<[f64; 2]>,
}

/// The results of the last step, from either engine.
#[derive(Clone, Debug)]
pub struct EvalResult {
    /// What computed it: the adapter label or "reference (f64 CPU)".
    pub source: String,
    /// The total loss.
    pub total: f64,
    /// Every term, in config order.
    pub terms: Vec<TermResult>,
    /// d total / d tensor for every differentiable input, flat.
    pub grads: BTreeMap<String, Vec<f64>>,
    /// The per-row prediction of every term that has one (`ziln_loss`), by term.
    pub predictions: BTreeMap<String, Vec<f64>>,
    /// The flood level b of the config, when it has one.
    pub flooding: Option<f64>,
}

/// Runs `lossfuse eval`. The output is checked before anything runs (not the input, its
/// directory exists and takes a new file) and written atomically after the last step.
pub fn run(args: &EvalArgs) -> CliResult<()> {
    if same_file(&args.input, &args.output) {
        return Err(CliError::Usage(format!(
            "--output {} is the same file as --input {}: writing the results would replace the \
             batch; give another --output",
            args.output.display(),
            args.input.display()
        )));
    }
    check_output(&args.output, "--output")?;
    let config = LossConfig::from_path(&args.config)?;
    let batch = read_batch(&args.input)?;
    let mut counter = StepCounter::stderr(u64::from(args.steps), !args.quiet);
    let mut progress = |done: u32| counter.tick(u64::from(done));
    let result = if args.reference {
        run_reference(&config, &batch, args.steps, &mut progress)
    } else {
        run_gpu(
            &config,
            &batch,
            args.adapter.as_deref(),
            args.steps,
            &mut progress,
        )
    };
    counter.finish();
    let result = result?;
    let outputs = to_outputs(&result, &batch);
    write_tensors(&args.output, &outputs)?;
    if !args.quiet {
        print_table(&result, args.steps, &args.output)?;
    }
    Ok(())
}

/// N steps on a GPU adapter (by name, else [`Engine::new`]); `progress` gets the number of steps
/// done, from 0 (before the plan is built) to `steps`.
pub fn run_gpu(
    config: &LossConfig,
    batch: &HostBatch,
    adapter: Option<&str>,
    steps: u32,
    progress: &mut dyn FnMut(u32),
) -> CliResult<EvalResult> {
    progress(0);
    let engine = match adapter {
        Some(name) => Engine::with_adapter(name, EngineOptions::default())?,
        None => Engine::new()?,
    };
    let mut plan = engine.plan(config, &Shapes::of_host(batch))?;
    let grad_names: Vec<String> = plan.grad_names().cloned().collect();
    let predicted: Vec<String> = plan.prediction_names().cloned().collect();
    let owned = OwnedBatch::from_host(batch)?;
    let gpu_batch = owned.batch();
    let mut last = None;
    for step in 1..=steps {
        let out = plan.step(&gpu_batch)?;
        let report = out.report_blocking()?;
        if step == steps {
            // The outputs of a step live in the plan's buffers until the next step.
            let mut grads = BTreeMap::new();
            for name in &grad_names {
                let g = out.read_grad(name)?;
                grads.insert(name.clone(), g.into_iter().map(f64::from).collect());
            }
            let mut predictions = BTreeMap::new();
            for name in &predicted {
                let p = out.read_prediction(name)?;
                predictions.insert(name.clone(), p.into_iter().map(f64::from).collect());
            }
            last = Some((report, grads, predictions));
        }
        progress(step);
    }
    let (report, grads, predictions) = last.ok_or_else(no_steps)?;
    let learned = learned_terms(config);
    Ok(EvalResult {
        source: engine.adapter().label(),
        total: report.total as f64,
        terms: report
            .terms
            .iter()
            .map(|t| TermResult {
                name: t.name.clone(),
                value: t.value as f64,
                weight: t.weight as f64,
                log_var: learned.contains(&t.name).then_some(t.log_var as f64),
                regression: is_regression(config, &t.name),
                log_var_grad: learned.contains(&t.name).then_some(t.log_var_grad as f64),
                jrc_u_grad: jrc_learned(config, &t.name)
                    .then(|| t.jrc.map(|j| j.u_grad.map(f64::from)))
                    .flatten(),
                scale_grad: t.scale.map(|s| s.grad.map(f64::from)),
            })
            .collect(),
        grads,
        predictions,
        flooding: config.flooding,
    })
}

fn no_steps() -> CliError {
    CliError::Usage("--steps must be at least 1".into())
}

/// N steps of the f64 reference; `progress` as for [`run_gpu`].
pub fn run_reference(
    config: &LossConfig,
    batch: &HostBatch,
    steps: u32,
    progress: &mut dyn FnMut(u32),
) -> CliResult<EvalResult> {
    progress(0);
    let mut reference = Reference::new(config)?;
    let mut last = None;
    // The log-variances s the last step used: the state before it.
    let mut log_vars = Vec::new();
    for step in 1..=steps {
        log_vars.clone_from(&reference.state().log_vars);
        last = Some(reference.step(batch)?);
        progress(step);
    }
    let out = last.ok_or_else(no_steps)?;
    let learned = learned_terms(config);
    let terms = out
        .values
        .iter()
        .zip(&out.weights)
        .enumerate()
        .map(|(k, ((name, value), (_, weight)))| TermResult {
            name: name.clone(),
            value: *value,
            weight: *weight,
            log_var: learned
                .contains(name)
                .then(|| log_vars.get(k).copied().unwrap_or(0.0)),
            regression: is_regression(config, name),
            log_var_grad: learned
                .contains(name)
                .then(|| out.log_var_grads.get(k).copied().unwrap_or(0.0)),
            jrc_u_grad: jrc_learned(config, name).then(|| out.jrc_u_grads[k]),
            // The reference keeps a listwise term's d total/d(w, b) where JRC keeps d/du.
            scale_grad: config
                .term(name)
                .is_some_and(|t| t.learns_listwise_scale())
                .then(|| out.jrc_u_grads[k]),
        })
        .collect();
    Ok(EvalResult {
        source: "reference (f64 CPU)".into(),
        total: out.total,
        terms,
        grads: out.grads,
        predictions: out.predictions,
        flooding: config.flooding,
    })
}

/// Whether `name` is a `jrc_loss` term that learns its u1, u2.
fn jrc_learned(config: &LossConfig, name: &str) -> bool {
    config.term(name).is_some_and(|t| t.learns_jrc_weights())
}

/// Whether `name` is a regression term, whose learned weight is 0.5·e^{−s}.
fn is_regression(config: &LossConfig, name: &str) -> bool {
    config.term(name).is_some_and(|t| t.kind.is_regression())
}

fn learned_terms(config: &LossConfig) -> Vec<String> {
    config
        .losses
        .iter()
        .filter(|t| t.learn_loss_weight)
        .map(|t| t.name.clone())
        .collect()
}

/// The tensors `eval` writes: `loss/total`, `loss/<term>`, `weight/<term>`, `log_var/<term>`
/// (the s used this step) and `log_var_grad/<term>` for learned weights, `jrc_u_grad/<term>` (d total / d (u1, u2)) for
/// `jrc_loss` terms with learned weights, `scale_grad/<term>` (d total / d (w, b)) for listwise
/// terms with `scale_logits`, `grad/<tensor>` in the input's shape, and `prediction/<term>`
/// ([B]) for every term with a per-row prediction (`ziln_loss`).
pub fn to_outputs(result: &EvalResult, batch: &HostBatch) -> BTreeMap<String, OutTensor> {
    let mut out = BTreeMap::new();
    out.insert(
        "loss/total".to_string(),
        OutTensor::scalar(result.total as f32),
    );
    for t in &result.terms {
        out.insert(
            format!("loss/{}", t.name),
            OutTensor::scalar(t.value as f32),
        );
        out.insert(
            format!("weight/{}", t.name),
            OutTensor::scalar(t.weight as f32),
        );
        if let Some(s) = t.log_var {
            out.insert(format!("log_var/{}", t.name), OutTensor::scalar(s as f32));
        }
        if let Some(g) = t.log_var_grad {
            out.insert(
                format!("log_var_grad/{}", t.name),
                OutTensor::scalar(g as f32),
            );
        }
        for (key, g) in [("jrc_u_grad", t.jrc_u_grad), ("scale_grad", t.scale_grad)] {
            if let Some(g) = g {
                out.insert(
                    format!("{key}/{}", t.name),
                    OutTensor {
                        shape: vec![2],
                        values: g.iter().map(|&x| x as f32).collect(),
                    },
                );
            }
        }
    }
    for (term, p) in &result.predictions {
        out.insert(
            format!("prediction/{term}"),
            OutTensor {
                shape: vec![p.len()],
                values: p.iter().map(|&v| v as f32).collect(),
            },
        );
    }
    for (name, g) in &result.grads {
        let shape = match batch.get(name) {
            Some(t) if t.len() == g.len() => t.shape.clone(),
            _ => vec![g.len()],
        };
        out.insert(
            format!("grad/{name}"),
            OutTensor {
                shape,
                values: g.iter().map(|&v| v as f32).collect(),
            },
        );
    }
    out
}

/// A number in a fixed-width column: plain for moderate magnitudes, scientific otherwise.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e6).contains(&a) {
        format!("{v:.8}")
    } else {
        format!("{v:.6e}")
    }
}

/// The table of results (stdout): each term's value, effective weight and, for a learned weight,
/// its s and the formula of the weight; the total and what it includes; each gradient's L2 norm
/// and largest element.
fn print_table(result: &EvalResult, steps: u32, output: &Path) -> CliResult<()> {
    outln!("{} — step {steps} of {steps}", result.source)?;
    let width = result
        .terms
        .iter()
        .map(|t| t.name.len())
        .chain(result.grads.keys().map(|k| k.len() + 5))
        .max()
        .unwrap_or(0)
        .max("gradient of total".len());
    let learned = result.terms.iter().any(|t| t.log_var.is_some());
    if learned {
        outln!(
            "{:<width$}  {:>18}  {:>18}  {:>18}",
            "term",
            "value L",
            "weight w",
            "learned s"
        )?;
    } else {
        outln!("{:<width$}  {:>18}  {:>18}", "term", "value L", "weight w")?;
    }
    for t in &result.terms {
        match t.log_var {
            Some(s) => outln!(
                "{:<width$}  {:>18}  {:>18}  {:>18}  w = {}e^-s",
                t.name,
                fmt_num(t.value),
                fmt_num(t.weight),
                fmt_num(s),
                if t.regression { "0.5·" } else { "" }
            )?,
            None => outln!(
                "{:<width$}  {:>18}  {:>18}",
                t.name,
                fmt_num(t.value),
                fmt_num(t.weight)
            )?,
        }
    }
    outln!("{:<width$}  {:>18}", "total", fmt_num(result.total))?;
    let mut sum = "Σ w·L".to_string();
    if learned {
        sum.push_str(" + Σ ½·s over the terms with learned weights (s: their log-variance)");
    }
    match result.flooding {
        Some(b) => outln!("total = |raw − b| + b with b = {b} (flooding), raw = {sum}")?,
        None => outln!("total = {sum}")?,
    }
    if !result.grads.is_empty() {
        outln!()?;
        outln!(
            "{:<width$}  {:>18}  {:>18}  elements",
            "gradient of total",
            "L2 norm ‖g‖",
            "max |g_i|"
        )?;
    }
    for (name, g) in &result.grads {
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let max = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        outln!(
            "{:<width$}  {:>18}  {:>18}  {}",
            format!("grad/{name}"),
            fmt_num(norm),
            fmt_num(max),
            g.len()
        )?;
    }
    outln!("written to {}", output.display())
}

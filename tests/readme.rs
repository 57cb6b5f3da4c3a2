//! The README's configuration examples are true: every ```toml block parses, and each one with
//! terms runs on every adapter on synthetic inputs and agrees with the reference.

mod common;
use common::*;
use lossfuse::LossConfig;

fn readme_blocks(lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(b) if line.trim() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Inputs for every role of every term, by the role's meaning.
fn synthetic(config: &LossConfig, seed: u64) -> Inputs {
    let b = 300;
    let mut rng = Rng::new(seed);
    let mut inputs = Inputs::new();
    let add_real =
        |inputs: Inputs, name: &str, shape: &[usize], lo: f64, hi: f64, rng: &mut Rng| {
            if inputs.0.contains_key(name) {
                return inputs;
            }
            let n = shape.iter().product();
            inputs.real(name, shape, reals(rng, n, lo, hi))
        };
    for t in &config.losses {
        for role in t.kind.roles() {
            let Some(name) = t.input(role.name) else {
                continue;
            };
            inputs = match (t.kind.loss_type(), role.name) {
                ("softmax_cross_entropy", "logits") => {
                    add_real(inputs, name, &[b, 6], -3.0, 3.0, &mut rng)
                }
                ("softmax_cross_entropy", "labels") => {
                    let ids = (0..b).map(|_| rng.below(6) as i64).collect();
                    inputs.ids(name, &[b], ids)
                }
                ("jrc_loss", "logits") => add_real(inputs, name, &[b, 2], -3.0, 3.0, &mut rng),
                (_, "session") if !inputs.0.contains_key(name) => {
                    let ids = (0..b).map(|_| rng.below(30) as i64).collect();
                    inputs.ids(name, &[b], ids)
                }
                (_, "logits" | "predictions" | "ctr_logits" | "cvr_logits") => {
                    add_real(inputs, name, &[b], -4.0, 4.0, &mut rng)
                }
                (_, "probabilities") => add_real(inputs, name, &[b], 0.01, 0.99, &mut rng),
                ("l2_loss" | "sigmoid_l2_loss", "labels") => {
                    add_real(inputs, name, &[b], 0.0, 1.0, &mut rng)
                }
                _ if inputs.0.contains_key(name) => inputs,
                _ => {
                    let v = binary(&mut rng, b, 0.3);
                    inputs.real(name, &[b], v)
                }
            };
        }
        if let Some(sw) = &t.sample_weights {
            for (name, _) in sw.parts() {
                inputs = add_real(inputs, &name, &[b], 0.0, 2.0, &mut rng);
            }
        }
    }
    inputs
}

#[test]
fn readme_config_examples_run() {
    let blocks = readme_blocks("toml");
    assert!(!blocks.is_empty(), "the README shows config examples");
    let mut ran = 0;
    for (i, block) in blocks.iter().enumerate() {
        let config = LossConfig::from_toml_str(block)
            .unwrap_or_else(|e| panic!("README toml block {i} does not parse: {e}\n{block}"));
        check_all(block, &synthetic(&config, i as u64), 2, TOL);
        ran += 1;
    }
    assert!(ran >= 2);
}

#[test]
fn readme_json_examples_parse_like_toml() {
    for block in readme_blocks("json") {
        LossConfig::from_json_str(&block)
            .unwrap_or_else(|e| panic!("README json block: {e}\n{block}"));
    }
}

#[test]
fn the_embedding_example_runs() {
    // examples/embed.rs is the README's trainer code. `cargo test` builds examples next to the
    // test binaries (target/<profile>/examples); run that one, or build it when this test runs
    // alone.
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("embed")))
        .filter(|p| p.exists());
    let status = match built {
        Some(path) => std::process::Command::new(path).status(),
        None => std::process::Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--example", "embed"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status(),
    }
    .expect("the example starts");
    assert!(status.success(), "examples/embed.rs failed");
}

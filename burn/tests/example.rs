//! The Burn examples run: the README's (`burn/examples/burn_loss.rs`, whose loss falls) and the
//! two-tower trainer (`two_tower_burn.rs`, whose loss falls and recall rises); both assert it.
//! And the README shows the first one's lines.

/// Runs an example of this crate: the one `cargo test` built next to the test binaries
/// (target/<profile>/examples), or builds it when this test runs alone.
fn run_example(name: &str) {
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join(name)))
        .filter(|p| p.exists());
    let status = match built {
        Some(path) => std::process::Command::new(path).status(),
        None => std::process::Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status(),
    }
    .expect("the example starts");
    assert!(status.success(), "burn/examples/{name}.rs failed");
}

#[test]
fn the_burn_example_runs_and_its_loss_falls() {
    run_example("burn_loss");
}

/// The Burn two-tower trainer: both runs' loss falls and recall@50 rises (the example exits 1
/// otherwise).
#[test]
fn the_burn_two_tower_example_trains() {
    run_example("two_tower_burn");
}

#[test]
fn the_readme_shows_the_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/burn_loss.rs");
    let block = readme
        .split("### In a Burn model")
        .nth(1)
        .and_then(|s| s.split("```rust\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .expect("the README's Burn block");
    // Every call the README shows is in the example (the README abbreviates the arguments).
    for call in [
        "LossfuseLoss::from_toml(",
        "Inputs::new()",
        ".float(\"logits\", model.class_head.forward(features.clone()))",
        "out.term(\"ce\")",
        "GradientsParams::from_grads(out.total.backward(), &model)",
        "optimizer.step(1e-2, model, grads)",
        "device.autodiff()",
    ] {
        assert!(block.contains(call), "README block lacks {call}");
        assert!(example.contains(call), "example lacks {call}");
    }
}

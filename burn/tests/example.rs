//! The README's Burn example (`burn/examples/burn_loss.rs`) runs and its loss falls (the example
//! asserts it), and the README shows its lines.

#[test]
fn the_burn_example_runs_and_its_loss_falls() {
    // `cargo test` builds examples next to the test binaries (target/<profile>/examples); run that
    // one, or build it when this test runs alone.
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("burn_loss")))
        .filter(|p| p.exists());
    let status = match built {
        Some(path) => std::process::Command::new(path).status(),
        None => std::process::Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--example", "burn_loss"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status(),
    }
    .expect("the example starts");
    assert!(status.success(), "burn/examples/burn_loss.rs failed");
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

//! The harnesses: what each target feeds its input to, and its seed corpus.
//!
//! - `config-toml`, `config-json`: [`LossConfig::from_toml_str`] / [`LossConfig::from_json_str`]
//!   (parse and validate), then, for a config that passes, the CLI's `example_batch` for it (the
//!   code that turns any valid config into a batch). Seeds: the example configs, every `toml` /
//!   `json` block of the README, the example configs as JSON (`fuzz/seeds/`).
//! - `config-reference`: a TOML config that parses, then one step of the f64 reference
//!   ([`lossfuse::reference::Reference`]) on its example batch of 16 rows: what a valid but odd
//!   config does past the parser (a memory bank over 65,536 rows is not stepped: its reference
//!   legitimately allocates gigabytes).
//! - `safetensors`: [`lossfuse_cli::io::read_batch_bytes`] (the reader of `lossfuse eval`,
//!   `compare` and `soak`). Seeds: the example batches of every example config at several sizes
//!   and a file of every dtype, a scalar, an empty tensor and metadata.
//! - `state`: [`lossfuse::Plan::load_state`] on plans of the example configs built on the default
//!   adapter (example batches of 64 rows); a state that loads must also save back to the same
//!   bytes (a resumed run continues exactly). Seeds: each plan's state, fresh and after two steps.
//! - `selftest-panic`, `selftest-hang`, `selftest-alloc`: misbehave on any input holding a 0xff
//!   byte, so that the tests can check that each detector fires and saves the input.

use lossfuse::{Engine, HostBatch, HostTensor, LossConfig, OwnedBatch, Plan, Shapes};
use lossfuse_cli::example_batch::example_batch;

/// A fuzz target.
pub trait Harness {
    /// The seed corpus (every seed must be accepted).
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Whether inputs are text (the mutator then also mutates numbers, words and lines).
    fn text(&self) -> bool;
    /// The longest input to try.
    fn max_len(&self) -> usize;
    /// Runs one input: true when the code under test accepted it, false when it returned an
    /// error. A panic is a finding.
    fn run(&mut self, input: &[u8]) -> bool;
}

/// The targets `--target` takes.
pub const TARGETS: &[&str] = &[
    "config-toml",
    "config-json",
    "config-reference",
    "safetensors",
    "state",
];

/// The harness named `name`.
pub fn harness(name: &str) -> Result<Box<dyn Harness>, String> {
    Ok(match name {
        "config-toml" => Box::new(Config {
            json: false,
            reference: false,
        }),
        "config-json" => Box::new(Config {
            json: true,
            reference: false,
        }),
        "config-reference" => Box::new(Config {
            json: false,
            reference: true,
        }),
        "safetensors" => Box::new(Safetensors),
        "state" => Box::new(State::new()?),
        "selftest-panic" | "selftest-hang" | "selftest-alloc" => Box::new(Selftest {
            kind: name.trim_start_matches("selftest-").to_string(),
        }),
        _ => {
            return Err(format!(
                "unknown target '{name}'; targets: {}",
                TARGETS.join(", ")
            ))
        }
    })
}

/// The example configs, by file name.
pub const EXAMPLE_CONFIGS: &[(&str, &str)] = &[
    (
        "batch_wide",
        include_str!("../../examples/configs/batch_wide.toml"),
    ),
    ("ctr", include_str!("../../examples/configs/ctr.toml")),
    (
        "ranking",
        include_str!("../../examples/configs/ranking.toml"),
    ),
    (
        "retrieval",
        include_str!("../../examples/configs/retrieval.toml"),
    ),
];

const JSON_SEEDS: &[&str] = &[
    include_str!("../seeds/batch_wide.json"),
    include_str!("../seeds/ctr.json"),
    include_str!("../seeds/ranking.json"),
    include_str!("../seeds/retrieval.json"),
];

const README: &str = include_str!("../../README.md");

/// The fenced blocks of `text` whose info string is `lang`.
pub fn fenced_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start().strip_prefix("```") == Some(lang) => {
                current = Some(String::new())
            }
            Some(b) if line.trim_start().starts_with("```") => {
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

struct Config {
    json: bool,
    /// Step the reference on configs that parse.
    reference: bool,
}

/// Whether `config` has a memory bank too large to step the reference on within the fuzzer's
/// allocation cap (rows × d × 8 bytes of f64).
fn big_bank(config: &LossConfig) -> bool {
    config.losses.iter().any(|t| {
        t.kind
            .params::<lossfuse::params::CrossBatchParams>()
            .is_some_and(|p| p.bank_rows() > 65_536)
    })
}

impl Harness for Config {
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds: Vec<String> = if self.json {
            JSON_SEEDS.iter().map(|s| s.to_string()).collect()
        } else {
            EXAMPLE_CONFIGS.iter().map(|(_, s)| s.to_string()).collect()
        };
        seeds.extend(fenced_blocks(
            README,
            if self.json { "json" } else { "toml" },
        ));
        seeds.into_iter().map(String::into_bytes).collect()
    }
    fn text(&self) -> bool {
        true
    }
    fn max_len(&self) -> usize {
        16 << 10
    }
    fn run(&mut self, input: &[u8]) -> bool {
        let text = String::from_utf8_lossy(input);
        let parsed = if self.json {
            LossConfig::from_json_str(&text)
        } else {
            LossConfig::from_toml_str(&text)
        };
        match parsed {
            Ok(config) if self.reference => {
                if big_bank(&config) {
                    return true;
                }
                let batch = example_batch(&config, 16, 1);
                match lossfuse::reference::Reference::new(&config) {
                    Ok(mut r) => r.step(&batch).is_ok(),
                    Err(_) => false,
                }
            }
            Ok(config) => {
                // Any valid config gets a batch of the shapes its roles mean.
                let batch = example_batch(&config, 3, 1);
                std::hint::black_box(Shapes::of_host(&batch));
                true
            }
            Err(_) => false,
        }
    }
}

struct Safetensors;

/// A hand-made safetensors file.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

impl Harness for Safetensors {
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        for (_, text) in EXAMPLE_CONFIGS {
            let config = LossConfig::from_toml_str(text).expect("example configs parse");
            for rows in [1, 4, 9] {
                let batch = example_batch(&config, rows, rows as u64);
                seeds.push(lossfuse_cli::io::batch_bytes(&batch).expect("batches serialise"));
            }
        }
        // Every dtype the reader takes, a scalar, an empty tensor, and metadata.
        let mut data = Vec::new();
        data.extend_from_slice(&1.5f32.to_le_bytes()); // f32 [0, 4)
        data.extend_from_slice(&(-2.0f64).to_le_bytes()); // f64 [4, 12)
        data.extend_from_slice(&(-3i32).to_le_bytes()); // i32 [12, 16)
        data.extend_from_slice(&7u32.to_le_bytes()); // u32 [16, 20)
        data.extend_from_slice(&(-9i64).to_le_bytes()); // i64 [20, 28)
        data.extend_from_slice(&11u64.to_le_bytes()); // u64 [28, 36)
        seeds.push(raw_file(
            concat!(
                r#"{"__metadata__":{"format":"pt"},"#,
                r#""a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"#,
                r#""b":{"dtype":"F64","shape":[1,1],"data_offsets":[4,12]},"#,
                r#""c":{"dtype":"I32","shape":[1],"data_offsets":[12,16]},"#,
                r#""d":{"dtype":"U32","shape":[1],"data_offsets":[16,20]},"#,
                r#""e":{"dtype":"I64","shape":[1],"data_offsets":[20,28]},"#,
                r#""f":{"dtype":"U64","shape":[1],"data_offsets":[28,36]},"#,
                r#""g":{"dtype":"F32","shape":[0,3],"data_offsets":[36,36]}}"#
            ),
            &data,
        ));
        seeds
    }
    fn text(&self) -> bool {
        false
    }
    fn max_len(&self) -> usize {
        64 << 10
    }
    fn run(&mut self, input: &[u8]) -> bool {
        lossfuse_cli::io::read_batch_bytes(input).is_ok()
    }
}

/// Plans of the example configs on the default adapter, each with its seeds.
struct State {
    plans: Vec<(String, Plan)>,
    seeds: Vec<Vec<u8>>,
    // Keeps the device alive as long as the plans (they hold it too; this makes it explicit).
    _engine: Engine,
}

impl State {
    fn new() -> Result<Self, String> {
        let engine = Engine::new().map_err(|e| format!("state target: no adapter: {e}"))?;
        let mut plans = Vec::new();
        let mut seeds = Vec::new();
        for (name, text) in EXAMPLE_CONFIGS {
            let config = LossConfig::from_toml_str(text).expect("example configs parse");
            let batch: HostBatch = example_batch(&config, 64, 1);
            let mut plan = engine
                .plan(&config, &Shapes::of_host(&batch))
                .map_err(|e| format!("state target: plan of {name}: {e}"))?;
            let fail = |e: lossfuse::Error| format!("state target: {name}: {e}");
            seeds.push(plan.save_state().map_err(fail)?);
            let owned = OwnedBatch::from_host(&batch).map_err(fail)?;
            for _ in 0..2 {
                plan.step(&owned.batch())
                    .map_err(fail)?
                    .report_blocking()
                    .map_err(fail)?;
            }
            seeds.push(plan.save_state().map_err(fail)?);
            plans.push((name.to_string(), plan));
        }
        Ok(Self {
            plans,
            seeds,
            _engine: engine,
        })
    }
}

impl Harness for State {
    fn seeds(&self) -> Vec<Vec<u8>> {
        self.seeds.clone()
    }
    fn text(&self) -> bool {
        false
    }
    fn max_len(&self) -> usize {
        self.seeds.iter().map(Vec::len).max().unwrap_or(0) + 64
    }
    fn run(&mut self, input: &[u8]) -> bool {
        let mut accepted = false;
        for (name, plan) in &mut self.plans {
            if plan.load_state(input).is_ok() {
                accepted = true;
                // What loaded saves back bit for bit: the state is the GPU words themselves.
                let back = plan
                    .save_state()
                    .unwrap_or_else(|e| panic!("{name}: save_state after load_state: {e}"));
                assert!(
                    back == input,
                    "{name}: save_state after load_state gave other bytes ({} vs {})",
                    back.len(),
                    input.len()
                );
            }
        }
        accepted
    }
}

/// A target that misbehaves on purpose, to test the detectors.
struct Selftest {
    kind: String,
}

impl Harness for Selftest {
    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![b"a harmless seed".to_vec()]
    }
    fn text(&self) -> bool {
        false
    }
    fn max_len(&self) -> usize {
        256
    }
    fn run(&mut self, input: &[u8]) -> bool {
        if input.contains(&0xff) {
            match self.kind.as_str() {
                "panic" => panic!("selftest: a 0xff byte"),
                "hang" => std::thread::sleep(std::time::Duration::from_secs(60)),
                _ => {
                    let v = vec![1u8; std::hint::black_box(4usize << 30)];
                    std::hint::black_box(&v);
                }
            }
        }
        // Something the allocator sees on every call, within any cap.
        std::hint::black_box(HostTensor::real(vec![input.len()], vec![0.0; input.len()]));
        true
    }
}

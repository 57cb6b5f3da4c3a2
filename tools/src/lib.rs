//! The library half of the `lossfuse` command line: the benchmark suite, shared by `lossfuse
//! bench` and the criterion benches (`tools/benches/suite.rs`) so that both run the same named
//! shapes on the same inputs; the conformance suite of `lossfuse check`; the CLI's error type.

#![warn(missing_docs)]

#[macro_use]
pub mod out;

pub mod bench;
pub mod check;
pub mod engines;
pub mod error;
pub mod example_batch;
pub mod files;
pub mod io;
pub mod provenance;
pub mod runtime_dir;
pub mod soak;

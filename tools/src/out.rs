//! Standard output and error that survive a closed pipe.
//!
//! `println!` panics with "failed printing to stdout: Broken pipe" when the reader has gone
//! (`lossfuse check --list | head -1`). Every line the CLI prints goes through [`outln!`] /
//! [`out!`] instead, which return [`CliError::StdoutClosed`] on a closed pipe; the command stops
//! there like any other error, its destructors run (the GPU device is dropped, an atomic write in
//! progress removes its temporary file), and `main` exits with [`CLOSED_EXIT_CODE`] without a
//! message. Diagnostics on stderr go through [`errln!`], which ignores write errors: a closed
//! stderr must not stop a run whose results go to files.
//!
//! Why not restore SIGPIPE's default disposition (`libc::signal(SIGPIPE, SIG_DFL)`)? That is one
//! line, but the process is then killed at whatever point the write happens: no destructor runs
//! (a temporary file of an atomic write stays behind), the exit status is a signal, not a code,
//! it affects every pipe and socket of the process (the GPU drivers' too), and it does not exist
//! on Windows, where a closed pipe still panics. Returning an error keeps the behaviour the same
//! on every platform and testable in-process.

use crate::error::{CliError, CliResult};
use std::fmt;
use std::io::{self, Write};

/// Exit code of a command whose standard output was closed: 141, what a shell reports for a
/// process killed by SIGPIPE (128 + 13), so `set -o pipefail` scripts see what they see from
/// other tools.
pub const CLOSED_EXIT_CODE: u8 = 141;

/// The error for a failed write to stdout.
pub fn stdout_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::StdoutClosed
    } else {
        CliError::Stdout(e.to_string())
    }
}

/// Writes `args` to `w`, mapping a closed pipe to [`CliError::StdoutClosed`].
pub fn write_to(w: &mut impl Write, args: fmt::Arguments<'_>) -> CliResult<()> {
    w.write_fmt(args).map_err(stdout_error)
}

/// Writes `args` to stdout (used by [`out!`] and [`outln!`]).
pub fn stdout(args: fmt::Arguments<'_>) -> CliResult<()> {
    write_to(&mut io::stdout().lock(), args)
}

/// Flushes stdout (at the end of `main`, so that a closed pipe is seen there too).
pub fn flush() -> CliResult<()> {
    io::stdout().lock().flush().map_err(stdout_error)
}

/// Writes `args` to stderr, ignoring errors (used by [`errln!`]).
pub fn stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// `print!` to stdout that returns `CliResult<()>` instead of panicking on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::stdout(format_args!($($arg)*)) };
}

/// `println!` to stdout that returns `CliResult<()>` instead of panicking on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that ignores a closed stderr instead of panicking.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that fails otherwise.
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("no space left on device"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_its_own_error_and_others_are_reported() {
        assert!(matches!(
            write_to(&mut Closed, format_args!("x{}\n", 1)),
            Err(CliError::StdoutClosed)
        ));
        match write_to(&mut Full, format_args!("x")) {
            Err(CliError::Stdout(m)) => assert!(m.contains("no space"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut v = Vec::new();
        write_to(&mut v, format_args!("a {}", 2)).unwrap();
        assert_eq!(v, b"a 2");
    }
}

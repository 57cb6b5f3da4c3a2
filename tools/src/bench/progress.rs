//! The progress bar of `lossfuse bench`, on stderr: on a terminal one line redrawn in place
//! (carriage return, no other control codes), elsewhere (a log file, a pipe) one plain line each
//! time a shape finishes on an adapter, so that a run under nohup still shows where it is.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// What a step being run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Building the plans (pipelines are compiled here, which takes seconds on software
    /// adapters).
    Build,
    /// Untimed steps.
    Warmup,
    /// Wall-clock timed steps.
    Timed,
    /// Steps with timestamp queries (GPU time per pass).
    GpuTiming,
    /// The f64 CPU reference on the same inputs.
    Reference,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Build => "building plans",
            Phase::Warmup => "warm-up",
            Phase::Timed => "timed",
            Phase::GpuTiming => "GPU timing",
            Phase::Reference => "CPU reference",
        }
    }
}

/// Progress over `total` units (a unit is one shape on one adapter, or one reference run).
pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
    enabled: bool,
    drawn: bool,
}

const WIDTH: usize = 24;

impl Progress {
    /// A bar over `total` units; `enabled` false draws nothing (`--quiet`).
    pub fn new(total: usize, enabled: bool) -> Self {
        Self {
            total: total.max(1),
            done: 0,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            enabled,
            drawn: false,
        }
    }

    /// Shows unit `what` (e.g. "fused3_1m on llvmpipe (Vulkan)") at `phase`, step `step` of
    /// `steps` (steps of a phase count from 1; 0 of 0 for a phase without steps).
    pub fn update(&mut self, what: &str, phase: Phase, step: u32, steps: u32) {
        if !self.enabled || !self.tty {
            return;
        }
        let within = if steps > 0 {
            step.saturating_sub(1) as f64 / steps as f64
        } else {
            0.0
        };
        let fraction = ((self.done as f64 + within) / self.total as f64).min(1.0);
        let filled = (fraction * WIDTH as f64).round() as usize;
        let steps_text = if steps > 0 {
            format!(" {step}/{steps}")
        } else {
            String::new()
        };
        let line = format!(
            "[{}{}] {}/{} {} {}{} {}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.done + 1,
            self.total,
            what,
            phase.name(),
            steps_text,
            elapsed(self.start)
        );
        let mut err = std::io::stderr().lock();
        // Pad so that a shorter line covers the previous one.
        let _ = write!(err, "\r{line:<120}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Marks a unit finished; off a terminal, says so on its own line.
    pub fn finish_unit(&mut self, what: &str) {
        self.done += 1;
        if !self.enabled {
            return;
        }
        if !self.tty {
            eprintln!(
                "[{}/{}] {what} done, {} elapsed",
                self.done,
                self.total,
                elapsed(self.start)
            );
        }
    }

    /// Erases the bar so that a table row can be printed on stdout without the two interleaving
    /// on a terminal.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:<120}\r", "");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

fn elapsed(start: Instant) -> String {
    let s = start.elapsed().as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

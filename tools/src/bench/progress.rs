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
    /// The peer (`--peer`) on the same inputs.
    Peer,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Build => "building plans",
            Phase::Warmup => "warm-up",
            Phase::Timed => "timed",
            Phase::GpuTiming => "GPU timing",
            Phase::Reference => "on the f64 CPU reference",
            Phase::Peer => "on the torch peer",
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
            crate::errln!(
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

/// A one-line step counter for `lossfuse eval --steps N` on stderr: `step 37/1000  12.3 steps/s
/// 00:00:03 elapsed, about 00:01:18 left`, redrawn in place at most ten times a second and
/// erased at the end, so that the table on stdout starts on a clean line. Off a terminal it
/// writes nothing (a log file should not fill with carriage returns).
pub struct StepCounter<W: Write> {
    out: Option<W>,
    total: u64,
    start: Instant,
    last_draw: Option<Instant>,
    width: usize,
}

impl StepCounter<std::io::Stderr> {
    /// A counter over `total` steps on stderr, drawn only when stderr is a terminal and `enabled`.
    pub fn stderr(total: u64, enabled: bool) -> Self {
        let err = std::io::stderr();
        let tty = err.is_terminal();
        Self::new((enabled && tty).then_some(err), total)
    }
}

impl<W: Write> StepCounter<W> {
    /// A counter drawing on `out` (None: draws nothing).
    pub fn new(out: Option<W>, total: u64) -> Self {
        Self {
            out,
            total,
            start: Instant::now(),
            last_draw: None,
            width: 0,
        }
    }

    /// `done` steps of the total are finished; redraws when a tenth of a second has passed since
    /// the last drawing, and always at the first and the last step.
    pub fn tick(&mut self, done: u64) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let now = Instant::now();
        let due = self
            .last_draw
            .is_none_or(|t| now.duration_since(t).as_millis() >= 100);
        if !(due || done >= self.total) {
            return;
        }
        self.last_draw = Some(now);
        let secs = now.duration_since(self.start).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let mut line = format!(
            "step {done}/{}  {}  {} elapsed",
            self.total,
            if done > 0 {
                format!("{rate:.3} steps/s")
            } else {
                "- steps/s".to_string()
            },
            clock(secs)
        );
        if done > 0 && done < self.total && rate > 0.0 {
            line.push_str(&format!(
                ", about {} left",
                clock((self.total - done) as f64 / rate)
            ));
        }
        let pad = self.width.saturating_sub(line.chars().count());
        self.width = self.width.max(line.chars().count());
        let _ = write!(out, "\r{line}{}", " ".repeat(pad));
        let _ = out.flush();
    }

    /// Erases the line (nothing was drawn: nothing to erase).
    pub fn finish(&mut self) {
        if let (Some(out), true) = (self.out.as_mut(), self.width > 0) {
            let _ = write!(out, "\r{}\r", " ".repeat(self.width));
            let _ = out.flush();
        }
        self.width = 0;
    }

    /// The writer (for tests).
    pub fn into_inner(self) -> Option<W> {
        self.out
    }
}

fn clock(secs: f64) -> String {
    let s = secs as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_counter_draws_steps_per_second_on_one_line_and_erases_it() {
        let mut c = StepCounter::new(Some(Vec::new()), 1000);
        c.tick(0);
        std::thread::sleep(std::time::Duration::from_millis(120));
        c.tick(500);
        c.tick(501); // within a tenth of a second of the last drawing: not drawn
        c.tick(1000); // the last step is always drawn
        c.finish();
        let text = String::from_utf8(c.into_inner().unwrap()).unwrap();
        assert!(!text.contains('\n'), "{text:?}");
        let lines: Vec<&str> = text.split('\r').filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert!(lines[0].starts_with("step 0/1000  - steps/s"), "{text:?}");
        assert!(
            lines[1].starts_with("step 500/1000  ")
                && lines[1].contains(" steps/s")
                && lines[1].contains("left"),
            "{text:?}"
        );
        assert!(lines[2].starts_with("step 1000/1000  "), "{text:?}");
        // Erased at the end: the last thing written is blanks and a carriage return.
        assert!(
            text.ends_with(&format!("\r{}\r", " ".repeat(lines[1].len()))),
            "{text:?}"
        );
    }

    #[test]
    fn a_counter_without_a_terminal_writes_nothing() {
        let mut c = StepCounter::<Vec<u8>>::new(None, 10);
        for i in 0..=10 {
            c.tick(i);
        }
        c.finish();
        assert!(c.into_inner().is_none());
    }
}

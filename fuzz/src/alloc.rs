//! A counting global allocator that stops a call allocating without bound.
//!
//! While a call is armed ([`arm`]), every allocation adds to the bytes live since the call began;
//! when they would exceed the cap, the allocator disarms itself, saves the call's input (the
//! runner stores it in [`CURRENT`] before the call), prints what happened and aborts, before
//! asking the system for the memory. Allocations on other threads count too, but the fuzzer has
//! no other thread that allocates during a call (the watchdog only sleeps and reads atomics).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bytes allocated and not yet freed, by anyone.
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// [`LIVE`] when the armed call began.
static BASE: AtomicIsize = AtomicIsize::new(0);
/// The most bytes an armed call may have live beyond [`BASE`].
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Whether a call is being watched.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The most bytes live beyond [`BASE`] during the current (or last) armed call.
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// The input of the call in progress and where a crash input goes, for the allocator and the
/// watchdog (which cannot be handed them).
pub static CURRENT: Mutex<Current> = Mutex::new(Current {
    input: Vec::new(),
    crash_dir: None,
    target: String::new(),
});

/// What [`CURRENT`] holds.
pub struct Current {
    /// The input being run.
    pub input: Vec<u8>,
    /// Where crash inputs are saved.
    pub crash_dir: Option<PathBuf>,
    /// The target's name.
    pub target: String,
}

/// The fuzzer's allocator: the system's, counted.
pub struct Counting;

fn over_cap(size: usize) -> bool {
    if !ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let live = LIVE.load(Ordering::Relaxed) + size as isize - BASE.load(Ordering::Relaxed);
    PEAK.fetch_max(live, Ordering::Relaxed);
    live > 0 && live as usize > CAP.load(Ordering::Relaxed)
}

#[cold]
fn trip(size: usize) -> ! {
    // Disarmed first: what follows allocates, through this allocator, unchecked.
    ARMED.store(false, Ordering::SeqCst);
    let cap = CAP.load(Ordering::Relaxed);
    let live = LIVE.load(Ordering::Relaxed) - BASE.load(Ordering::Relaxed);
    let saved = match CURRENT.try_lock() {
        Ok(c) => match &c.crash_dir {
            Some(dir) => crate::save_crash(
                dir,
                &c.target,
                "alloc",
                &c.input,
                &format!(
                    "one call asked for {size} bytes with {live} already live since it began; \
                     the cap is {cap} bytes"
                ),
            )
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("(not saved: {e})")),
            None => "(no crash directory)".into(),
        },
        Err(_) => "(not saved: the input was being stored)".into(),
    };
    eprintln!(
        "lossfuse-fuzz: unbounded allocation: one call asked for {size} bytes with {live} bytes \
         already live since it began, over the cap of {cap} bytes; input saved to {saved}; \
         aborting"
    );
    std::process::abort();
}

// SAFETY: every method forwards to `System` with the same arguments; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if over_cap(layout.size()) {
            trip(layout.size());
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if over_cap(layout.size()) {
            trip(layout.size());
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grow = new_size.saturating_sub(layout.size());
        if grow > 0 && over_cap(grow) {
            trip(new_size);
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Starts watching a call: from now until [`disarm`], more than `cap` bytes live beyond what is
/// live now aborts the process (after saving [`CURRENT`]'s input).
pub fn arm(cap: usize) {
    CAP.store(cap, Ordering::SeqCst);
    BASE.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
}

/// Stops watching; returns the most bytes the call had live beyond the start.
pub fn disarm() -> usize {
    ARMED.store(false, Ordering::SeqCst);
    PEAK.load(Ordering::SeqCst).max(0) as usize
}

/// Bytes live now (for the summary).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed).max(0) as usize
}

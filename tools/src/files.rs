//! Files the CLI writes: checked before a run, written atomically.
//!
//! - [`check_output`]: the directory of an output exists and can be written, so that a run of
//!   many steps (or a long benchmark) fails in its first second instead of at its end.
//! - [`write_atomic`]: the bytes go to a temporary file in the same directory, which is flushed,
//!   synced and renamed over the final path. An interrupted run (Ctrl-C during `eval --steps`, a
//!   full disk, a failed encoder) never leaves a half-written output: the final path holds either
//!   its previous content or the complete new one. A failed write removes its temporary; only a
//!   process killed in the middle of a write leaves one behind, named `.NAME.PID.N.tmp`.
//! - [`same_file`]: whether two paths name one file (`eval --output` must not be its `--input`).

use crate::error::{CliError, CliResult};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory a file `path` is written in ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A fresh temporary file beside `path` (created, so no two writers share one).
fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes its temporary file when dropped, unless the write completed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Checks that `path` (the value of `flag`, e.g. "--output") can be written: it is not a
/// directory, and its directory exists, is a directory and accepts a new file (tried by creating
/// and removing a temporary one, which is what [`write_atomic`] will do).
pub fn check_output(path: &Path, flag: &str) -> CliResult<()> {
    let err = |m: String| CliError::Usage(format!("{flag} {}: {m}", path.display()));
    if path.is_dir() {
        return Err(err("is a directory; give a file name".into()));
    }
    let dir = parent_dir(path);
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(err(format!("directory '{}' does not exist", dir.display())))
        }
        Err(e) => return Err(err(format!("directory '{}': {e}", dir.display()))),
        Ok(m) if !m.is_dir() => return Err(err(format!("'{}' is not a directory", dir.display()))),
        Ok(_) => {}
    }
    let (tmp, file) = create_temp(path).map_err(|e| {
        err(format!(
            "cannot create a file in directory '{}': {e}",
            dir.display()
        ))
    })?;
    drop(file);
    drop(TempFile {
        path: tmp,
        keep: false,
    });
    Ok(())
}

/// Writes `path` atomically: `write` fills a temporary file beside it, which is then flushed,
/// synced and renamed to `path`. On any error the temporary is removed and `path` is untouched.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> CliResult<()> {
    let fail = |what: &str, e: io::Error| CliError::file(path, format!("{what}: {e}"));
    let (tmp, file) = create_temp(path).map_err(|e| {
        fail(
            &format!(
                "cannot create a temporary file in '{}'",
                parent_dir(path).display()
            ),
            e,
        )
    })?;
    let mut guard = TempFile {
        path: tmp,
        keep: false,
    };
    let mut w = BufWriter::new(file);
    write(&mut w).map_err(|e| fail("cannot write", e))?;
    let file = w
        .into_inner()
        .map_err(|e| fail("cannot write", e.into_error()))?;
    file.sync_all().map_err(|e| fail("cannot write", e))?;
    drop(file);
    fs::rename(&guard.path, path)
        .map_err(|e| fail(&format!("cannot rename {} to it", guard.path.display()), e))?;
    guard.keep = true;
    Ok(())
}

/// [`write_atomic`] of a byte string.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> CliResult<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Whether `a` and `b` are the same file: the same canonical path (through symbolic links,
/// `..` and `.`), or on Unix the same device and inode (a hard link). False when either does not
/// exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(x), Ok(y)) = (fs::canonicalize(a), fs::canonicalize(b)) {
        if x == y {
            return true;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (fs::metadata(a), fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("lossfuse-files-test-{}", std::process::id()))
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_final_path_appears_only_when_the_write_is_complete() {
        let dir = scratch("complete");
        let out = dir.join("out.bin");
        write_atomic(&out, |w| {
            w.write_all(b"first half ")?;
            w.flush()?;
            // Mid-write: the bytes are in a temporary beside the output, not in the output.
            assert!(
                !out.exists(),
                "the output exists before the write completed"
            );
            let names = entries(&dir);
            assert_eq!(names.len(), 1, "{names:?}");
            assert!(names[0].starts_with(".out.bin.") && names[0].ends_with(".tmp"));
            w.write_all(b"second half")
        })
        .unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"first half second half");
        assert_eq!(entries(&dir), ["out.bin"]);
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_removes_the_temporary() {
        let dir = scratch("failed");
        let out = dir.join("out.bin");
        fs::write(&out, b"previous").unwrap();
        let e = write_atomic(&out, |w| {
            w.write_all(&[7u8; 100_000])?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("out.bin") && e.contains("interrupted"), "{e}");
        assert_eq!(fs::read(&out).unwrap(), b"previous");
        assert_eq!(entries(&dir), ["out.bin"]);
        // And with no previous file, none appears.
        let fresh = dir.join("fresh.bin");
        assert!(write_atomic(&fresh, |_| Err(io::Error::other("no"))).is_err());
        assert!(!fresh.exists());
        assert_eq!(entries(&dir), ["out.bin"]);
    }

    #[test]
    fn outputs_are_checked_before_a_run() {
        let dir = scratch("check");
        check_output(&dir.join("ok.bin"), "--output").unwrap();
        assert!(entries(&dir).is_empty(), "the probe file was left behind");
        let e = check_output(&dir.join("missing/out.bin"), "--output")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--output") && e.contains("does not exist"),
            "{e}"
        );
        fs::write(dir.join("file"), b"").unwrap();
        let e = check_output(&dir.join("file/out.bin"), "--json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--json") && e.contains("not a directory"), "{e}");
        let e = check_output(&dir, "--csv").unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        // A file system that takes no new file, whoever we are (root included).
        #[cfg(target_os = "linux")]
        {
            let e = check_output(Path::new("/proc/lossfuse-out.bin"), "--output")
                .unwrap_err()
                .to_string();
            assert!(e.contains("cannot create a file"), "{e}");
        }
    }

    #[test]
    fn same_file_sees_through_other_paths() {
        let dir = scratch("same");
        let a = dir.join("a.bin");
        fs::write(&a, b"x").unwrap();
        assert!(same_file(&a, &a));
        assert!(same_file(&a, &dir.join(".").join("a.bin")));
        fs::create_dir(dir.join("sub")).unwrap();
        assert!(same_file(&a, &dir.join("sub/../a.bin")));
        fs::hard_link(&a, dir.join("hard.bin")).unwrap();
        assert!(same_file(&a, &dir.join("hard.bin")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&a, dir.join("link.bin")).unwrap();
            assert!(same_file(&a, &dir.join("link.bin")));
        }
        fs::write(dir.join("b.bin"), b"x").unwrap();
        assert!(!same_file(&a, &dir.join("b.bin")));
        assert!(!same_file(&a, &dir.join("none.bin")));
    }
}

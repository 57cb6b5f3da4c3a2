//! A private `XDG_RUNTIME_DIR` when the environment has none.
//!
//! Mesa's EGL (the GL adapter) prints "error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment." on stderr when the variable is unset or names no directory, as in containers,
//! CI and `sudo`. The message is harmless but reads like the command failing. [`ensure`] runs at
//! the very start of `main`, before any thread or adapter exists (setting an environment
//! variable is only sound then): when the variable is unset or not an existing directory, it
//! makes (or reuses) `<temp>/lossfuse-runtime-<uid>`, private to this user (mode 0700), and sets
//! the variable for this process and its children.

use std::path::{Path, PathBuf};

/// Why a candidate directory cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// It exists but is not a directory (or is a symbolic link, which another user could
    /// point elsewhere).
    NotADirectory,
    /// It belongs to another user.
    Owner(u32),
    /// Its mode is not 0700.
    Mode(u32),
    /// It could not be created or inspected.
    Io(std::io::ErrorKind),
}

/// The directory `dir`, created with mode 0700 when missing, if it is a private directory of
/// user `uid` (a real directory, owned by `uid`, mode 0700). An existing directory is reused
/// only as it is: its mode is never changed, so one made by someone else is never adopted.
#[cfg(unix)]
pub fn private_dir(dir: &Path, uid: u32) -> Result<PathBuf, Unusable> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Unusable::Io(e.kind())),
    }
    // symlink_metadata: a link is not followed (nor accepted).
    let m = std::fs::symlink_metadata(dir).map_err(|e| Unusable::Io(e.kind()))?;
    if !m.file_type().is_dir() {
        return Err(Unusable::NotADirectory);
    }
    if m.uid() != uid {
        return Err(Unusable::Owner(m.uid()));
    }
    // The umask may have narrowed what `create` asked for, never widened it; 0700 exactly.
    if m.mode() & 0o7777 != 0o700 {
        return Err(Unusable::Mode(m.mode() & 0o7777));
    }
    Ok(dir.to_path_buf())
}

/// Whether the variable's value `v` names an existing directory.
fn usable(v: Option<std::ffi::OsString>) -> bool {
    v.is_some_and(|v| !v.is_empty() && Path::new(&v).is_dir())
}

/// Sets `XDG_RUNTIME_DIR` to a private directory when it is unset or not an existing directory;
/// returns the directory set, if any. Call it first in `main`, before any other thread exists.
#[cfg(unix)]
pub fn ensure() -> Option<PathBuf> {
    if usable(std::env::var_os("XDG_RUNTIME_DIR")) {
        return None;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let base = std::env::temp_dir();
    // The shared name first; if another user's or a wrong-mode directory squats on it, one of
    // this process's own.
    let candidates = [
        base.join(format!("lossfuse-runtime-{uid}")),
        base.join(format!("lossfuse-runtime-{uid}-{}", std::process::id())),
    ];
    let dir = candidates.iter().find_map(|c| private_dir(c, uid).ok())?;
    // Sound here: `main` calls this before any other thread is started.
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    Some(dir)
}

/// Elsewhere there is no Mesa EGL to appease.
#[cfg(not(unix))]
pub fn ensure() -> Option<PathBuf> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn base(name: &str) -> PathBuf {
        let d = std::env::temp_dir()
            .join(format!("lossfuse-runtime-test-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_private_directory_is_made_with_mode_0700_and_reused() {
        let uid = unsafe { libc::geteuid() };
        let dir = base("made").join("rt");
        assert_eq!(private_dir(&dir, uid), Ok(dir.clone()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        std::fs::write(dir.join("socket-ish"), b"").unwrap();
        // Reused as it is.
        assert_eq!(private_dir(&dir, uid), Ok(dir.clone()));
        assert!(dir.join("socket-ish").exists());
    }

    #[test]
    fn a_directory_that_is_not_private_is_refused() {
        let uid = unsafe { libc::geteuid() };
        let b = base("refused");
        let open = b.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&open, uid), Err(Unusable::Mode(0o755)));
        assert_eq!(private_dir(&open, uid + 1), Err(Unusable::Owner(uid)));
        let file = b.join("file");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(private_dir(&file, uid), Err(Unusable::NotADirectory));
        let target = b.join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = b.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(private_dir(&link, uid), Err(Unusable::NotADirectory));
    }

    #[test]
    fn only_an_existing_directory_counts_as_set() {
        assert!(!usable(None));
        assert!(!usable(Some("".into())));
        assert!(!usable(Some("/no/such/lossfuse/dir".into())));
        assert!(usable(Some(std::env::temp_dir().into_os_string())));
    }
}

//! State files are private to their user (transcripts, chat history,
//! cooldowns): folders 0700, files 0600, whatever the umask; files an
//! earlier version left readable by others are tightened, and said so.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Permission bits for group and others.
const SHARED: u32 = 0o077;

/// The folder `dir` (created 0700 with its missing parents), tightened to
/// 0700 when it is the user's own and not a shared sticky folder such as
/// `/tmp`. Returns what it changed.
pub fn private_dir(dir: &Path) -> io::Result<Option<String>> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        return Ok(None);
    }
    let meta = fs::metadata(dir)?;
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & SHARED != 0 && !sticky && meta.uid() == own_uid(dir)? {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        return Ok(Some(format!(
            "{} was readable by other users ({:o}); now 0700",
            dir.display(),
            mode & 0o777
        )));
    }
    Ok(None)
}

/// The file `path`: created empty with 0600 when missing, tightened to
/// 0600 when it exists with bits for others. Returns what it changed.
pub fn private_file(path: &Path) -> io::Result<Option<String>> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mode = fs::metadata(path)?.mode();
            if mode & SHARED != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
                return Ok(Some(format!(
                    "{} was readable by other users ({:o}); now 0600",
                    path.display(),
                    mode & 0o777
                )));
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Tightens an existing file (the WAL and shared-memory files SQLite
/// makes), leaving a missing one alone.
fn tighten_existing(path: &Path) -> io::Result<Option<String>> {
    if path.exists() {
        private_file(path)
    } else {
        Ok(None)
    }
}

/// The current user's id, read off a file this process just made (no
/// `unsafe` call to `getuid`).
fn own_uid(dir: &Path) -> io::Result<u32> {
    let probe = dir.join(format!(".clawgate-uid-{}", std::process::id()));
    let made = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe);
    match made {
        Ok(_) => {
            let uid = fs::metadata(&probe)?.uid();
            let _ = fs::remove_file(&probe);
            Ok(uid)
        }
        // A folder this process cannot write in is not its own.
        Err(_) => Ok(u32::MAX),
    }
}

/// Everything a session database at `path` needs private before SQLite
/// opens it: its folder, the file, its `-wal` and `-shm`. Each change is
/// logged as a warning.
pub fn prepare(path: &Path) -> io::Result<()> {
    let mut notices = Vec::new();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        notices.extend(private_dir(dir)?);
    }
    notices.extend(private_file(path)?);
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        notices.extend(tighten_existing(Path::new(&side))?);
    }
    for n in notices {
        tracing::warn!("state: {n}");
    }
    Ok(())
}

/// Paths under `dir` (and `dir` itself) that other users can read:
/// what `security audit` reports.
pub fn readable_by_others(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(meta) = fs::metadata(dir) else {
        return out;
    };
    if meta.mode() & 0o007 != 0 || meta.mode() & 0o070 != 0 {
        out.push(format!("{} ({:o})", dir.display(), meta.mode() & 0o777));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten().take(1_000) {
            if let Ok(m) = e.metadata() {
                if m.is_file() && m.mode() & SHARED != 0 {
                    out.push(format!("{} ({:o})", e.path().display(), m.mode() & 0o777));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sec_state_is_created_private_and_tightened() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/state");
        private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let f = dir.join("x");
        private_file(&f).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(readable_by_others(&dir).len(), 2);
        assert!(private_file(&f).unwrap().unwrap().contains("now 0600"));
        assert!(private_dir(&dir).unwrap().unwrap().contains("now 0700"));
        assert!(readable_by_others(&dir).is_empty());
        // A shared sticky folder is never tightened.
        let shared = t.path().join("tmp");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(private_dir(&shared).unwrap(), None);
        assert_eq!(fs::metadata(&shared).unwrap().mode() & 0o7777, 0o1777);
    }
}

//! Reading the files a config names (the config itself, `$include`s, file
//! SecretRefs): only regular files, and never more than a bound, so a
//! path to `/dev/zero`, `/dev/urandom` or a FIFO is an error, not a hang
//! or a process killed for its memory.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest config or included file read.
pub const MAX_CONFIG_FILE: u64 = 8 * 1024 * 1024;

/// The text of the regular file at `path`, at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> io::Result<String> {
    // Non-blocking open: a FIFO with no writer would otherwise block the
    // open itself; the kind is then judged on the opened descriptor.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or directory is never read)",
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", max / (1024 * 1024)),
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(too_big());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sec_devices_fifos_and_large_files_are_refused() {
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null", "/"] {
            let e = read_regular(Path::new(dev), MAX_CONFIG_FILE).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{dev}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = read_regular(&fifo, MAX_CONFIG_FILE).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b' '; 2048]).unwrap();
        assert!(read_regular(&big, 1024)
            .unwrap_err()
            .to_string()
            .contains("larger"));
        assert_eq!(read_regular(&big, 4096).unwrap().len(), 2048);
    }
}

//! How turnout creates its files (divergence log, read-diff report and
//! summary, audit log, state file, backfill checkpoint, HTML report): mode
//! 0600, or 0640 with `log.group_readable`, whatever the umask; a file
//! replaced whole is written to a temporary file opened with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` (never through a link someone placed
//! there), synced, then renamed over the target.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static GROUP_READABLE: AtomicBool = AtomicBool::new(false);

/// Files created from now on are readable by their group too (0640).
pub fn set_group_readable(on: bool) {
    GROUP_READABLE.store(on, Ordering::Relaxed);
}

/// The mode new files get.
pub fn mode() -> u32 {
    if GROUP_READABLE.load(Ordering::Relaxed) {
        0o640
    } else {
        0o600
    }
}

/// Opens `path` for appending, creating it with [`mode`]; an existing
/// file is made no more open than that.
pub fn append(path: &Path, read: bool) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(read)
        .mode(mode())
        .open(path)?;
    restrict(&f)?;
    Ok(f)
}

/// Creates `path` whole (truncating it), with [`mode`].
pub fn create(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode())
        .open(path)?;
    restrict(&f)?;
    Ok(f)
}

/// Takes group-write and all "other" bits off an existing file.
fn restrict(f: &File) -> std::io::Result<()> {
    let m = f.metadata()?.permissions().mode() & 0o777;
    let wanted = m & mode();
    if wanted != m {
        f.set_permissions(std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes`: written to `<path>.tmp` (created
/// exclusively, not following a link; a leftover from a crash, or a link
/// someone placed, is removed first), synced, renamed over `path`, and the
/// directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, true)
}

/// [`write_atomically`] without the syncs, for a file rewritten often and
/// derived from others (the read-diff summary): a crash may lose its last
/// version, never leave it half written.
pub fn replace_quietly(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode())
            .open(&tmp)
    };
    let mut f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Unlinking removes a link itself, never what it points to.
            std::fs::remove_file(&tmp)?;
            open()?
        }
        Err(e) => return Err(e),
    };
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_a_planted_link_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("turnout-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.join("state.json");
        std::os::unix::fs::symlink(&victim, dir.join("state.json.tmp")).unwrap();
        write_atomically(&target, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        let m = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m(&target), 0o600);
        let log = dir.join("log.jsonl");
        append(&log, false).unwrap();
        assert_eq!(m(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        append(&log, false).unwrap();
        assert_eq!(m(&log), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

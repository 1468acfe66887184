//! Writing files so that nothing is lost: the one atomic writer every diem crate uses (observation files,
//! checkpoints, run directories, figures, feature statistics, downloads, benchmark reports).
//!
//! A write fills `.name.tmp-PID` beside the target (the process id tells a live writer's file from one a killed
//! process left), syncs it and renames it over the target, so a kill leaves either the old file or the new one,
//! and at most a stale temporary file ([`is_temp_file`] tells which, for cleaning). A failed write removes its
//! temporary file. A symbolic link is written through (its target is replaced, the link stays); a path that
//! exists and is not a regular file (a directory, a device such as `/dev/stdout`, a FIFO) is refused rather than
//! replaced.
//!
//! Three entry points, one protocol: [`write_atomic`] (bytes), [`write_atomic_with`] (a closure filling the open
//! file) and [`write_atomic_path`] (a closure given the temporary *path*, for libraries that write to a path
//! themselves, such as image encoders or `curl -o`; the temporary name keeps the target's extension, since some
//! of them choose the format by it).
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("report.md");
//! diem_fs::write_atomic(&path, b"# lap table")?;
//! diem_fs::write_atomic_path(&path, |tmp| std::fs::write(tmp, "# lap table, again"))?;
//! assert_eq!(std::fs::read_to_string(&path)?, "# lap table, again");
//! assert_eq!(std::fs::read_dir(dir.path())?.count(), 1); // no temporary file left
//! # Ok(()) }
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

/// Writes `path` atomically (module docs): `write` fills the temporary file, which is synced and renamed
/// over the file `path` names (through symbolic links). On failure the temporary file is removed.
///
/// # Errors
/// `write`'s error, or the IO error (as `E`) of resolving the target, creating, syncing or renaming.
pub fn write_atomic_with<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let target = write_target(path)?;
    let tmp = temp_path(&target);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        Ok(())
    })();
    if result.is_err() {
        // Best effort: the temporary file is useless after a failure.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where a write to `path` lands: `path` itself, or the file a symbolic link at `path` points to (followed
/// through chains, a dangling link's target included).
///
/// # Errors
/// [`std::io::ErrorKind::InvalidInput`] when the path (after links) exists and is not a regular file, or the
/// links loop; other IO errors as they come.
pub fn write_target(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "exists and is not a regular file ({}): diem writes through a temporary file and a \
                     rename, which needs a regular file path",
                    file_type_name(&meta)
                ),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)?;
                p = if link.is_absolute() { link } else { p.parent().unwrap_or(Path::new("")).join(link) };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "too many levels of symbolic links"))
}

/// Writes `bytes` to `path` atomically (module docs).
///
/// # Errors
/// The IO error of resolving the target, creating, writing, syncing or renaming.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| std::io::Write::write_all(f, bytes))
}

/// Writes `path` atomically (module docs) through a writer that needs a path rather than an open file: `write`
/// creates the temporary file `dir/.name.tmp-PID.ext` (the target's extension kept), which is then synced and
/// renamed over the file `path` names. On failure the temporary file is removed.
///
/// # Errors
/// `write`'s error, or the IO error (as `E`) of resolving the target, syncing or renaming; a `write` that
/// returns `Ok` without creating the file gives [`std::io::ErrorKind::NotFound`].
pub fn write_atomic_path<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let target = write_target(path)?;
    let tmp = temp_path_keeping_extension(&target);
    let result = (|| {
        write(&tmp)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        Ok(())
    })();
    if result.is_err() {
        // Best effort: the temporary file is useless after a failure.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp-PID.ext` for `dir/name.ext` (`dir/.name.tmp-PID` without an extension): where
/// [`write_atomic_path`] lets its writer write.
pub fn temp_path_keeping_extension(path: &Path) -> PathBuf {
    let tmp = temp_path(path);
    match path.extension() {
        Some(ext) => {
            let mut name = tmp.file_name().unwrap_or_default().to_os_string();
            name.push(".");
            name.push(ext);
            tmp.with_file_name(name)
        }
        None => tmp,
    }
}

/// `dir/.name.tmp-PID` for `dir/name`: where [`write_atomic_with`] writes before its rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// The process id in a temporary file name written by this module (`.name.tmp-PID`, or `.name.tmp-PID.ext`
/// from [`write_atomic_path`]), or `None` for any other name.
pub fn is_temp_file(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (stem, tail) = rest.rsplit_once(".tmp-")?;
    let pid = tail.split_once('.').map_or(tail, |(pid, _ext)| pid);
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// A short name for what a path that is not a regular file is.
pub fn file_type_name(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Reads a whole regular file (a FIFO or a device is refused: reading one could block or never end).
///
/// # Errors
/// The IO error, or [`std::io::ErrorKind::InvalidInput`] for a path that is not a regular file.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", file_type_name(&meta)),
        ));
    }
    std::fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_follow_links_and_refuse_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        write_atomic_with::<std::io::Error>(&file, |f| std::io::Write::write_all(f, b"one")).unwrap();
        write_atomic_with::<std::io::Error>(&file, |f| std::io::Write::write_all(f, b"two")).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        // A failing write leaves the old content and no temporary file.
        let err = write_atomic_with(&file, |_| Err(std::io::Error::other("boom")));
        assert!(err.is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Through a symbolic link: the target changes, the link stays a link.
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_atomic_with::<std::io::Error>(&link, |f| std::io::Write::write_all(f, b"three")).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"three");
        // A directory is refused, not replaced.
        let err = write_atomic_with::<std::io::Error>(dir.path(), |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        assert!(read_regular(dir.path()).is_err());
        assert_eq!(is_temp_file(".state.bin.tmp-42"), Some(42));
        assert_eq!(is_temp_file("state.bin"), None);
    }

    #[test]
    fn path_writers_keep_the_extension_sync_rename_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("figure.png");
        let mut seen = None;
        write_atomic_path::<std::io::Error>(&file, |tmp| {
            seen = Some(tmp.to_path_buf());
            std::fs::write(tmp, b"png")
        })
        .unwrap();
        let tmp = seen.unwrap();
        assert_eq!(tmp.extension().unwrap(), "png", "{}", tmp.display());
        assert_eq!(is_temp_file(&tmp.file_name().unwrap().to_string_lossy()), Some(std::process::id()));
        assert_eq!(std::fs::read(&file).unwrap(), b"png");
        // A failing writer leaves the old file and nothing else, even when it wrote part of its output.
        let err = write_atomic_path(&file, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("encoder failed"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"png");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A writer that creates nothing is an error, not a silent success.
        let err = write_atomic_path::<std::io::Error>(&file, |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        // Bytes, through a link.
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert_eq!(is_temp_file(".figure.png.tmp-7.png"), Some(7));
        assert_eq!(is_temp_file(".figure.png.tmp-x.png"), None);
    }
}

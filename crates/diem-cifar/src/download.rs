//! Downloading the official archive with the system `curl` and checking its MD5.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};

use crate::error::{CifarError, Result};
use crate::format::ARCHIVE_NAME;

/// The official archive's address.
pub const CIFAR_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The official archive's MD5 checksum (lowercase hex).
pub const CIFAR_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Where and how to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOptions {
    /// The address ([`CIFAR_URL`]).
    pub url: String,
    /// The expected MD5 in lowercase hex ([`CIFAR_MD5`]); `None` skips the check.
    pub md5: Option<String>,
    /// The `curl` program (`curl`, found on `PATH`).
    pub curl: PathBuf,
    /// Seconds allowed to connect (curl's `--connect-timeout`).
    pub connect_timeout_s: u32,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            url: CIFAR_URL.into(),
            md5: Some(CIFAR_MD5.into()),
            curl: PathBuf::from("curl"),
            connect_timeout_s: 30,
        }
    }
}

/// The MD5 of a file, as lowercase hex.
///
/// # Errors
/// [`CifarError::Io`] naming the file.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| CifarError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| CifarError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Downloads the archive into `dir/cifar-10-binary.tar.gz` with `curl` (progress on the terminal), checks
/// its MD5, and returns its path. The download goes to a temporary name that is renamed only after the
/// checksum matched, so an interrupted or corrupt download never looks like the archive.
///
/// # Errors
/// [`CifarError::Download`] when `curl` is missing, the host cannot be reached (offline), the server
/// answers with an error, or the checksum differs; each message says where to put the file by hand.
/// [`CifarError::Io`] when `dir` cannot be created.
pub fn download_archive(dir: &Path, options: &DownloadOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| CifarError::io(dir, e))?;
    let target = dir.join(ARCHIVE_NAME);
    let by_hand = format!(
        "download {} in a browser (or on a machine with internet access) and put it at {} \
         (or extract it there, giving {}/)",
        options.url,
        target.display(),
        dir.join(crate::format::FOLDER_NAME).display()
    );
    let fail = |reason: String| CifarError::Download { url: options.url.clone(), reason };
    eprintln!("diem-cifar: downloading {} to {}", options.url, target.display());
    // The download lands under a temporary name (diem_fs::write_atomic_path) and is renamed only after the
    // checksum matched.
    enum Step {
        Io(std::io::Error),
        Fail(CifarError),
    }
    impl From<std::io::Error> for Step {
        fn from(e: std::io::Error) -> Self {
            Self::Io(e)
        }
    }
    let fetched = diem_fs::write_atomic_path(&target, |tmp: &Path| -> std::result::Result<(), Step> {
        let status = Command::new(&options.curl)
            .arg("--location")
            .arg("--fail")
            .arg("--connect-timeout")
            .arg(options.connect_timeout_s.to_string())
            .arg("--output")
            .arg(tmp)
            .arg(&options.url)
            .status();
        let status = match status {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Step::Fail(fail(format!(
                    "`{}` was not found: install curl (e.g. `apt-get install curl`) or {by_hand}",
                    options.curl.display()
                ))));
            }
            Err(e) => {
                return Err(Step::Fail(fail(format!(
                    "cannot run `{}`: {e}; {by_hand}",
                    options.curl.display()
                ))))
            }
        };
        if !status.success() {
            let why = match status.code() {
                Some(5..=7) => "the host cannot be reached (offline, no DNS or a firewall?)".to_string(),
                Some(28) => "the connection timed out (offline or a slow network?)".to_string(),
                Some(22) => "the server answered with an HTTP error".to_string(),
                Some(c) => format!("curl exited with code {c}"),
                None => "curl was killed by a signal".to_string(),
            };
            return Err(Step::Fail(fail(format!("{why}; {by_hand}"))));
        }
        if let Some(expected) = &options.md5 {
            let got = md5_file(tmp).map_err(Step::Fail)?;
            if !got.eq_ignore_ascii_case(expected) {
                return Err(Step::Fail(fail(format!(
                    "the MD5 of the downloaded file is {got}, expected {expected} (corrupt or wrong file); {by_hand}"
                ))));
            }
        }
        Ok(())
    });
    match fetched {
        Ok(()) => Ok(target),
        Err(Step::Fail(e)) => Err(e),
        Err(Step::Io(e)) => Err(CifarError::io(&target, e)),
    }
}

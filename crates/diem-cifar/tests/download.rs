//! The download path without the network: an unreachable address, a missing `curl`, a checksum mismatch and
//! a successful `file://` download, plus the "not found" hint.

use std::path::PathBuf;

use diem_cifar::format::ARCHIVE_NAME;
use diem_cifar::{download_archive, md5_file, CifarError, CifarSource, DownloadOptions, CIFAR_URL};

fn curl_available() -> bool {
    std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn md5_of_a_known_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc");
    std::fs::write(&path, b"abc").unwrap();
    assert_eq!(md5_file(&path).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
}

#[test]
fn unreachable_host_gives_a_clear_offline_error() {
    if !curl_available() {
        eprintln!("skipping: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Port 9 on the loopback address: nothing listens, the connection is refused at once.
    let options = DownloadOptions {
        url: "http://127.0.0.1:9/cifar-10-binary.tar.gz".into(),
        connect_timeout_s: 5,
        ..DownloadOptions::default()
    };
    let err = download_archive(dir.path(), &options).unwrap_err();
    assert!(matches!(err, CifarError::Download { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("cannot be reached"), "{msg}");
    assert!(msg.contains(&dir.path().join(ARCHIVE_NAME).display().to_string()), "{msg}");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[test]
fn missing_curl_says_how_to_get_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = DownloadOptions {
        curl: PathBuf::from("/nonexistent/bin/curl-for-diem-tests"),
        ..DownloadOptions::default()
    };
    let msg = download_archive(dir.path(), &options).unwrap_err().to_string();
    assert!(msg.contains("was not found") && msg.contains(CIFAR_URL) && msg.contains(ARCHIVE_NAME), "{msg}");
}

#[test]
fn checksum_is_verified_before_the_archive_appears() {
    if !curl_available() {
        eprintln!("skipping: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("mirror.bin");
    std::fs::write(&source, b"pretend archive").unwrap();
    let url = format!("file://{}", source.display());
    let target = dir.path().join("dl");
    let wrong = DownloadOptions { url: url.clone(), md5: Some("0".repeat(32)), ..DownloadOptions::default() };
    let msg = download_archive(&target, &wrong).unwrap_err().to_string();
    assert!(msg.contains("MD5"), "{msg}");
    assert!(leftovers(&target).is_empty(), "{:?}", leftovers(&target));

    let right = DownloadOptions { url, md5: Some(md5_file(&source).unwrap()), ..DownloadOptions::default() };
    let path = download_archive(&target, &right).unwrap();
    assert_eq!(path, target.join(ARCHIVE_NAME));
    assert_eq!(std::fs::read(&path).unwrap(), b"pretend archive");
}

#[test]
fn missing_data_set_names_the_folder_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = CifarSource::find(dir.path()).unwrap_err();
    assert!(matches!(err, CifarError::NotFound { .. }));
    let msg = err.to_string();
    assert!(msg.contains(ARCHIVE_NAME) && msg.contains("--download"), "{msg}");
}

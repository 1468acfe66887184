//! Extraction of `reconstruction_rss` slices through the embedded h5py script: values, slice selection,
//! short volumes, splits and errors that name the file.

mod common;

use common::{python, run_python, value, write_volume};
use diem_fastmri::{extract, load_volume, FastMriError, Split};

#[test]
fn round_trip_keeps_slices_10_to_40_with_the_values_python_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("raw");
    write_volume(&root.join("singlecoil_train/a.h5"), 44, 8);
    write_volume(&root.join("singlecoil_train/b.h5"), 25, 8);
    write_volume(&root.join("singlecoil_train/c.h5"), 8, 8);
    write_volume(&root.join("singlecoil_val/d.h5"), 41, 8);
    let cache = dir.path().join("cache");
    let index = extract(&python(), &root, &cache, (10, 40), None, false).unwrap();
    let files: Vec<&str> = index.volumes.iter().map(|v| v.file.as_str()).collect();
    assert_eq!(
        files,
        ["singlecoil_train/a.h5", "singlecoil_train/b.h5", "singlecoil_train/c.h5", "singlecoil_val/d.h5"]
    );
    let kept: Vec<usize> = index.volumes.iter().map(|v| v.slices.len()).collect();
    assert_eq!(kept, [31, 15, 0, 31]);
    assert_eq!(index.volumes[1].slices, (10..=24).collect::<Vec<_>>());
    assert_eq!(index.volumes[0].total_slices, 44);
    assert!(index.volumes[2].npy.is_none());
    let splits: Vec<Split> = index.volumes.iter().map(|v| v.split()).collect();
    assert_eq!(splits, [Split::Train, Split::Train, Split::Train, Split::Val]);
    for v in &index.volumes {
        let Some(t) = load_volume(&cache, v).unwrap() else {
            assert!(v.slices.is_empty());
            continue;
        };
        assert_eq!(t.size(), [v.slices.len() as i64, 8, 8]);
        for (k, &s) in v.slices.iter().enumerate() {
            for (h, w) in [(0, 0), (3, 5), (7, 7)] {
                let got = t.double_value(&[k as i64, h as i64, w as i64]) as f32;
                assert_eq!(got, value(s, h, w), "{} slice {s} at ({h}, {w})", v.file);
            }
        }
    }
    // max_volumes keeps the first files only.
    let index = extract(&python(), &root, &dir.path().join("cache2"), (10, 40), Some(2), false).unwrap();
    assert_eq!(index.volumes.len(), 2);
}

#[test]
fn missing_dataset_and_corrupt_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("no-dataset");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("x.h5");
    run_python(
        "import sys, h5py, numpy as np\nwith h5py.File(sys.argv[1], 'w') as f: f.create_dataset('kspace', data=np.zeros(3))",
        &[&file.display().to_string()],
    );
    let err = extract(&python(), &root, &dir.path().join("c1"), (10, 40), None, false).unwrap_err();
    match &err {
        FastMriError::Hdf5 { file: f, reason } => {
            assert!(f.ends_with("x.h5"), "{err}");
            assert!(reason.contains("reconstruction_rss") && reason.contains("kspace"), "{reason}");
        }
        other => panic!("expected an HDF5 error, got {other}"),
    }

    let root = dir.path().join("corrupt");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("broken.h5"), b"this is not an HDF5 file at all").unwrap();
    let err = extract(&python(), &root, &dir.path().join("c2"), (10, 40), None, false).unwrap_err();
    assert!(matches!(err, FastMriError::Hdf5 { .. }), "{err}");
    assert!(err.to_string().contains("broken.h5"), "{err}");

    let err = extract(&python(), &dir.path().join("absent"), &dir.path().join("c3"), (10, 40), None, false)
        .unwrap_err();
    assert!(matches!(err, FastMriError::Data { .. }), "{err}");
}

#[test]
fn missing_python_or_h5py_says_to_run_setup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("raw");
    std::fs::create_dir_all(&root).unwrap();
    let err =
        extract(dir.path().join("no-python").as_path(), &root, &dir.path().join("c"), (10, 40), None, false)
            .unwrap_err();
    assert!(matches!(err, FastMriError::Python { .. }), "{err}");
    assert!(err.to_string().contains("cargo xtask setup"), "{err}");

    // An interpreter whose h5py import fails reports DIEM_MISSING, as the embedded scripts do.
    let fake = dir.path().join("fake-python");
    std::fs::write(&fake, "#!/bin/sh\necho 'DIEM_MISSING h5py' >&2\nexit 4\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let err = extract(&fake, &root, &dir.path().join("c"), (10, 40), None, false).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("h5py") && text.contains("cargo xtask setup"), "{text}");
}

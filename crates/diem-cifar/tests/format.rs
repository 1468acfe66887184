//! The CIFAR-10 binary reader: round trips through files, folders and `.tar.gz`, typed errors naming the file,
//! and the pixel mapping of docs/method.md §9b.

use std::path::Path;

use diem_cifar::format::{ARCHIVE_NAME, FOLDER_NAME, IMAGE_BYTES, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use diem_cifar::{
    pack_archive, read_archive, read_batch_file, read_folder, synthetic_data, synthetic_split, to_uint8,
    to_unit, u8_to_unit, unit_to_u8, write_batch_file, write_synthetic, CifarError, CifarSource, CifarSplit,
    SyntheticSpec,
};
use tch::{Kind, Tensor};

fn spec() -> SyntheticSpec {
    SyntheticSpec { train_per_file: 7, test: 5, seed: 3 }
}

#[test]
fn batch_file_round_trip_keeps_labels_and_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let split = synthetic_split(13, 1);
    let path = dir.path().join("data_batch_1.bin");
    write_batch_file(&path, &split).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, 13 * RECORD_BYTES);
    let back = read_batch_file(&path).unwrap();
    assert_eq!(back, split);
    assert_eq!(back.labels, (0..13).map(|i| (i % 10) as u8).collect::<Vec<_>>());
}

#[test]
fn records_are_label_then_rgb_planes_row_major() {
    // One hand-made record: label 7, pixel (c, h, w) = (c·31 + h·7 + w) mod 256.
    let mut record = vec![7u8];
    for c in 0..3usize {
        for h in 0..32usize {
            for w in 0..32usize {
                record.push(((c * 31 + h * 7 + w) % 256) as u8);
            }
        }
    }
    let split = CifarSplit::from_records(&record, Path::new("x.bin")).unwrap();
    assert_eq!(split.labels, vec![7]);
    let t = split.images_u8();
    assert_eq!(t.size(), vec![1, 3, 32, 32]);
    assert_eq!(t.kind(), Kind::Uint8);
    for (c, h, w) in [(0i64, 0i64, 0i64), (1, 2, 3), (2, 31, 30), (0, 17, 5)] {
        let expected = (c * 31 + h * 7 + w) % 256;
        assert_eq!(t.int64_value(&[0, c, h, w]), expected, "pixel ({c}, {h}, {w})");
    }
    let x = split.images();
    assert_eq!(x.kind(), Kind::Float);
    assert!((x.double_value(&[0, 1, 2, 3]) - (f64::from(31 + 2 * 7 + 3) / 64.0 - 2.0)).abs() < 1e-7);
}

#[test]
fn folder_and_archive_read_back_the_synthetic_set() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_synthetic(&dir.path().join("raw"), dir.path(), &spec()).unwrap();
    let expected = synthetic_data(&spec());
    let from_folder = read_folder(&files.folder).unwrap();
    assert_eq!(from_folder, expected);
    assert_eq!(from_folder.train.len(), 35);
    assert_eq!(from_folder.test.len(), 5);
    let from_archive = read_archive(&files.archive).unwrap();
    assert_eq!(from_archive, expected);
    // Source discovery: the archive's folder, the archive itself, the folder and its parent.
    assert_eq!(CifarSource::locate(dir.path()), Some(CifarSource::Archive(files.archive.clone())));
    assert_eq!(CifarSource::locate(&files.archive), Some(CifarSource::Archive(files.archive.clone())));
    assert_eq!(CifarSource::locate(&files.folder), Some(CifarSource::Folder(files.folder.clone())));
    assert_eq!(
        CifarSource::locate(&dir.path().join("raw")),
        Some(CifarSource::Folder(dir.path().join("raw").join(FOLDER_NAME)))
    );
    assert_eq!(CifarSource::find(&dir.path().join("raw")).unwrap().read().unwrap(), expected);
}

#[test]
fn repacked_archive_reads_like_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_synthetic(dir.path(), &dir.path().join("a"), &spec()).unwrap();
    let archive = dir.path().join("b").join(ARCHIVE_NAME);
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    pack_archive(&files.folder, &archive).unwrap();
    assert_eq!(read_archive(&archive).unwrap(), read_folder(&files.folder).unwrap());
}

#[test]
fn truncated_file_is_a_format_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let split = synthetic_split(3, 0);
    let mut bytes = split.to_records();
    bytes.truncate(2 * RECORD_BYTES + 100);
    let path = dir.path().join("data_batch_3.bin");
    std::fs::write(&path, &bytes).unwrap();
    let err = read_batch_file(&path).unwrap_err();
    assert!(matches!(&err, CifarError::Format { path: p, .. } if p == &path), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("data_batch_3.bin") && msg.contains("3073"), "{msg}");
    // Empty file.
    std::fs::write(&path, []).unwrap();
    assert!(matches!(read_batch_file(&path), Err(CifarError::Format { .. })));
}

#[test]
fn bad_label_is_a_format_error_naming_record_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = synthetic_split(2, 0).to_records();
    bytes[RECORD_BYTES] = 10;
    let path = dir.path().join("test_batch.bin");
    std::fs::write(&path, &bytes).unwrap();
    let msg = read_batch_file(&path).unwrap_err().to_string();
    assert!(msg.contains("test_batch.bin") && msg.contains("record 1") && msg.contains("label 10"), "{msg}");
}

#[test]
fn missing_folder_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_synthetic(dir.path(), dir.path(), &spec()).unwrap();
    std::fs::remove_file(files.folder.join(TRAIN_FILES[3])).unwrap();
    let err = read_folder(&files.folder).unwrap_err();
    assert!(matches!(&err, CifarError::Io { path, .. } if path.ends_with(TRAIN_FILES[3])), "{err:?}");
}

#[test]
fn corrupt_or_incomplete_archive_is_a_format_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, b"this is not a gzip stream at all").unwrap();
    let err = read_archive(&junk).unwrap_err();
    assert!(matches!(&err, CifarError::Format { path, .. } if path == &junk), "{err:?}");

    // An archive without test_batch.bin.
    let files = write_synthetic(&dir.path().join("raw"), &dir.path().join("a"), &spec()).unwrap();
    let partial = dir.path().join("partial.tar.gz");
    let mut builder =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for name in TRAIN_FILES {
        builder.append_path_with_name(files.folder.join(name), Path::new(FOLDER_NAME).join(name)).unwrap();
    }
    std::fs::write(&partial, builder.into_inner().unwrap().finish().unwrap()).unwrap();
    let msg = read_archive(&partial).unwrap_err().to_string();
    assert!(msg.contains("partial.tar.gz") && msg.contains(TEST_FILE), "{msg}");

    // A truncated member inside the archive names archive/member.
    let bad = dir.path().join("bad.tar.gz");
    let mut builder =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let mut bytes = std::fs::read(files.folder.join(name)).unwrap();
        if *name == TRAIN_FILES[1] {
            bytes.truncate(bytes.len() - 1);
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, Path::new(FOLDER_NAME).join(name), bytes.as_slice()).unwrap();
    }
    std::fs::write(&bad, builder.into_inner().unwrap().finish().unwrap()).unwrap();
    let msg = read_archive(&bad).unwrap_err().to_string();
    assert!(msg.contains("bad.tar.gz") && msg.contains(TRAIN_FILES[1]), "{msg}");
}

#[test]
fn pixel_mapping_inverts_exactly_for_all_256_values() {
    for v in 0..=255u8 {
        let x = u8_to_unit(v);
        assert_eq!(x, f32::from(v) * 4.0 / 256.0 - 2.0);
        assert_eq!(unit_to_u8(x), v, "value {v}");
        // Within half a level the inverse rounds back to v.
        assert_eq!(unit_to_u8(x + 0.49 / 64.0), v);
        assert_eq!(unit_to_u8(x - 0.49 / 64.0), v);
    }
    assert_eq!(u8_to_unit(0), -2.0);
    assert_eq!(u8_to_unit(255), 2.0 - 1.0 / 64.0);
    assert_eq!(unit_to_u8(-7.0), 0);
    assert_eq!(unit_to_u8(2.5), 255);
    assert_eq!(unit_to_u8(f32::NAN), 0);

    let all: Vec<u8> = (0..=255).collect();
    let t = Tensor::from_slice(&all);
    let x = to_unit(&t);
    let expected: Vec<f32> = all.iter().map(|&v| u8_to_unit(v)).collect();
    assert_eq!(Vec::<f32>::try_from(&x).unwrap(), expected);
    let back = to_uint8(&x);
    assert_eq!(back.kind(), Kind::Uint8);
    assert_eq!(Vec::<u8>::try_from(&back).unwrap(), all);
    let clipped = to_uint8(&Tensor::from_slice(&[-3.0f32, 9.0, f32::NAN]));
    assert_eq!(Vec::<u8>::try_from(&clipped).unwrap(), vec![0, 255, 0]);
}

#[test]
fn head_and_extend_keep_records_aligned() {
    let a = synthetic_split(4, 0);
    let b = synthetic_split(3, 1);
    let mut ab = a.clone();
    ab.extend(&b);
    assert_eq!(ab.len(), 7);
    assert_eq!(ab.pixels.len(), 7 * IMAGE_BYTES);
    assert_eq!(ab.head(4), a);
    assert_eq!(ab.head(100), ab);
    assert_eq!(CifarSplit::from_records(&ab.to_records(), Path::new("x")).unwrap(), ab);
}

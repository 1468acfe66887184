//! Observation files as a hostile user makes them: fields deleted, dtypes swapped, shapes changed, NaN/Inf
//! injected, kinds misspelled, bytes truncated or flipped, in both formats and for every operator family.
//!
//! The property: [`Observation::load`] either returns a valid observation set (finite, consistent shapes,
//! an operator that applies) or an error that names the file (and the field, for a field-level problem);
//! it never panics, never aborts on an allocation, and never changes the file. The regressions below pin
//! the defects found by hand (N = 0, a padded kind, a forged header, a FIFO, dtype names).

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{make_op, KINDS};
use diem_operators::{NoiseCov, Observation};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use tch::{Device, Kind, Tensor};

/// One array of a file, in any dtype a user might store.
#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

impl Data {
    fn as_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    fn from_f64(dtype: u8, v: Vec<f64>) -> Self {
        match dtype % 6 {
            0 => Data::F32(v.iter().map(|&x| x as f32).collect()),
            1 => Data::F64(v),
            2 => Data::I64(v.iter().map(|&x| x as i64).collect()),
            3 => Data::I32(v.iter().map(|&x| x as i32).collect()),
            4 => Data::U8(v.iter().map(|&x| x as u8).collect()),
            _ => Data::Bool(v.iter().map(|&x| x != 0.0).collect()),
        }
    }

    fn dtype(&self) -> u8 {
        match self {
            Data::F32(_) => 0,
            Data::F64(_) => 1,
            Data::I64(_) => 2,
            Data::I32(_) => 3,
            Data::U8(_) => 4,
            Data::Bool(_) => 5,
        }
    }
}

/// A file's content before serialization: the kind string and named arrays.
#[derive(Debug, Clone)]
struct Model {
    kind: String,
    fields: Vec<(String, Vec<usize>, Data)>,
}

fn data_of(t: &Tensor) -> Data {
    let flat = t.reshape([-1]).to_device(Device::Cpu);
    match t.kind() {
        Kind::Float => Data::F32(Vec::try_from(&flat).unwrap()),
        Kind::Double => Data::F64(Vec::try_from(&flat).unwrap()),
        Kind::Int64 => Data::I64(Vec::try_from(&flat).unwrap()),
        k => panic!("unexpected kind {k:?}"),
    }
}

/// The model of a valid file for operator family `which`.
fn valid_model(which: usize, n: i64, seed: u64) -> Model {
    let op = make_op(which, n, 1, 4, 4, seed);
    let x = Tensor::randn([n, 1, 4, 4], (Kind::Float, Device::Cpu));
    let obs = Observation::simulate(&x, op, NoiseCov::isotropic(0.1).unwrap(), seed).unwrap();
    let mut fields = Vec::new();
    let mut push = |name: &str, t: &Tensor| {
        let shape = t.size().iter().map(|&d| d as usize).collect();
        fields.push((name.to_string(), shape, data_of(t)));
    };
    push("y", &obs.y);
    push("noise_std", &obs.noise.std_array());
    for (name, t) in obs.operator.params() {
        push(&name, &t);
    }
    Model { kind: obs.operator.kind(), fields }
}

/// The edits a careless or hostile user makes.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Dtype(usize, u8),
    /// 0: drop the last axis, 1: add a leading axis of 1, 2: grow an axis, 3: shrink an axis, 4: empty.
    Shape(usize, u8, usize),
    NonFinite(usize, usize, u8),
    Kind(u8),
    Extra(u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(i, d)| Mutation::Dtype(i, d)),
        (any::<usize>(), 0u8..5, any::<usize>()).prop_map(|(i, k, a)| Mutation::Shape(i, k, a)),
        (any::<usize>(), any::<usize>(), 0u8..3).prop_map(|(i, p, v)| Mutation::NonFinite(i, p, v)),
        any::<u8>().prop_map(Mutation::Kind),
        any::<u8>().prop_map(Mutation::Extra),
    ]
}

fn apply(model: &mut Model, m: &Mutation) {
    let len = model.fields.len();
    match *m {
        Mutation::Delete(i) if len > 0 => {
            model.fields.remove(i % len);
        }
        Mutation::Dtype(i, d) if len > 0 => {
            let f = &mut model.fields[i % len];
            f.2 = Data::from_f64(d, f.2.as_f64());
        }
        Mutation::Shape(i, k, a) if len > 0 => {
            let f = &mut model.fields[i % len];
            let mut shape = f.1.clone();
            match k {
                0 => {
                    shape.pop();
                }
                1 => shape.insert(0, 1),
                2 if !shape.is_empty() => {
                    let at = a % shape.len();
                    shape[at] += 1;
                }
                3 if !shape.is_empty() => {
                    let at = a % shape.len();
                    shape[at] = shape[at].saturating_sub(1);
                }
                _ => shape = vec![0],
            }
            let numel: usize = shape.iter().product();
            let mut v = f.2.as_f64();
            v.resize(numel, 0.5);
            f.1 = shape;
            f.2 = Data::from_f64(f.2.dtype(), v);
        }
        Mutation::NonFinite(i, p, which) if len > 0 => {
            let f = &mut model.fields[i % len];
            let mut v = f.2.as_f64();
            if !v.is_empty() {
                let at = p % v.len();
                v[at] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][which as usize % 3];
            }
            f.2 = Data::from_f64(f.2.dtype(), v);
        }
        Mutation::Kind(k) => {
            let variants =
                [" mask", "mask ", "mask\n", "MASK", "swirl", "compose[", "compose[]", "", "stack[mask"];
            model.kind = match k % 4 {
                0 => variants[k as usize % variants.len()].to_string(),
                1 => format!(" {}", model.kind),
                2 => format!("compose[{},{}]", model.kind, model.kind),
                _ => model.kind.to_uppercase(),
            };
        }
        Mutation::Extra(d) => {
            let name = ["extra", "y", "0.mask", "operator", "x_shape"][d as usize % 5].to_string();
            model.fields.push((name, vec![2], Data::from_f64(d, vec![1.0, 2.0])));
        }
        _ => {}
    }
}

fn npz_bytes(model: &Model) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut npz = NpzWriter::new(&mut buf);
        let mut seen = std::collections::HashSet::new();
        for (name, shape, data) in &model.fields {
            if !seen.insert(name.clone()) {
                continue; // the zip writer refuses duplicate names
            }
            let dim = IxDyn(shape);
            let r = match data {
                Data::F32(v) => {
                    npz.add_array(name.as_str(), &ArrayD::from_shape_vec(dim, v.clone()).unwrap())
                }
                Data::F64(v) => {
                    npz.add_array(name.as_str(), &ArrayD::from_shape_vec(dim, v.clone()).unwrap())
                }
                Data::I64(v) => {
                    npz.add_array(name.as_str(), &ArrayD::from_shape_vec(dim, v.clone()).unwrap())
                }
                Data::I32(v) => {
                    npz.add_array(name.as_str(), &ArrayD::from_shape_vec(dim, v.clone()).unwrap())
                }
                Data::U8(v) => npz.add_array(name.as_str(), &ArrayD::from_shape_vec(dim, v.clone()).unwrap()),
                Data::Bool(v) => {
                    npz.add_array(name.as_str(), &ArrayD::from_shape_vec(dim, v.clone()).unwrap())
                }
            };
            r.unwrap();
        }
        if !seen.contains("operator") {
            let kind = ndarray::Array1::from(model.kind.clone().into_bytes());
            npz.add_array("operator", &kind).unwrap();
        }
        npz.finish().unwrap();
    }
    buf.into_inner()
}

fn safetensors_bytes(model: &Model) -> Vec<u8> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, data) in &model.fields {
        if buffers.iter().any(|b| &b.0 == name) {
            continue;
        }
        let (dtype, bytes): (Dtype, Vec<u8>) = match data {
            Data::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::U8(v) => (Dtype::U8, v.clone()),
            Data::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| b as u8).collect()),
        };
        buffers.push((name.clone(), dtype, shape.clone(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> =
        buffers.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta: HashMap<String, String> = [("operator".to_string(), model.kind.clone())].into_iter().collect();
    safetensors::serialize(views, &Some(meta)).unwrap()
}

/// The property, for the file at `path` holding `bytes`.
fn check(path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    let loaded = Observation::load(path, Device::Cpu);
    prop_assert_eq!(std::fs::read(path).unwrap(), bytes, "the loader changed its input");
    match loaded {
        Ok(obs) => {
            prop_assert!(!obs.is_empty());
            prop_assert!(bool::try_from(obs.y.isfinite().all()).unwrap(), "non-finite y accepted");
            let y_shape = obs.operator.y_shape();
            prop_assert_eq!(&obs.y.size()[1..], y_shape.as_slice());
            let mut shape = vec![obs.len()];
            shape.extend(obs.operator.x_shape());
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            let ax = obs.operator.apply(&x);
            prop_assert!(
                bool::try_from(ax.isfinite().all()).unwrap(),
                "an accepted operator gives non-finite A x"
            );
            let back = obs.operator.adjoint(&obs.y);
            prop_assert_eq!(back.size(), x.size());
        }
        Err(e) => {
            let msg = e.to_string();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            prop_assert!(msg.contains(&name), "the error does not name the file: {msg}");
            prop_assert!(!msg.trim().ends_with(':'), "an empty reason: {msg}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, failure_persistence: None, ..ProptestConfig::default() })]

    /// Field-level edits of a valid file, both formats, every operator family.
    #[test]
    fn edited_files_load_or_fail_naming_the_file(
        which in 0..KINDS,
        n in 1i64..4,
        seed in any::<u64>(),
        npz in any::<bool>(),
        edits in prop::collection::vec(mutation(), 0..4),
    ) {
        tch::manual_seed(seed as i64);
        let mut model = valid_model(which, n, seed);
        for m in &edits {
            apply(&mut model, m);
        }
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = if npz {
            (dir.path().join("obs.npz"), npz_bytes(&model))
        } else {
            (dir.path().join("obs.safetensors"), safetensors_bytes(&model))
        };
        check(&path, &bytes)?;
        if edits.is_empty() {
            prop_assert!(Observation::load(&path, Device::Cpu).is_ok(), "a valid file was refused");
        }
    }

    /// Byte-level damage: truncation anywhere, or a flipped byte.
    #[test]
    fn damaged_bytes_load_or_fail_naming_the_file(
        which in 0..KINDS,
        seed in any::<u64>(),
        npz in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        flip in prop::option::of((any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        tch::manual_seed(seed as i64);
        let model = valid_model(which, 2, seed);
        let mut bytes = if npz { npz_bytes(&model) } else { safetensors_bytes(&model) };
        match flip {
            Some((at, x)) => {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            None => bytes.truncate(cut.index(bytes.len())),
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(if npz { "obs.npz" } else { "obs.safetensors" });
        check(&path, &bytes)?;
    }
}

fn message(path: &Path) -> String {
    Observation::load(path, Device::Cpu).expect_err("must fail").to_string()
}

#[test]
fn an_empty_set_a_padded_kind_and_dtype_names_are_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = valid_model(1, 2, 0);
    model.fields[0].1[0] = 0; // y: [0, 1, 4, 4]
    model.fields[0].2 = Data::F32(vec![]);
    model.fields.retain(|f| f.0 != "mask");
    model.kind = "identity".into();
    model.fields.push(("x_shape".into(), vec![3], Data::I64(vec![1, 4, 4])));
    model.fields.retain(|f| f.0 != "x_shape" || matches!(f.2, Data::I64(_)));
    let path = dir.path().join("empty.npz");
    std::fs::write(&path, npz_bytes(&model)).unwrap();
    let msg = message(&path);
    assert!(msg.contains("\"y\"") && msg.contains("no observations"), "{msg}");

    let mut padded = valid_model(1, 2, 0);
    padded.kind = " mask".into();
    let path = dir.path().join("padded.npz");
    std::fs::write(&path, npz_bytes(&padded)).unwrap();
    let msg = message(&path);
    assert!(msg.contains("unknown operator kind \" mask\""), "{msg}");

    let mut float_shape = valid_model(1, 2, 0);
    for f in &mut float_shape.fields {
        if f.0 == "x_shape" {
            f.2 = Data::F64(f.2.as_f64());
        }
    }
    let path = dir.path().join("float_shape.safetensors");
    std::fs::write(&path, safetensors_bytes(&float_shape)).unwrap();
    let msg = message(&path);
    assert!(msg.contains("found float64") && !msg.contains("Double"), "{msg}");
}

#[test]
fn a_forged_npy_header_is_refused_before_anything_is_allocated() {
    // An .npz whose y entry claims 2^40 float32 entries but holds 16: reading must not try to allocate 4 TiB.
    let model = valid_model(1, 1, 0);
    let bytes = npz_bytes(&model);
    let needle = b"'shape': (1, 1, 4, 4)";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("y's header");
    let mut forged = bytes.clone();
    let replacement = b"'shape': (1099511627776,";
    forged[at..at + replacement.len()].copy_from_slice(replacement);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forged.npz");
    std::fs::write(&path, &forged).unwrap();
    let msg = message(&path);
    assert!(msg.contains("forged.npz") && msg.contains("\"y\""), "{msg}");
}

#[test]
fn only_regular_files_are_read_and_writes_go_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.npz");
    if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        let msg = message(&fifo);
        assert!(msg.contains("pipe.npz") && msg.contains("FIFO"), "{msg}");
    }
    let obs = {
        let x = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
        Observation::simulate(&x, make_op(1, 3, 1, 4, 4, 0), NoiseCov::isotropic(0.1).unwrap(), 0).unwrap()
    };
    let target = dir.path().join("target.npz");
    let link = dir.path().join("link.npz");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    obs.save(&link).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(Observation::load(&target, Device::Cpu).is_ok());
    let err = obs.save(dir.path()).unwrap_err().to_string();
    assert!(err.contains("extension"), "{err}");
    let as_dir = dir.path().join("sub.npz");
    std::fs::create_dir(&as_dir).unwrap();
    let err = obs.save(&as_dir).unwrap_err().to_string();
    assert!(err.contains("directory"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn unobserved_rows_are_the_zero_operators() {
    let mask = Tensor::ones([4, 1, 4, 4], (Kind::Float, Device::Cpu));
    let _ = mask.get(1).fill_(0.0);
    let _ = mask.get(3).fill_(0.0);
    let op = diem_operators::Mask::new(mask, &[1, 4, 4]).unwrap();
    let x = Tensor::randn([4, 1, 4, 4], (Kind::Float, Device::Cpu));
    let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.1).unwrap(), 0).unwrap();
    assert_eq!(obs.unobserved(), vec![1, 3]);
    let shared =
        diem_operators::Mask::new(Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu)), &[1, 4, 4]);
    let obs =
        Observation::simulate(&x, Box::new(shared.unwrap()), NoiseCov::isotropic(0.1).unwrap(), 0).unwrap();
    assert_eq!(obs.unobserved(), vec![0, 1, 2, 3]);
}

//! Observation files: exact round trips for every operator family in both formats, a file written by numpy,
//! and corrupted files whose errors must name the file and the field.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{make_op, randn, rel_diff, KINDS};
use diem_operators::{Error, NoiseCov, Observation};
use tch::{Device, Kind, Tensor};

fn assert_same(a: &Observation, b: &Observation) {
    assert_eq!(a.y.kind(), b.y.kind());
    assert!(a.y.equal(&b.y), "y differs");
    assert_eq!(a.operator.kind(), b.operator.kind());
    let (pa, pb) = (a.operator.params(), b.operator.params());
    assert_eq!(pa.len(), pb.len());
    for ((na, ta), (nb, tb)) in pa.iter().zip(pb.iter()) {
        assert_eq!(na, nb);
        assert_eq!(ta.kind(), tb.kind(), "{na}: dtype");
        assert!(ta.equal(tb), "{na}: values");
    }
    assert!(a.noise.std_array().equal(&b.noise.std_array()), "noise_std differs");
}

#[test]
fn round_trip_every_operator_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    for which in 0..KINDS {
        tch::manual_seed(which as i64);
        let op = make_op(which, 3, 2, 8, 6, 17);
        let kind = if which % 2 == 0 { Kind::Float } else { Kind::Double };
        let x = randn(3, &op.x_shape(), kind);
        let noise = if which % 3 == 0 {
            let mut s = vec![3];
            s.extend(op.y_shape());
            NoiseCov::diagonal(Tensor::rand(&s, (kind, Device::Cpu))).unwrap()
        } else {
            NoiseCov::isotropic(0.01).unwrap()
        };
        let obs = Observation::simulate(&x, op, noise, 5).unwrap();
        for ext in ["npz", "safetensors"] {
            let path = dir.path().join(format!("obs-{which}.{ext}"));
            obs.save(&path).unwrap();
            let back = Observation::load(&path, Device::Cpu).unwrap();
            assert_same(&obs, &back);
            // The reloaded operator acts identically.
            assert!(back.operator.apply(&x).equal(&obs.operator.apply(&x)));
            let u = back.y.ones_like();
            assert!(rel_diff(&back.operator.adjoint(&u), &obs.operator.adjoint(&u)) == 0.0);
        }
    }
}

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    p.exists().then_some(p)
}

/// Writes the fixture files with numpy into `dir`.
const SCRIPT: &str = r#"
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
kind = np.frombuffer(b"mask", np.uint8)
mask = (rng.random((4, 1, 5, 6)) > 0.5).astype(np.float32)
x = rng.standard_normal((4, 2, 5, 6)).astype(np.float32)
y = (mask * x + 0.01 * rng.standard_normal((4, 2, 5, 6))).astype(np.float32)
shape = np.array([2, 5, 6], dtype=np.int64)
np.savez(f"{d}/good.npz", y=y, noise_std=np.float64(0.01), operator=kind, mask=mask, x_shape=shape)
np.savez(f"{d}/good_diag.npz", y=y, noise_std=np.full(y.shape, 0.01, np.float32), operator=kind, mask=mask, x_shape=shape)
np.savez(f"{d}/wrong_shape.npz", y=y[:, :, :4], noise_std=np.float64(0.01), operator=kind, mask=mask, x_shape=shape)
bad = mask.copy(); bad[0, 0, 0, 0] = np.nan
np.savez(f"{d}/nan.npz", y=y, noise_std=np.float64(0.01), operator=kind, mask=bad, x_shape=shape)
ybad = y.copy(); ybad[1, 1, 1, 1] = np.inf
np.savez(f"{d}/nan_y.npz", y=ybad, noise_std=np.float64(0.01), operator=kind, mask=mask, x_shape=shape)
np.savez(f"{d}/unknown_kind.npz", y=y, noise_std=np.float64(0.01), operator=np.frombuffer(b"swirl", np.uint8), mask=mask, x_shape=shape)
np.savez(f"{d}/missing_field.npz", y=y, operator=kind, mask=mask, x_shape=shape)
np.savez(f"{d}/missing_mask.npz", y=y, noise_std=np.float64(0.01), operator=kind, x_shape=shape)
np.savez(f"{d}/wrong_dtype.npz", y=y.astype(np.int64), noise_std=np.float64(0.01), operator=kind, mask=mask, x_shape=shape)
np.savez(f"{d}/wrong_dtype_shape.npz", y=y, noise_std=np.float64(0.01), operator=kind, mask=mask, x_shape=shape.astype(np.float64))
np.savez(f"{d}/string_kind.npz", y=y, noise_std=np.float64(0.01), operator="mask", mask=mask, x_shape=shape)
np.savez(f"{d}/extra.npz", y=y, noise_std=np.float64(0.01), operator=kind, mask=mask, x_shape=shape, kernels=mask)
np.savez(f"{d}/negative_noise.npz", y=y, noise_std=np.float64(-1.0), operator=kind, mask=mask, x_shape=shape)
np.save(f"{d}/expect_y.npy", y)
"#;

fn message(e: &Error) -> String {
    e.to_string()
}

#[test]
fn numpy_written_files_load_and_corrupted_files_fail_with_field_names() {
    let Some(py) = python() else {
        eprintln!("skipping numpy interop test: no .venv/bin/python next to the workspace (run `cargo xtask setup`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(&py).arg("-c").arg(SCRIPT).arg(dir.path()).status().unwrap();
    if !status.success() {
        eprintln!("skipping numpy interop test: {} could not run numpy ({status})", py.display());
        return;
    }
    let obs = Observation::load(dir.path().join("good.npz"), Device::Cpu).unwrap();
    assert_eq!(obs.operator.kind(), "mask");
    assert_eq!(obs.y.size(), [4, 2, 5, 6]);
    assert!(matches!(obs.noise, NoiseCov::Isotropic { std } if std == 0.01));
    let diag = Observation::load(dir.path().join("good_diag.npz"), Device::Cpu).unwrap();
    assert!(matches!(diag.noise, NoiseCov::Diagonal { .. }));
    // Values match what numpy wrote.
    let mut npy = ndarray_npy::read_npy::<_, ndarray::ArrayD<f32>>(dir.path().join("expect_y.npy")).unwrap();
    let expect: Vec<f32> = npy.iter_mut().map(|v| *v).collect();
    assert_eq!(Vec::<f32>::try_from(&obs.y.reshape([-1])).unwrap(), expect);

    // numpy reads what we write: the kind string decodes and y matches.
    let ours = dir.path().join("ours.npz");
    obs.save(&ours).unwrap();
    let out = Command::new(&py)
        .arg("-c")
        .arg("import sys, numpy as np; f = np.load(sys.argv[1]); print(bytes(f['operator']).decode(), f['y'].dtype, repr(float(f['y'].astype(np.float64).sum())), f['noise_std'].shape)")
        .arg(&ours)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let sum = obs.y.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields[..2], ["mask", "float32"], "numpy read back: {text}");
    assert!((fields[2].parse::<f64>().unwrap() - sum).abs() < 1e-9 * sum.abs().max(1.0), "{text}");
    assert_eq!(fields[3], "()", "isotropic noise is a 0-d array");

    // (file, field the error must name, a phrase it must contain)
    let cases = [
        ("wrong_shape.npz", "\"y\"", "does not fit"),
        ("nan.npz", "\"mask\"", "NaN"),
        ("nan_y.npz", "\"y\"", "NaN"),
        ("unknown_kind.npz", "swirl", "unknown operator kind"),
        ("missing_field.npz", "\"noise_std\"", "missing"),
        ("missing_mask.npz", "\"mask\"", "missing"),
        ("wrong_dtype.npz", "\"y\"", "int64"),
        ("wrong_dtype_shape.npz", "\"x_shape\"", "int64"),
        ("string_kind.npz", "\"operator\"", "uint8"),
        ("extra.npz", "\"kernels\"", "unexpected"),
        ("negative_noise.npz", "\"noise_std\"", "≥ 0"),
    ];
    for (file, field, phrase) in cases {
        let path = dir.path().join(file);
        let err = Observation::load(&path, Device::Cpu).expect_err(file);
        let msg = message(&err);
        assert!(matches!(err, Error::File { .. }), "{file}: error carries the path");
        assert!(msg.contains(file), "{file}: message names the file: {msg}");
        assert!(msg.contains(field), "{file}: message names {field}: {msg}");
        assert!(msg.contains(phrase), "{file}: message says {phrase:?}: {msg}");
    }
}

#[test]
fn corrupted_safetensors_and_bad_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let msg = Observation::load(&garbage, Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("garbage.safetensors") && msg.contains("safetensors"), "{msg}");
    // A safetensors file without the operator metadata.
    let t = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("y", &t)], dir.path().join("plain.safetensors")).unwrap();
    let msg = Observation::load(dir.path().join("plain.safetensors"), Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("operator") && msg.contains("missing"), "{msg}");
    let msg = Observation::load(dir.path().join("x.txt"), Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("x.txt") && msg.contains("extension"), "{msg}");
    assert!(Observation::load(dir.path().join("absent.npz"), Device::Cpu).is_err());
}

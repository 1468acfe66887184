//! End to end through the `diem` binary on observations written by numpy: `fit` (one tiny lap), `inspect`,
//! `sample`, `posterior` (MMPS and DPS), `fit --resume`, and configuration errors that name the file and field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::{Device, Kind};

mod common;
use common::{python, DIEM, NUMPY_OBSERVATIONS};

fn diem(args: &[&str]) -> Output {
    let out = Command::new(DIEM)
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("DIEM_DEVICE", "cpu")
        .output()
        .expect("run diem");
    out
}

fn ok(args: &[&str]) -> String {
    let out = diem(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "diem {args:?} failed:\n{text}");
    text
}

/// The shared tiny config, written to `dir/cfg.json`.
fn tiny_config(dir: &Path) -> PathBuf {
    let v = common::tiny_config();
    let path = dir.join("cfg.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

fn check_npy(path: &Path, shape: &[i64]) {
    let x = diem_em::read_npy(path, Device::Cpu).unwrap();
    assert_eq!(x.size(), shape, "{}", path.display());
    assert!(bool::try_from(x.isfinite().all()).unwrap(), "{}: non-finite values", path.display());
    assert_eq!(x.kind(), Kind::Float);
}

#[test]
fn fit_inspect_sample_posterior_on_numpy_observations() {
    let Some(py) = python() else {
        eprintln!("skipping: no .venv/bin/python (run `cargo xtask setup`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let obs = dir.path().join("obs.npz");
    let st = Command::new(py).args(["-c", NUMPY_OBSERVATIONS]).arg(&obs).status().unwrap();
    assert!(st.success(), "numpy script failed");
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let (obs_s, cfg_s, run_s) = (obs.to_str().unwrap(), cfg.to_str().unwrap(), run.to_str().unwrap());

    ok(&["fit", "--observations", obs_s, "--config", cfg_s, "--out", run_s, "--device", "cpu"]);
    assert!(run.join("lap-000/weights.safetensors").is_file());
    check_npy(&run.join("lap-000/samples.npy"), &[128, 5]);

    let table = ok(&["inspect", run_s]);
    assert!(table.contains("1/1 laps completed"), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with('0')), "no row for lap 0:\n{table}");

    let samples = dir.path().join("prior.npy");
    ok(&["sample", "--prior", run_s, "-n", "12", "--steps", "8", "--out", samples.to_str().unwrap()]);
    check_npy(&samples, &[12, 5]);

    for method in ["mmps", "mmps-cov-x", "dps"] {
        let post = dir.path().join(format!("post-{method}.npy"));
        ok(&[
            "posterior",
            "--prior",
            run.join("lap-000").to_str().unwrap(),
            "--observations",
            obs_s,
            "--method",
            method,
            "--steps",
            "8",
            "--chunk",
            "50",
            "--out",
            post.to_str().unwrap(),
        ]);
        check_npy(&post, &[128, 5]);
    }

    // Resume extends nothing on a finished run and succeeds; a second fit into the same directory is refused.
    ok(&["fit", "--observations", obs_s, "--out", run_s, "--resume"]);
    let again = diem(&["fit", "--observations", obs_s, "--config", cfg_s, "--out", run_s]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));

    // An unknown method is named.
    let bad = diem(&[
        "posterior",
        "--prior",
        run_s,
        "--observations",
        obs_s,
        "--method",
        "magic",
        "--out",
        "x.npy",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--method"));
}

#[test]
fn bad_config_errors_name_the_file_and_the_field() {
    let Some(py) = python() else {
        eprintln!("skipping: no .venv/bin/python (run `cargo xtask setup`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let obs = dir.path().join("obs.npz");
    assert!(Command::new(py).args(["-c", NUMPY_OBSERVATIONS]).arg(&obs).status().unwrap().success());
    let cfg = tiny_config(dir.path());
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["estep"]["chunk_sise"] = 3.into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = diem(&[
        "fit",
        "--observations",
        obs.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.json") && err.contains("chunk_sise"), "{err}");

    // A valid key with an invalid value: the field is named too.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["estep"]["chunk_size"] = 0.into();
    std::fs::write(&bad, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = diem(&[
        "fit",
        "--observations",
        obs.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("r2").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("estep.chunk_size"), "{err}");

    // A missing observation file is named.
    let out = diem(&["fit", "--observations", "nope.npz", "--config", cfg.to_str().unwrap(), "--out", "r3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.npz"));
}

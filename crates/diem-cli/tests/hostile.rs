//! The `diem` binary against a careful but hostile first user: one regression per defect found by hand
//! (silent NaN, data loss on `fit`, panics, other data or edited configs on resume, output paths,
//! messages), and a handful of randomly damaged files and configurations end to end. Whatever happens, the
//! exit status is 0 with a finite output or 1 with a message naming the file or field, never a panic
//! (101), an abort (134) or a changed input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use diem_operators::{Mask, NoiseCov, Observation, Projection};
use tch::{Device, Kind, Tensor};

mod common;
use common::DIEM;

fn diem(args: &[&str]) -> Output {
    Command::new(DIEM)
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("DIEM_DEVICE", "cpu")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run diem")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 1 with a message that contains every one of `words`, and no panic.
#[track_caller]
fn fails(o: &Output, words: &[&str]) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected a clean failure, got {:?}:\n{e}", o.status);
    assert!(!e.contains("panicked"), "{e}");
    for w in words {
        assert!(e.contains(w), "the message lacks {w:?}:\n{e}");
    }
    e
}

#[track_caller]
fn succeeds(o: &Output) -> String {
    assert!(o.status.success(), "failed:\n{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `n` points of a curve in 5-D seen through random 2×5 projections with noise `std`, latents `x_shape`.
fn observations(path: &Path, n: i64, std: f64, x_shape: &[i64]) {
    let t = Tensor::arange(n, (Kind::Double, Device::Cpu)) * 0.13;
    let x = Tensor::stack(&[t.sin(), t.cos(), &t * 0.05, (&t * 2.0).sin(), &t * &t * 0.01], 1);
    let x = x.to_kind(Kind::Float).reshape([&[n][..], x_shape].concat());
    let p = Projection::random_sphere(n, 2, 5, 5).unwrap();
    let op = Projection::new(p.matrix().shallow_clone(), x_shape).unwrap();
    Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(std).unwrap(), 6)
        .unwrap()
        .save(path)
        .unwrap();
}

/// The shared tiny config, with Sinkhorn on 16 observations.
fn config_value() -> serde_json::Value {
    let mut v = common::tiny_config();
    v["diagnostics"]["sinkhorn_subsample"] = 16.into();
    v
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// A finished 1-lap run with its observations and config, made once for all tests.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    obs: PathBuf,
    cfg: PathBuf,
    run: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (obs, cfg, run) = (dir.join("obs.npz"), dir.join("cfg.json"), dir.join("run"));
        observations(&obs, 96, 0.01, &[5]);
        write_json(&cfg, &config_value());
        succeeds(&diem(&[
            "fit",
            "--quiet",
            "--observations",
            s(&obs),
            "--config",
            s(&cfg),
            "--out",
            s(&run),
        ]));
        Fixture { _tmp: tmp, dir, obs, cfg, run }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn finite_npy(path: &Path) -> bool {
    diem_em::read_npy(path, Device::Cpu).is_ok_and(|t| bool::try_from(t.isfinite().all()).unwrap())
}

#[test]
fn non_finite_results_are_errors_naming_the_method_the_step_and_the_rows() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("post.npy");
    // mmps-zeros as the paper's ablation defines it (V = 0, no safeguard) diverges at σ_y = 0.01.
    let o = diem(&[
        "posterior",
        "--prior",
        s(&f.run),
        "--observations",
        s(&f.obs),
        "--method",
        "mmps-zeros",
        "--unguarded",
        "--steps",
        "32",
        "--out",
        s(&out),
    ]);
    fails(&o, &["mmps-zeros", "NaN or infinite", "sampler step", "rows 0, 1", "nothing was written"]);
    assert!(!out.exists());
    // With its step fitted to the observation (the default), it gives finite samples.
    let o = diem(&[
        "posterior",
        "--prior",
        s(&f.run),
        "--observations",
        s(&f.obs),
        "--method",
        "mmps-zeros",
        "--steps",
        "32",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x = diem_em::read_npy(&out, tch::Device::Cpu).unwrap();
    assert!(bool::try_from(x.isfinite().all()).unwrap());

    // Weights corrupted to NaN: refused at load, naming the file and the tensor.
    let run = tmp.path().join("run");
    copy_dir(&f.run, &run);
    let weights = run.join("lap-000/weights.safetensors");
    let tensors = Tensor::read_safetensors(&weights).unwrap();
    let _ = tensors[0].1.view([-1]).get(0).fill_(f64::NAN);
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &weights).unwrap();
    let samples = tmp.path().join("prior.npy");
    let o = diem(&["sample", "--prior", s(&run), "-n", "8", "--steps", "4", "--out", s(&samples)]);
    fails(&o, &["weights.safetensors", &tensors[0].0, "NaN"]);
    assert!(!samples.exists());
}

#[test]
fn fit_never_overwrites_and_overwrite_deletes_only_a_run() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    // Someone's own files where the run would go: refused, with or without --overwrite, files intact.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("config.json"), b"{\"mine\": 1}").unwrap();
    std::fs::write(theirs.join("model.safetensors"), b"precious").unwrap();
    let base = ["fit", "--quiet", "--observations", s(&f.obs), "--config", s(&f.cfg), "--out", s(&theirs)];
    fails(&diem(&base), &["not empty", "config.json", "model.safetensors"]);
    fails(&diem(&[&base[..], &["--overwrite"]].concat()), &["--overwrite deletes only", "model.safetensors"]);
    assert_eq!(std::fs::read(theirs.join("config.json")).unwrap(), b"{\"mine\": 1}");
    assert_eq!(std::fs::read(theirs.join("model.safetensors")).unwrap(), b"precious");

    // An old run whose state.bin is gone: its lap-000 is not overwritten without --overwrite.
    let old = tmp.path().join("old");
    copy_dir(&f.run, &old);
    std::fs::remove_file(old.join("state.bin")).unwrap();
    let weights = std::fs::read(old.join("lap-000/weights.safetensors")).unwrap();
    let base = ["fit", "--quiet", "--observations", s(&f.obs), "--config", s(&f.cfg), "--out", s(&old)];
    fails(&diem(&base), &["not empty", "lap-000"]);
    assert_eq!(std::fs::read(old.join("lap-000/weights.safetensors")).unwrap(), weights);
    // --resume explains what is there.
    let o = diem(&["fit", "--quiet", "--resume", "--observations", s(&f.obs), "--out", s(&old)]);
    fails(&o, &["no state.bin", "--overwrite"]);
    // --overwrite with a config that fails its checks keeps the old run ...
    let mut bad = config_value();
    bad["gaussian"]["max_pairs"] = 2.into();
    let bad_cfg = tmp.path().join("bad.json");
    write_json(&bad_cfg, &bad);
    let o = diem(&[
        "fit",
        "--quiet",
        "--overwrite",
        "--observations",
        s(&f.obs),
        "--config",
        s(&bad_cfg),
        "--out",
        s(&old),
    ]);
    fails(&o, &["gaussian.rank"]);
    assert_eq!(std::fs::read(old.join("lap-000/weights.safetensors")).unwrap(), weights);
    // ... and a good one replaces it.
    succeeds(&diem(&[&base[..], &["--overwrite"]].concat()));
    assert!(old.join("state.bin").is_file());
    // --config with --resume is a usage error.
    let o = diem(&["fit", "--resume", "--observations", s(&f.obs), "--config", s(&f.cfg), "--out", s(&old)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_resume_checks_every_array_and_every_edit() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    copy_dir(&f.run, &run);
    // Other data of the same shapes: another noise level, other matrices.
    let other = tmp.path().join("other.npz");
    observations(&other, 96, 0.02, &[5]);
    let o = diem(&["fit", "--quiet", "--resume", "--observations", s(&other), "--out", s(&run)]);
    fails(&o, &["observations differ", "noise_std", "`y`"]);
    // Edited config.json: laps may change (and is recorded), the network may not.
    let path = run.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["laps"] = 2.into();
    v["network"]["mlp"]["hidden"] = serde_json::json!([8]);
    write_json(&path, &v);
    let o = diem(&["fit", "--quiet", "--resume", "--observations", s(&f.obs), "--out", s(&run)]);
    fails(&o, &["config.json", "network.mlp.hidden", "[16] → [8]"]);
    v["network"]["mlp"]["hidden"] = serde_json::json!([16]);
    write_json(&path, &v);
    std::fs::write(run.join("lap-000/.samples.npy.tmp-4000000"), b"stale").unwrap();
    succeeds(&diem(&["fit", "--quiet", "--resume", "--observations", s(&f.obs), "--out", s(&run)]));
    assert!(!run.join("lap-000/.samples.npy.tmp-4000000").exists(), "a stale temporary file survived");
    let table = succeeds(&diem(&["inspect", s(&run)]));
    assert!(
        table.contains("2/2 laps") && table.contains("resumed with config.json changed: laps (1 → 2)"),
        "{table}"
    );
}

#[test]
fn shapes_sizes_and_pipes_do_not_panic() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.npy");
    for shape in [[5, 1], [1, 5]] {
        let obs = tmp.path().join(format!("obs-{}x{}.npz", shape[0], shape[1]));
        observations(&obs, 8, 0.1, &shape);
        let o = diem(&[
            "posterior",
            "--prior",
            s(&f.run),
            "--observations",
            s(&obs),
            "--steps",
            "4",
            "--out",
            s(&out),
        ]);
        fails(&o, &["x_shape", "[5]"]);
    }
    let o = diem(&["sample", "--prior", s(&f.run), "-n", "100000000000", "--out", s(&out)]);
    fails(&o, &["-n 100000000000", "available"]);
    let o = diem(&["sample", "--prior", s(&f.run), "-n", "4", "--steps", "100000000000", "--out", s(&out)]);
    fails(&o, &["--steps", "at most"]);
    assert!(!out.exists());
    // A closed pipe: the command still succeeds, quietly.
    for args in [
        vec!["inspect", s(&f.run)],
        vec!["sample", "--prior", s(&f.run), "-n", "4", "--steps", "2", "--out", s(&out)],
    ] {
        let mut child = Command::new(DIEM)
            .args(&args)
            .env("DIEM_DEVICE", "cpu")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success() && !stderr(&o).contains("panicked"), "{args:?}: {o:?}");
    }
}

#[test]
fn output_paths_never_replace_inputs_links_or_devices() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let post = |out: &Path| {
        diem(&[
            "posterior",
            "--prior",
            s(&f.run),
            "--observations",
            s(&f.obs),
            "--steps",
            "4",
            "--out",
            s(out),
        ])
    };
    let obs_bytes = std::fs::read(&f.obs).unwrap();
    let alias = tmp.path().join("alias.npy");
    std::os::unix::fs::symlink(&f.obs, &alias).unwrap();
    fails(&post(&alias), &["is the observations", "refusing to overwrite an input"]);
    fails(&post(&tmp.path().join("post.txt")), &["post.txt", ".npy"]);
    fails(&post(&f.run.join("lap-000/post.npy")), &["inside the prior"]);
    let device = tmp.path().join("null.npy");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    fails(&post(&device), &["not a regular file"]);
    let link = tmp.path().join("link.npy");
    std::os::unix::fs::symlink(tmp.path().join("target.npy"), &link).unwrap();
    succeeds(&post(&link));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(finite_npy(&tmp.path().join("target.npy")));
    assert_eq!(std::fs::read(&f.obs).unwrap(), obs_bytes, "an input changed");
}

#[test]
fn messages_name_things_once_in_plain_words() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    // N = 0: an error naming y, each cause printed once.
    let empty = tmp.path().join("empty.safetensors");
    let y = Tensor::zeros([0, 5], (Kind::Float, Device::Cpu));
    let identity = diem_operators::Identity::new(&[5]).unwrap();
    Observation::new(y, Box::new(identity), NoiseCov::isotropic(0.1).unwrap()).unwrap().save(&empty).unwrap();
    let o = diem(&[
        "posterior",
        "--prior",
        s(&f.run),
        "--observations",
        s(&empty),
        "--out",
        s(&tmp.path().join("x.npy")),
    ]);
    let e = fails(&o, &["empty.safetensors", "\"y\"", "no observations"]);
    let lines: Vec<&str> = e.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let text = l.trim_start_matches("error: ").trim_start().trim_start_matches("caused by: ");
        assert!(!lines[..i].iter().any(|p| p.contains(text)), "printed twice: {text:?}\n{e}");
    }
    // An all-zero mask: fit refuses, posterior warns.
    let zero = tmp.path().join("zero.npz");
    let x = Tensor::randn([16, 5], (Kind::Float, Device::Cpu));
    let op = Mask::new(Tensor::zeros([1, 5], (Kind::Float, Device::Cpu)), &[5]).unwrap();
    Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.1).unwrap(), 0)
        .unwrap()
        .save(&zero)
        .unwrap();
    let o = diem(&[
        "fit",
        "--quiet",
        "--observations",
        s(&zero),
        "--config",
        s(&f.cfg),
        "--out",
        s(&tmp.path().join("r")),
    ]);
    fails(&o, &["observations", "no information"]);
    assert!(!tmp.path().join("r").exists());
    let o = diem(&[
        "posterior",
        "--prior",
        s(&f.run),
        "--observations",
        s(&zero),
        "--steps",
        "4",
        "--out",
        s(&tmp.path().join("p.npy")),
    ]);
    succeeds(&o);
    assert!(stderr(&o).contains("warning: 16 of 16 observations carry no information"), "{}", stderr(&o));
    // Config values: a zero lap count is named; a latent-size mismatch says what it is.
    let mut v = config_value();
    v["laps"] = 0.into();
    let cfg = tmp.path().join("laps0.json");
    write_json(&cfg, &v);
    let o = diem(&[
        "fit",
        "--quiet",
        "--observations",
        s(&f.obs),
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("r0")),
    ]);
    fails(&o, &["laps0.json", "laps", "≥ 1"]);
    let mut v = config_value();
    v["network"]["mlp"]["features"] = 4.into();
    write_json(&cfg, &v);
    let o = diem(&[
        "fit",
        "--quiet",
        "--observations",
        s(&f.obs),
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("r1")),
    ]);
    fails(&o, &["network.mlp.features", "latent size 5", "got 4"]);
}

/// A tiny deterministic generator for the random cases (the binary is slow to start, so there are few).
fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn randomly_damaged_inputs_fail_cleanly_or_give_finite_results() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&f.obs).unwrap();
    let mut rng = 16_u64;
    for case in 0..6 {
        let mut damaged = bytes.clone();
        let at = lcg(&mut rng) as usize % damaged.len();
        if case % 2 == 0 {
            damaged.truncate(at);
        } else {
            damaged[at] ^= 1 + (lcg(&mut rng) % 255) as u8;
        }
        let obs = tmp.path().join(format!("damaged-{case}.npz"));
        std::fs::write(&obs, &damaged).unwrap();
        let out = tmp.path().join(format!("post-{case}.npy"));
        let o = diem(&[
            "posterior",
            "--prior",
            s(&f.run),
            "--observations",
            s(&obs),
            "--steps",
            "4",
            "--out",
            s(&out),
        ]);
        match o.status.code() {
            Some(0) => assert!(finite_npy(&out), "case {case}: exit 0 with a non-finite output"),
            Some(1) => {
                assert!(stderr(&o).contains(&format!("damaged-{case}.npz")), "case {case}: {}", stderr(&o))
            }
            other => panic!("case {case}: exit {other:?}\n{}", stderr(&o)),
        }
        assert_eq!(std::fs::read(&obs).unwrap(), damaged, "case {case}: the input changed");
    }
    let base = config_value();
    let keys = [
        ("laps", serde_json::json!(2)),
        ("seed", serde_json::json!(-1)),
        ("estep", serde_json::json!({ "chunk_size": 0 })),
        ("mstep", serde_json::json!(null)),
        ("filter_bound", serde_json::json!(0.5)),
        ("gaussian", serde_json::json!("text")),
    ];
    for (case, (key, value)) in keys.into_iter().enumerate() {
        let mut v = base.clone();
        if value.is_object() {
            for (k, x) in value.as_object().unwrap() {
                v[key][k] = x.clone();
            }
        } else {
            v[key] = value;
        }
        let cfg = tmp.path().join(format!("cfg-{case}.json"));
        write_json(&cfg, &v);
        let out = tmp.path().join(format!("run-{case}"));
        let o = diem(&["fit", "--quiet", "--observations", s(&f.obs), "--config", s(&cfg), "--out", s(&out)]);
        match o.status.code() {
            Some(0) => {
                for lap in std::fs::read_dir(&out)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("lap-"))
                {
                    assert!(finite_npy(&lap.path().join("samples.npy")), "case {case}");
                }
            }
            Some(1) => {
                let e = stderr(&o);
                assert!(e.contains(&format!("cfg-{case}.json")) || e.contains(key), "case {case}: {e}");
                assert!(!out.join("state.bin").exists(), "case {case}: a failed fit left a run behind");
            }
            other => panic!("case {case}: exit {other:?}\n{}", stderr(&o)),
        }
    }
    let _ = &f.dir;
}

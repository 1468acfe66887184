//! `diem fit` on 2 MPI ranks (`mpirun`, CPU), against the same fit in one process:
//! - the Gaussian initialization and the E-step samples are bit-identical for 1 and 2 ranks;
//! - after a lap the ranks' parameters are bit-identical (the run checks it and records the hashes);
//! - a 2-rank lap matches the 1-rank lap within a stated tolerance (the M-step's batches differ);
//! - a 2-rank run resumed on 2 ranks equals the uninterrupted one, and resuming on 1 rank works;
//! - a rank that fails (a bad file on rank 1 only) ends the run with a clear error on both ranks, no hang;
//! - more ranks than E-step chunks is refused with a clear error.
//!
//! Skipped, with the reason printed, when `mpirun` is missing or the binary was built without MPI
//! (`cargo xtask test` builds it with `--features diem-dist/nccl` when it can install Open MPI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{python, DIEM, NUMPY_OBSERVATIONS};

/// Why the MPI tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if python().is_none() {
        return Some("no .venv/bin/python (run `cargo xtask setup`)".into());
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        return Some("mpirun is not installed (Debian: openmpi-bin libopenmpi-dev)".into());
    }
    let info = Command::new(DIEM).arg("info").env("DIEM_DEVICE", "cpu").output().ok()?;
    let text = String::from_utf8_lossy(&info.stdout).into_owned();
    // The line ends with the compiled back ends in brackets, e.g. `[single,mpi,nccl]`.
    let compiled = |l: &str| l.rsplit('[').next().is_some_and(|b| b.split([',', ']']).any(|x| x == "mpi"));
    if !text.lines().any(|l| l.starts_with("distributed back ends compiled") && compiled(l)) {
        return Some("this diem was built without MPI (build with --features diem-dist/mpi)".into());
    }
    None
}

/// Runs `cmd` with a deadline: a hang is a failure, not a stuck test.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "timed out after {limit:?} (a hang):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `mpirun` with the flags a root shell on a 2-core machine needs; `apps` are MPMD contexts
/// (`-np 1 diem ... : -np 1 diem ...`), each a list of `diem` arguments run by `ranks` ranks.
fn mpirun(apps: &[(usize, Vec<String>)]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--tag-output"]);
    cmd.args(["-x", "OMP_NUM_THREADS=1", "-x", "DIEM_DEVICE=cpu", "-x", "LD_LIBRARY_PATH", "-x", "PATH"]);
    for (i, (ranks, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", &ranks.to_string(), DIEM]).args(args);
    }
    run_with_timeout(cmd, Duration::from_secs(300))
}

fn single(args: &[String]) -> Output {
    let mut cmd = Command::new(DIEM);
    cmd.args(args).env("OMP_NUM_THREADS", "1").env("DIEM_DEVICE", "cpu");
    run_with_timeout(cmd, Duration::from_secs(300))
}

fn ok(out: Output, what: &str) -> String {
    let t = text(&out);
    assert!(out.status.success(), "{what} failed:\n{t}");
    t
}

/// A tiny config: 4 E-step chunks of 32 observations, one lap (or `laps`), a few M-step steps.
fn config(dir: &Path, name: &str, laps: usize, order: &str, chunk: usize) -> PathBuf {
    let mut v = common::tiny_config();
    v["laps"] = laps.into();
    v["order"] = order.into();
    v["gaussian"]["chunk_size"] = 48.into();
    v["estep"]["chunk_size"] = chunk.into();
    v["mstep"]["steps"] = 48.into();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

fn fit_args(obs: &Path, cfg: Option<&Path>, out: &Path, resume: bool) -> Vec<String> {
    let mut a = vec!["fit".to_string(), "--observations".into(), obs.display().to_string()];
    if let Some(c) = cfg {
        a.extend(["--config".into(), c.display().to_string()]);
    }
    a.extend(["--out".into(), out.display().to_string(), "--quiet".into()]);
    if resume {
        a.push("--resume".into());
    }
    a
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

fn observations(dir: &Path) -> PathBuf {
    let obs = dir.join("obs.npz");
    let py = python().expect("python");
    assert!(Command::new(py).args(["-c", NUMPY_OBSERVATIONS]).arg(&obs).status().unwrap().success());
    obs
}

#[test]
fn two_ranks_match_one_rank_and_resume_across_rank_counts() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let obs = observations(dir);

    // Train-then-sample (the manifold order): the Gaussian fit and the initial E-step are sharded.
    let cfg = config(dir, "tts.json", 1, "train_then_sample", 32);
    let (one, two) = (dir.join("one"), dir.join("two"));
    ok(single(&fit_args(&obs, Some(&cfg), &one, false)), "1-process fit");
    ok(mpirun(&[(2, fit_args(&obs, Some(&cfg), &two, false))]), "2-rank fit");
    same_bytes(&one.join("gaussian.safetensors"), &two.join("gaussian.safetensors"));
    same_bytes(&one.join("init/samples.npy"), &two.join("init/samples.npy"));
    let (m1, m2) = (&metrics(&one)[0], &metrics(&two)[0]);
    assert_eq!(m1["ranks"], 1);
    assert_eq!(m2["ranks"], 2);
    let hashes = m2["param_hashes"].as_array().expect("param_hashes on 2 ranks");
    assert_eq!(hashes.len(), 2);
    assert_eq!(hashes[0], hashes[1], "the ranks' parameters differ after a lap");
    // The M-step draws other batches on 2 ranks (the same global batch size), so the lap matches in
    // distribution: the mean training loss within 25 %, the samples' moments within 0.15.
    let (l1, l2) = (m1["loss_mean"].as_f64().unwrap(), m2["loss_mean"].as_f64().unwrap());
    assert!((l1 - l2).abs() <= 0.25 * l1, "loss_mean 1 rank {l1} vs 2 ranks {l2}");
    for key in ["sample_mean", "sample_std"] {
        let (a, b) = (m1[key].as_f64().unwrap(), m2[key].as_f64().unwrap());
        assert!((a - b).abs() <= 0.15, "{key}: 1 rank {a} vs 2 ranks {b}");
    }

    // Sample-then-train (CIFAR/MRI order): lap 0's E-step under the Gaussian is bit-identical.
    let cfg2 = config(dir, "stt.json", 1, "sample_then_train", 32);
    let (one2, two2) = (dir.join("one-stt"), dir.join("two-stt"));
    ok(single(&fit_args(&obs, Some(&cfg2), &one2, false)), "1-process fit (sample then train)");
    ok(mpirun(&[(2, fit_args(&obs, Some(&cfg2), &two2, false))]), "2-rank fit (sample then train)");
    same_bytes(&one2.join("lap-000/samples.npy"), &two2.join("lap-000/samples.npy"));

    // Resume: 2 laps straight on 2 ranks equal 1 lap + a resumed lap on 2 ranks, bit for bit.
    let cfg3 = config(dir, "tts2.json", 2, "train_then_sample", 32);
    let straight = dir.join("straight");
    ok(mpirun(&[(2, fit_args(&obs, Some(&cfg3), &straight, false))]), "2-rank fit of 2 laps");
    let resumed = dir.join("resumed");
    ok(mpirun(&[(2, fit_args(&obs, Some(&cfg), &resumed, false))]), "2-rank fit of 1 lap");
    let on_one = dir.join("resumed-on-one");
    copy_dir(&resumed, &on_one);
    for run in [&resumed, &on_one] {
        let path = run.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["laps"] = 2.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
    ok(mpirun(&[(2, fit_args(&obs, None, &resumed, true))]), "2-rank resume");
    for f in ["lap-001/weights.safetensors", "lap-001/samples.npy"] {
        same_bytes(&straight.join(f), &resumed.join(f));
    }
    // A different rank count resumes too (its lap differs in batches, not in validity).
    ok(single(&fit_args(&obs, None, &on_one, true)), "1-process resume of a 2-rank run");
    assert_eq!(metrics(&on_one).len(), 2);
    assert_eq!(metrics(&on_one)[1]["ranks"], 1);
}

#[test]
fn a_failing_rank_stops_both_ranks_with_its_error() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let obs = observations(dir);
    let bad = dir.join("bad-rank1.npz");
    std::fs::write(&bad, b"not an npz file").unwrap();
    let cfg = config(dir, "cfg.json", 1, "train_then_sample", 32);
    let out_dir = dir.join("run");
    // MPMD: rank 0 reads the good file, rank 1 the bad one.
    let out = mpirun(&[
        (1, fit_args(&obs, Some(&cfg), &out_dir, false)),
        (1, fit_args(&bad, Some(&cfg), &out_dir, false)),
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "the run should fail:\n{t}");
    let rank_lines = |r: usize| -> String {
        t.lines().filter(|l| l.starts_with(&format!("[1,{r}]"))).collect::<Vec<_>>().join("\n")
    };
    let (r0, r1) = (rank_lines(0), rank_lines(1));
    assert!(r1.contains("bad-rank1.npz"), "rank 1 does not name its bad file:\n{t}");
    assert!(
        r0.contains("rank 1 of 2 failed") && r0.contains("bad-rank1.npz"),
        "rank 0 does not report rank 1's error:\n{t}"
    );
    assert!(!out_dir.join("state.bin").exists(), "nothing may be created when a rank fails to start");
}

#[test]
fn more_ranks_than_chunks_is_refused() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let obs = observations(dir);
    // 128 observations in one chunk of 256: one chunk for two ranks.
    let cfg = config(dir, "cfg.json", 1, "train_then_sample", 256);
    let out = mpirun(&[(2, fit_args(&obs, Some(&cfg), &dir.join("run"), false))]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("estep.chunk_size") && t.contains("fewer than") && t.contains("2 ranks"), "{t}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

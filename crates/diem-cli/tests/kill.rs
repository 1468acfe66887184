//! Kill anywhere: `diem fit` is killed with SIGKILL at N instants spread evenly over a tiny 3-lap run (from
//! the moment its run directory appears to its exit), then finished by running the command again (`--resume`
//! once `state.bin` exists, a fresh `fit` before that). Every finished run must equal the uninterrupted one
//! bit for bit: every file, `metrics.jsonl` up to its wall-clock fields.
//!
//! N is 24 by default (about half a minute on 2 cores: two kills run at a time); set `DIEM_KILL_POINTS` for
//! more. The phases the kills landed in are printed (`--nocapture`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diem_operators::{NoiseCov, Observation, Projection};
use tch::{Device, Kind, Tensor};

const DIEM: &str = env!("CARGO_BIN_EXE_diem");

fn diem() -> Command {
    let mut c = Command::new(DIEM);
    c.env("OMP_NUM_THREADS", "1").env("DIEM_DEVICE", "cpu").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// 96 points of a curve in 3-D seen through random 2×3 projections, σ_y = 0.05.
fn observations(path: &Path) {
    let n = 96;
    let t = Tensor::arange(n, (Kind::Double, Device::Cpu)) * 0.21;
    let x = Tensor::stack(&[t.sin(), t.cos(), &t * 0.1 - 1.0], 1).to_kind(Kind::Float);
    let op = Projection::random_sphere(n, 2, 3, 3).unwrap();
    Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.05).unwrap(), 4)
        .unwrap()
        .save(path)
        .unwrap();
}

/// The shipped tiny config, shrunk to about half a second of work over 3 laps.
fn config(path: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/configs/manifold-tiny.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(shipped).unwrap()).unwrap();
    v["laps"] = 3.into();
    v["progress"] = false.into();
    v["network"]["mlp"]["features"] = 3.into();
    v["network"]["mlp"]["hidden"] = serde_json::json!([32]);
    v["gaussian"]["rank"] = 3.into();
    v["gaussian"]["iterations"] = 2.into();
    v["gaussian"]["steps"] = 12.into();
    v["gaussian"]["chunk_size"] = 32.into();
    v["estep"]["sampler"] = serde_json::json!({ "ddpm": { "steps": 12 } });
    v["estep"]["posterior"]["solver"]["iterations"] = 1.into();
    v["estep"]["chunk_size"] = 32.into();
    v["mstep"]["steps"] = 64.into();
    v["mstep"]["batch_size"] = 32.into();
    v["mstep"]["log_every"] = 32.into();
    v["diagnostics"]["sinkhorn_subsample"] = 16.into();
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn fit(obs: &Path, cfg: &Path, out: &Path) -> Command {
    let mut c = diem();
    c.args(["fit", "--quiet", "--observations"]).arg(obs).arg("--config").arg(cfg).arg("--out").arg(out);
    c
}

fn resume(obs: &Path, out: &Path) -> Command {
    let mut c = diem();
    c.args(["fit", "--quiet", "--resume", "--observations"]).arg(obs).arg("--out").arg(out);
    c
}

fn must(mut c: Command, what: &str) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn metrics_without_times(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !k.ends_with("_seconds"));
            v
        })
        .collect()
}

fn assert_same_runs(a: &Path, b: &Path, what: &str) {
    assert_eq!(files(a), files(b), "{what}: different files");
    for f in files(a) {
        if f == Path::new("metrics.jsonl") {
            assert_eq!(metrics_without_times(a), metrics_without_times(b), "{what}: metrics differ");
        } else {
            let (x, y) = (std::fs::read(a.join(&f)).unwrap(), std::fs::read(b.join(&f)).unwrap());
            assert!(x == y, "{what}: {} differs", f.display());
        }
    }
}

/// What the run directory holds at a kill, in words.
fn phase(dir: &Path) -> String {
    if !dir.exists() {
        return "before the run directory".into();
    }
    match diem_em::RunState::load(&dir.join("state.bin")) {
        Err(_) => "creating the run".into(),
        Ok(s) if !s.gaussian_done => "Gaussian EM".into(),
        Ok(s) if !s.initial_samples_done => "initial E-step".into(),
        Ok(s) if s.completed_laps < 3 => format!("lap {}", s.completed_laps),
        Ok(_) => "finished".into(),
    }
}

/// Starts `fit`, waits until the run directory appears, then `delay` more, and kills it with SIGKILL.
/// Returns the phase at the kill.
fn kill_after(obs: &Path, cfg: &Path, out: &Path, delay: Duration) -> String {
    let mut child = fit(obs, cfg, out).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.exists() && child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    while start.elapsed() < delay && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill(); // SIGKILL (a no-op if it already exited)
    let _ = child.wait();
    phase(out)
}

#[test]
fn a_run_killed_anywhere_and_resumed_equals_the_uninterrupted_run() {
    let points: usize = std::env::var("DIEM_KILL_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let tmp = tempfile::tempdir().unwrap();
    let (obs, cfg) = (tmp.path().join("obs.npz"), tmp.path().join("cfg.json"));
    observations(&obs);
    config(&cfg);

    // The uninterrupted run, twice at once (the kills run two at a time too), timed from the moment its
    // directory appears to its exit; the two must agree.
    let spans: Vec<Duration> = std::thread::scope(|s| {
        let runs: Vec<_> = ["straight", "straight-2"]
            .into_iter()
            .map(|name| {
                let (obs, cfg, out) = (&obs, &cfg, tmp.path().join(name));
                s.spawn(move || {
                    let mut child = fit(obs, cfg, &out).spawn().unwrap();
                    while !out.exists() && child.try_wait().unwrap().is_none() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let start = Instant::now();
                    assert!(child.wait().unwrap().success(), "the uninterrupted run failed");
                    start.elapsed()
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let span = (spans[0] + spans[1]) / 2;
    let straight = tmp.path().join("straight");
    assert_same_runs(&straight, &tmp.path().join("straight-2"), "two uninterrupted runs");

    // Kills at (i + 1/2)/N of the span, two at a time.
    let delays: Vec<Duration> = (0..points).map(|i| span.mul_f64((i as f64 + 0.5) / points as f64)).collect();
    let phases = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for lane in 0..2 {
            let (obs, cfg, tmp, delays, phases, straight) =
                (&obs, &cfg, tmp.path(), &delays, &phases, &straight);
            s.spawn(move || {
                for (i, delay) in delays.iter().enumerate().filter(|(i, _)| i % 2 == lane) {
                    let out = tmp.join(format!("killed-{i}"));
                    let at = kill_after(obs, cfg, &out, *delay);
                    if out.join("state.bin").exists() {
                        must(resume(obs, &out), &format!("resume after a kill at {delay:?} ({at})"));
                    } else {
                        must(fit(obs, cfg, &out), &format!("rerun after a kill at {delay:?} ({at})"));
                    }
                    assert_same_runs(straight, &out, &format!("killed at {delay:?} ({at})"));
                    std::fs::remove_dir_all(&out).unwrap();
                    phases.lock().unwrap().push((i, at));
                }
            });
        }
    });
    let mut phases = phases.into_inner().unwrap();
    phases.sort();
    println!("run span {span:?}; {points} kills, each resumed to the uninterrupted result:");
    for (i, at) in &phases {
        println!("  kill {i:2} at {:?}: {at}", delays[*i]);
    }
    let mut seen: Vec<&String> = phases.iter().map(|(_, at)| at).collect();
    seen.sort();
    seen.dedup();
    println!("phases hit: {seen:?}");
}

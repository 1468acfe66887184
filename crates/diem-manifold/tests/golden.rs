//! The manifold experiment gives exactly what it gave before the library seams of issue 13 (the model factory,
//! `EmLoop` behind `EmRun`, the posterior vocabulary, the operator seam, the crate split): the tiny preset over
//! two laps is fingerprinted (every sample file, every checkpoint tensor, every metric but the timings) and
//! compared with `fixtures/tiny-golden.json`, which the code before those changes wrote (commit 8a55973).
//!
//! libtorch's CPU kernels round differently with different instruction sets (MKL picks AVX2, AVX-512 or AMX code
//! paths at run time), so the comparison is bit for bit where the CPU offers the instruction-set extensions the
//! fixture was recorded on, and otherwise within a tolerance that still catches a changed computation (a
//! different draw, step or loss moves these sums by far more); the test prints which comparison it made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diem_manifold::{run_experiment, ManifoldConfig, RunOptions};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// The extensions that select libtorch's and MKL's CPU kernels.
const ISA: [&str; 7] = ["amx_tile", "avx2", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx512f", "fma"];

fn cpu_isa() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let mut isa: Vec<String> = ISA.iter().filter(|f| flags.contains(f)).map(|f| f.to_string()).collect();
    isa.sort();
    isa
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn describe(t: &Tensor) -> Value {
    let d = t.to_kind(Kind::Double);
    json!({
        "hash": format!("{:016x}", diem_em::io::hash_tensor(t).unwrap()),
        "sum": d.sum(Kind::Double).double_value(&[]),
        "abs_sum": d.abs().sum(Kind::Double).double_value(&[]),
    })
}

/// Every sample file, checkpoint tensor and non-timing metric of the run directory, by relative name.
fn fingerprint(out: &Path) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    let mut all = Vec::new();
    files(out, &mut all);
    for p in all {
        let rel = p.strip_prefix(out).unwrap().display().to_string();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".npy") {
            let t = diem_em::read_npy(&p, Device::Cpu).unwrap();
            map.insert(rel, describe(&t));
        } else if name.ends_with(".safetensors") {
            for (k, t) in diem_models::checkpoint::read_safetensors(&p, Device::Cpu).unwrap() {
                map.insert(format!("{rel}:{k}"), describe(&t));
            }
        } else if name == "metrics.jsonl" || name.ends_with("records.jsonl") {
            for (i, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
                let v: Value = serde_json::from_str(line).unwrap();
                for (k, x) in v.as_object().unwrap() {
                    if k.contains("seconds") || k.contains("time") {
                        continue;
                    }
                    if let Some(f) = x.as_f64() {
                        map.insert(
                            format!("{rel}[{i}].{k}"),
                            json!({"bits": format!("{:016x}", f.to_bits()), "value": f}),
                        );
                    }
                }
            }
        }
    }
    map
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

#[test]
fn tiny_manifold_run_is_unchanged_by_the_library_seams() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/tiny-golden.json")).expect("fixture parses");
    let recorded_isa: Vec<String> =
        serde_json::from_value(fixture["isa"].clone()).expect("fixture names its instruction sets");
    let golden: BTreeMap<String, Value> =
        serde_json::from_value(fixture["entries"].clone()).expect("fixture has entries");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut config = ManifoldConfig::tiny();
    config.em.laps = 2;
    run_experiment(&config, &out, &RunOptions::default()).unwrap();
    let now = fingerprint(&out);

    let golden_keys: Vec<&String> = golden.keys().collect();
    let now_keys: Vec<&String> = now.keys().collect();
    assert_eq!(now_keys, golden_keys, "the run wrote a different set of arrays or metrics");

    let exact = cpu_isa() == recorded_isa;
    if exact {
        println!("same CPU instruction sets as the fixture ({recorded_isa:?}): comparing bit for bit");
    } else {
        println!(
            "this CPU offers {:?}, the fixture was recorded with {recorded_isa:?}: comparing within a tolerance",
            cpu_isa()
        );
    }
    let mut differences = Vec::new();
    for (key, want) in &golden {
        let got = &now[key];
        let same = if exact {
            got.get("hash") == want.get("hash") && got.get("bits") == want.get("bits")
        } else {
            ["sum", "abs_sum", "value"].iter().all(|f| match (got.get(*f), want.get(*f)) {
                (Some(a), Some(b)) => close(a.as_f64().unwrap(), b.as_f64().unwrap(), 2e-2),
                (None, None) => true,
                _ => false,
            })
        };
        if !same {
            differences.push(format!("{key}: now {got}, before {want}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} entries changed:\n{}",
        differences.len(),
        golden.len(),
        differences.join("\n")
    );
}

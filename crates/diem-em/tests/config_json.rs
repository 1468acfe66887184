//! The JSON of the shipped configurations and the presets is frozen: every preset serializes to exactly the
//! JSON captured in `tests/fixtures/presets/` (before the posterior vocabulary moved to diem-sampling), that
//! JSON parses back to the same value, and every file under `data/configs` and the fuzz corpus parses as it
//! did. A change here changes what existing `config.json` files in run directories mean.

use std::path::{Path, PathBuf};

use diem_em::config::config_changes;
use diem_em::EmConfig;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/presets")
}

/// Compares `json` with the fixture `name`; `DIEM_BLESS_PRESETS=1` (re)writes it instead.
fn frozen(name: &str, json: &str) {
    let path = fixtures().join(format!("{name}.json"));
    if std::env::var_os("DIEM_BLESS_PRESETS").is_some() {
        std::fs::write(&path, format!("{json}\n")).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(json, want.trim_end(), "{name}: the preset's JSON changed");
}

#[test]
fn presets_serialize_to_the_frozen_json_and_parse_back() {
    for (name, preset) in [
        ("em-manifold-16", EmConfig::manifold(16)),
        ("em-manifold-reference-64", EmConfig::manifold_reference(64)),
    ] {
        let json = serde_json::to_string_pretty(&preset).unwrap();
        frozen(name, &json);
        let back: EmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, preset, "{name}");
        assert!(config_changes(&back, &preset).unwrap().is_empty(), "{name}");
    }
}

/// Every frozen EM configuration (the EM presets, the EM part of the manifold, CIFAR and fastMRI presets, the
/// shipped files and the fuzz corpus as they parsed before) parses and serializes back to the same bytes.
#[test]
fn every_frozen_em_configuration_round_trips_byte_for_byte() {
    let mut seen = 0;
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        if !(name.starts_with("em-") || name.ends_with("-em") || name.starts_with("data-")) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let c: EmConfig = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_string_pretty(&c).unwrap(), text.trim_end(), "{name}");
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} frozen EM configurations");
}

/// The files under `data/configs` and the fuzz corpus parse to the values frozen before the change.
#[test]
fn shipped_files_parse_to_the_frozen_values() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut seen = 0;
    for (prefix, dir) in [("data-configs", "data/configs"), ("data-fuzz", "data/fuzz/em_config")] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                let c: EmConfig = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
                frozen(&format!("{prefix}-{stem}"), &serde_json::to_string_pretty(&c).unwrap());
                seen += 1;
            }
        }
    }
    assert!(seen >= 2);
}

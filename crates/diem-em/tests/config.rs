//! Configuration files: the shipped example parses and validates; unknown keys and bad values are named.

use std::path::Path;

use diem_em::{EmConfig, EmError, LapOrder};

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/configs/manifold-tiny.json");
    let c = EmConfig::from_file(&path).unwrap();
    assert_eq!(c.order, LapOrder::TrainThenSample);
    assert_eq!(c.filter_bound, Some(3.0));
    // Presets validate and survive a JSON round trip.
    for preset in [EmConfig::manifold(32), EmConfig::manifold_reference(64)] {
        preset.validate().unwrap();
        let back: EmConfig = serde_json::from_str(&serde_json::to_string(&preset).unwrap()).unwrap();
        assert_eq!(back, preset);
    }
}

#[test]
fn unknown_keys_and_bad_values_name_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = serde_json::to_value(EmConfig::manifold(2)).unwrap();
    v["gaussian"]["rnak"] = 3.into();
    let path = dir.path().join("cfg.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let err = EmConfig::from_file(&path).unwrap_err();
    assert!(matches!(err, EmError::Json { .. }));
    let msg = err.to_string();
    assert!(msg.contains("cfg.json") && msg.contains("rnak"), "{msg}");

    let mut v = serde_json::to_value(EmConfig::manifold(2)).unwrap();
    v["mstep"]["batch_size"] = 0.into();
    std::fs::write(&path, v.to_string()).unwrap();
    let msg = EmConfig::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("cfg.json") && msg.contains("mstep.batch_size"), "{msg}");
}

#[test]
fn gaussian_pairs_are_every_stride_th_of_the_window() {
    let mut g = diem_em::GaussianEmConfig::spec(4, 8);
    assert_eq!(g.stride, 1);
    assert_eq!(g.pair_indices(5), vec![0, 1, 2, 3, 4]);
    g.max_pairs = Some(16);
    g.stride = 4;
    assert_eq!(g.pair_indices(100), vec![0, 4, 8, 12]);
    assert_eq!(g.pair_indices(10), vec![0, 4, 8], "the window is cut to the data");
    // The MRI preset's choice (docs/method.md §9c): every 4th of the first 16,384 pairs is 4,096 pairs.
    g.max_pairs = Some(16_384);
    assert_eq!(g.pair_indices(30_000).len(), 4096);
    // Older configs without the field read as stride 1; a zero stride is refused.
    let mut json = serde_json::to_value(diem_em::GaussianEmConfig::spec(4, 8)).unwrap();
    json.as_object_mut().unwrap().remove("stride");
    let back: diem_em::GaussianEmConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.stride, 1);
    g.stride = 0;
    assert!(g.validate("gaussian").is_err());
}

#[test]
fn numbers_beyond_float32_are_refused_by_field() {
    // Each of these became a float32 scalar inside libtorch, which panicked on the overflow.
    for (section, key) in [("mstep", "clip_norm"), ("estep", "memory_budget_mib"), ("", "filter_bound")] {
        let mut c = EmConfig::manifold(2);
        let mut v = serde_json::to_value(&c).unwrap();
        let slot = if section.is_empty() { &mut v[key] } else { &mut v[section][key] };
        *slot = serde_json::json!(1e300);
        match serde_json::from_value::<EmConfig>(v) {
            Ok(parsed) => c = parsed,
            Err(_) => continue, // an integer field refuses 1e300 at parsing already
        }
        let msg = c.validate().unwrap_err().to_string();
        let field = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
        assert!(msg.contains(&field) && msg.contains("float32"), "{msg}");
    }
    let mut c = EmConfig::manifold(2);
    c.mstep.adam.weight_decay = 1e39;
    assert!(c.validate().unwrap_err().to_string().contains("mstep.adam.weight_decay"));
}

//! The presets' JSON is frozen (`crates/diem-em/tests/fixtures/presets/`, captured before the posterior
//! vocabulary moved to diem-sampling): a change would change what existing run directories' configurations
//! mean. `DIEM_BLESS_PRESETS=1` rewrites the fixtures.

use diem_fastmri::FastMriConfig;

#[test]
fn presets_serialize_to_the_frozen_json_and_parse_back() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../diem-em/tests/fixtures/presets");
    for (name, preset) in [
        ("fastmri-paper", FastMriConfig::paper()),
        ("fastmri-tiny", FastMriConfig::tiny()),
        ("fastmri-micro", FastMriConfig::micro()),
    ] {
        let json = serde_json::to_string_pretty(&preset).unwrap();
        let path = dir.join(format!("{name}.json"));
        if std::env::var_os("DIEM_BLESS_PRESETS").is_some() {
            std::fs::write(&path, format!("{json}\n")).unwrap();
        } else {
            let want = std::fs::read_to_string(&path).unwrap();
            assert_eq!(json, want.trim_end(), "{name}: the preset's JSON changed");
        }
        let back: FastMriConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, preset, "{name}");
        // The EM configuration a run stores in its directory.
        let em = preset.em_for(1000);
        let em_json = serde_json::to_string_pretty(&em).unwrap();
        let path = dir.join(format!("{name}-em.json"));
        if std::env::var_os("DIEM_BLESS_PRESETS").is_some() {
            std::fs::write(&path, format!("{em_json}\n")).unwrap();
        } else {
            let want = std::fs::read_to_string(&path).unwrap();
            assert_eq!(em_json, want.trim_end(), "{name}: the preset's EM JSON changed");
        }
    }
}

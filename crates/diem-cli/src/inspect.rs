//! `diem inspect DIR`: the lap table of a run's `metrics.jsonl`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::checks::say;

/// The columns shown, with their headers.
const COLUMNS: &[(&str, &str)] = &[
    ("lap", "lap"),
    ("loss_mean", "loss"),
    ("kept_fraction", "kept"),
    ("sample_mean", "mean"),
    ("sample_std", "std"),
    ("obs_residual_rms", "resid"),
    ("obs_mean_rms", "obs_dμ"),
    ("obs_sinkhorn", "obs_sink"),
    ("estep_seconds", "E s"),
    ("mstep_seconds", "M s"),
    ("lap_seconds", "lap s"),
];

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e4) {
                format!("{x:.3e}")
            } else {
                format!("{x:.4}")
            }
        }
        other => other.to_string(),
    }
}

/// Prints the lap table (plus any extra fields observers added, by name) and the run's progress.
pub fn inspect(dir: &Path) -> Result<()> {
    let path = dir.join(diem_em::layout::METRICS_FILE);
    let lines = diem_em::io::read_jsonl(&path).with_context(|| format!("reading {}", path.display()))?;
    let state_path = dir.join(diem_em::layout::STATE_FILE);
    let state =
        diem_em::RunState::load(&state_path).with_context(|| format!("reading {}", state_path.display()))?;
    let config = diem_em::EmConfig::from_file(&dir.join(diem_em::layout::CONFIG_FILE))?;
    say(format!(
        "run {}: {}/{} laps completed ({:?})",
        dir.display(),
        state.completed_laps,
        config.laps,
        config.order
    ))?;
    let mut extra: Vec<String> = Vec::new();
    for l in &lines {
        if let Value::Object(m) = l {
            for k in m.keys() {
                let known = COLUMNS.iter().any(|(c, _)| c == k)
                    || [
                        "loss_std",
                        "loss_last",
                        "samples",
                        "kept",
                        "obs_std_rms",
                        "obs_noise_rms",
                        "config_changes",
                    ]
                    .contains(&k.as_str());
                if !known && !extra.contains(k) {
                    extra.push(k.clone());
                }
            }
        }
    }
    let mut header: Vec<String> = COLUMNS.iter().map(|(_, h)| (*h).to_string()).collect();
    header.extend(extra.iter().cloned());
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            COLUMNS
                .iter()
                .map(|(k, _)| cell(&l[*k]))
                .chain(extra.iter().map(|k| cell(&l[k.as_str()])))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let fmt =
        |r: &[String]| r.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect::<Vec<_>>().join("  ");
    say(fmt(&header))?;
    for r in &rows {
        say(fmt(r))?;
    }
    // Resumes that changed config.json (resumable fields only) are recorded with the next lap.
    for l in &lines {
        if let Some(Value::Array(changes)) = l.get("config_changes") {
            let list: Vec<String> = changes
                .iter()
                .map(|c| format!("{} ({} → {})", c["field"].as_str().unwrap_or("?"), c["from"], c["to"]))
                .collect();
            say(format!("lap {}: resumed with config.json changed: {}", cell(&l["lap"]), list.join(", ")))?;
        }
    }
    Ok(())
}

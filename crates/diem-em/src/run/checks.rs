//! The checks a run makes before it writes anything: that the network, the Gaussian rank, the batches and
//! host memory fit the configuration and the data, and, on several ranks, that every rank has work and runs
//! the same build on the same inputs.

use diem_dist::Communicator;
use diem_models::{Batching, NetworkConfig};
use diem_operators::Observation;

use crate::config::EmConfig;
use crate::error::{EmError, Result};
use crate::estep::chunk_count;
use crate::io::ObservationFingerprint;

/// Checks that a run over `ranks` ranks gives every rank work: at least one chunk of the training E-step and
/// at least one sample of every M-step batch.
pub(crate) fn check_shardable(config: &EmConfig, obs: &Observation, ranks: usize) -> Result<()> {
    if ranks <= 1 {
        return Ok(());
    }
    let k = config.estep.samples_per_observation;
    let chunk = config.estep.effective_chunk(obs.operator.x_numel());
    let chunks = chunk_count(obs.len(), k, chunk);
    if chunks < ranks as u64 {
        return Err(EmError::config(
            "estep.chunk_size",
            format!(
                "{} observations × {k} samples in chunks of {chunk} make {chunks} E-step chunk(s), fewer than \
                 the {ranks} ranks: run at most {chunks} ranks, or lower the chunk size",
                obs.len()
            ),
        ));
    }
    if config.mstep.batch_size < ranks as i64 {
        return Err(EmError::config(
            "mstep.batch_size",
            format!(
                "the batch of {} cannot be shared by {ranks} ranks (each needs at least one sample)",
                config.mstep.batch_size
            ),
        ));
    }
    Ok(())
}

/// Checks that every rank runs the same build on the same configuration and observations.
pub(crate) fn check_same_inputs(comm: &dyn Communicator, config: &EmConfig, obs: &Observation) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    diem_dist::check_same(comm, "the build", &diem_dist::build_fingerprint())?;
    let text = serde_json::to_string(config).map_err(|e| EmError::config("config", e.to_string()))?;
    diem_dist::check_same(comm, "the configuration", &text)?;
    diem_dist::check_same(comm, "the observations", &format!("{:?}", ObservationFingerprint::of(obs)?))?;
    Ok(())
}

/// Checks that the network fits the observations' latents: the MLP's input size equals the latent size of
/// flat latents; the U-Net takes `[C_in, H, W]` with H and W multiples of its size multiple. Also checks the
/// Gaussian rank against the latent size.
pub(crate) fn check_fits(config: &EmConfig, obs: &Observation) -> Result<()> {
    let n = obs.operator.x_numel();
    if let NetworkConfig::Mlp(m) = &config.network {
        let shape = obs.operator.x_shape();
        if shape.len() != 1 {
            return Err(EmError::config(
                "network.mlp",
                format!(
                    "the MLP takes flat latents, but the observations' latents have shape {shape:?} (their \
                     x_shape): store them with x_shape [{n}], or use a U-Net"
                ),
            ));
        }
        if m.features != n {
            return Err(EmError::config(
                "network.mlp.features",
                format!("must equal the latent size {n} of the observations, got {}", m.features),
            ));
        }
    }
    if let NetworkConfig::Unet(u) = &config.network {
        // The U-Net's forward pass cannot report a bad size itself (it would fail inside libtorch), so the
        // latent shape is checked here, once, against [C_in, H, W] with H and W multiples of its size multiple.
        let shape = obs.operator.x_shape();
        let m = u.size_multiple();
        let fits = shape.len() == 3
            && shape[0] == u.in_channels
            && shape[1] > 0
            && shape[2] > 0
            && shape[1] % m == 0
            && shape[2] % m == 0;
        if !fits {
            return Err(EmError::config(
                "network.unet",
                format!(
                    "expects latents of shape [{}, H, W] with H and W positive multiples of {m}, but the \
                     observations' latent shape is {shape:?}",
                    u.in_channels
                ),
            ));
        }
    }
    if config.gaussian.rank as i64 > n {
        return Err(EmError::config(
            "gaussian.rank",
            format!("must be ≤ the latent size {n}, got {}", config.gaussian.rank),
        ));
    }
    Ok(())
}

/// Checks the configuration against the size of the data, as far as no computation is needed: the
/// Gaussian fit's rank against the pairs it uses, the PPCA refit's rank against its samples, an `epochs`
/// batch against the E-step samples, and observations that carry information at all. Returns the
/// warnings (some observations carry none).
pub(crate) fn check_data(config: &EmConfig, obs: &Observation) -> Result<Vec<String>> {
    let n_obs = obs.len();
    let pairs = config.gaussian.pair_indices(n_obs).len() as i64;
    let g = &config.gaussian;
    if g.rank as i64 > pairs {
        return Err(EmError::config(
            "gaussian.rank",
            format!(
                "must be ≤ {pairs}, the number of pairs the Gaussian fit uses ({n_obs} observations, \
                 max_pairs {}, stride {}), got {}",
                g.max_pairs.map_or("null".into(), |m| m.to_string()),
                g.stride,
                g.rank
            ),
        ));
    }
    let k = config.estep.samples_per_observation as i64;
    let total = n_obs.saturating_mul(k);
    if let Some(r) = &config.refit {
        let fit = (r.samples as i64).min(total);
        let most = fit.min(obs.operator.x_numel());
        if r.rank as i64 > most {
            return Err(EmError::config(
                "refit.rank",
                format!(
                    "must be ≤ {most} (the PPCA refit fits {fit} samples of {} entries), got {}",
                    obs.operator.x_numel(),
                    r.rank
                ),
            ));
        }
    }
    if config.mstep.batching == Batching::Epochs && config.mstep.batch_size > total {
        return Err(EmError::config(
            "mstep.batch_size",
            format!(
                "{} exceeds the {total} E-step samples ({n_obs} observations × {k}) that `epochs` batching \
                 draws whole batches from: lower it, or use `with_replacement` batching",
                config.mstep.batch_size
            ),
        ));
    }
    check_memory(config, obs)?;
    let unobserved = obs.unobserved();
    if unobserved.len() as i64 == n_obs {
        return Err(EmError::config(
            "observations",
            format!(
                "every one of the {n_obs} observations has a zero operator (operator {:?}, e.g. an all-zero \
                 mask): they carry no information to learn from",
                obs.operator.kind()
            ),
        ));
    }
    let mut warnings = Vec::new();
    if !unobserved.is_empty() {
        let list: Vec<String> = unobserved.iter().take(8).map(i64::to_string).collect();
        warnings.push(format!(
            "{} of {n_obs} observations carry no information (zero operator, e.g. an all-zero mask row): \
             rows {}{}",
            unobserved.len(),
            list.join(", "),
            if unobserved.len() > 8 { ", …" } else { "" }
        ));
    }
    Ok(warnings)
}

/// Host memory available to this process (`MemAvailable` of `/proc/meminfo`), if known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Refuses, before anything runs, the sizes that cannot fit in host memory whatever the device: the E-step
/// samples (kept and written: twice), an M-step batch (with an allowance of 8 copies for the noise, the
/// network's input and output), the Sinkhorn diagnostic's cost matrices (three of m² f64). Only what is
/// certain to fail is refused; the estimates are lower bounds.
fn check_memory(config: &EmConfig, obs: &Observation) -> Result<()> {
    let Some(available) = available_memory() else { return Ok(()) };
    let x = obs.operator.x_numel().max(1) as u64;
    let total = (obs.len() as u64).saturating_mul(config.estep.samples_per_observation as u64);
    let mib = |b: u64| b >> 20;
    let checks = [
        (
            "estep.samples_per_observation",
            total.saturating_mul(x).saturating_mul(4 * 2),
            "the E-step samples",
        ),
        (
            "mstep.batch_size",
            (config.mstep.batch_size.max(1) as u64).saturating_mul(x).saturating_mul(4 * 8),
            "an M-step batch",
        ),
        (
            "diagnostics.sinkhorn_subsample",
            config
                .diagnostics
                .sinkhorn_subsample
                .map_or(0, |s| (s as u64).min(total))
                .saturating_pow(2)
                .saturating_mul(8 * 3),
            "the Sinkhorn diagnostic",
        ),
    ];
    for (field, bytes, what) in checks {
        if bytes > available {
            return Err(EmError::config(
                field,
                format!(
                    "{what} would need at least {} MiB of memory, but {} MiB are available",
                    mib(bytes),
                    mib(available)
                ),
            ));
        }
    }
    Ok(())
}

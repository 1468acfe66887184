//! The E-step: posterior samples for every observation, chunked, each chunk with its own derived seed
//! (SPEC.md §7.4, §8; DESIGN.md "Reproducibility").

use std::ops::Range;

use diem_models::Denoiser;
use diem_operators::Observation;
use diem_sampling::{GuidanceStats, Mmps, MmpsConfig, NoiseRng, Sampler};
use diem_models::ProgressObserver;
use tch::{Device, Kind, Tensor};

use crate::error::{EmError, Result};
use crate::seed::{derive_seed, SeedPurpose};

/// One E-step's settings beyond the prior and the data.
#[derive(Debug, Clone)]
pub struct EStepPlan {
    /// The MMPS configuration.
    pub mmps: MmpsConfig,
    /// Posterior samples per observation k: sample `j` belongs to observation `j mod N` (the data set repeated
    /// k times, as \[ref\] duplicates it).
    pub samples_per_observation: usize,
    /// Samples per chunk (≥ 1).
    pub chunk: i64,
    /// The dtype of the samples (the prior's: f32 for networks).
    pub kind: Kind,
    /// The run seed.
    pub seed: u64,
    /// Which seeds the chunks use.
    pub purpose: SeedPurpose,
    /// The lap (or Gaussian-EM iteration) the chunk seeds derive from.
    pub lap: u64,
    /// Where the sampling runs; `None` = where the observations are. Each chunk of observations moves there
    /// and its samples move back to the observations' device (see [`crate::DataStorage::Host`]).
    pub device: Option<Device>,
}

/// Draws `k` posterior samples per observation of `obs` under `prior` with MMPS and `sampler`:
/// `x_j ~ q(x | y_{j mod N}, A_{j mod N})`, `j = 0..kN`, returned as `[kN, ..x_shape]` in `plan.kind`.
///
/// Chunk `c` covers samples `c·chunk .. (c+1)·chunk` and draws its noise from
/// `NoiseRng::seeded(derive_seed(seed, purpose, lap, c))`, so the result does not depend on anything but the
/// plan (not on earlier chunks, threads, a resume or how chunks are shared between ranks). `progress` (if
/// any) advances by one per chunk.
///
/// # Errors
/// [`EmError::Sampling`] when MMPS or the sampler fails (shapes, solver); [`EmError::Config`] for an empty
/// observation set.
pub fn posterior_samples(
    prior: &dyn Denoiser,
    obs: &Observation,
    sampler: &dyn Sampler,
    plan: &EStepPlan,
    progress: Option<&dyn ProgressObserver>,
) -> Result<Tensor> {
    let chunks = chunk_count(obs.len(), plan.samples_per_observation, plan.chunk);
    Ok(posterior_shard(prior, obs, sampler, plan, 0..chunks, progress)?.samples)
}

/// What [`posterior_shard`] returns.
#[derive(Debug)]
pub struct EStepShard {
    /// The samples of the shard's chunks, `[rows, ..x_shape]`, on the observations' device.
    pub samples: Tensor,
    /// The first row's index in the whole sample set (`chunks.start · chunk`).
    pub first_row: i64,
    /// The posterior denoiser's costs and solver events, summed over the shard's chunks.
    pub stats: GuidanceStats,
}

/// The chunks `chunks` (a range of chunk indices, as [`crate::dist::shard_chunks`] gives a rank) of the
/// E-step [`posterior_samples`] describes: the same samples, bit for bit, as rows
/// `chunks.start·chunk ..` of the whole set. An empty range gives `[0, ..x_shape]`.
///
/// # Errors
/// As [`posterior_samples`].
pub fn posterior_shard(
    prior: &dyn Denoiser,
    obs: &Observation,
    sampler: &dyn Sampler,
    plan: &EStepPlan,
    chunks: Range<u64>,
    progress: Option<&dyn ProgressObserver>,
) -> Result<EStepShard> {
    let n = obs.len();
    if n == 0 {
        return Err(EmError::config("observations", "the observation set is empty"));
    }
    let total = n * plan.samples_per_observation as i64;
    let x_shape = obs.operator.x_shape();
    let home = obs.y.device();
    let device = plan.device.unwrap_or(home);
    let chunk = plan.chunk.max(1);
    let rows = crate::dist::chunk_rows(&chunks, chunk, total);
    let mut parts = Vec::new();
    let mut stats = GuidanceStats::default();
    let mut start = rows.start;
    let mut c = chunks.start;
    while start < rows.end {
        let len = chunk.min(total - start);
        let indices: Vec<i64> = (start..start + len).map(|j| j % n).collect();
        let sub = obs.select(&indices);
        let sub = if device == home { sub } else { sub.to_device(device) };
        let mmps = Mmps::from_observation(prior, &sub, plan.mmps.clone())?;
        let mut rng = NoiseRng::seeded(derive_seed(plan.seed, plan.purpose, plan.lap, c));
        let mut shape = vec![len];
        shape.extend(&x_shape);
        let x = sampler.sample(&mmps, &shape, plan.kind, device, &mut rng)?;
        stats += mmps.stats();
        parts.push(x.to_device(home));
        if let Some(bar) = progress {
            bar.advance(1);
        }
        start += len;
        c += 1;
    }
    let samples = if parts.is_empty() {
        let mut shape = vec![0];
        shape.extend(&x_shape);
        Tensor::zeros(shape.as_slice(), (plan.kind, home))
    } else {
        Tensor::cat(&parts, 0)
    };
    Ok(EStepShard { samples, first_row: rows.start, stats })
}

/// The number of chunks [`posterior_samples`] runs.
pub fn chunk_count(observations: i64, samples_per_observation: usize, chunk: i64) -> u64 {
    let total = observations * samples_per_observation as i64;
    ((total + chunk.max(1) - 1) / chunk.max(1)) as u64
}

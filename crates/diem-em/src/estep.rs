//! The E-step: posterior samples for every observation, chunked, each chunk with its own derived seed
//! (docs/method.md §7.4, §8; docs/architecture.md "Reproducibility").

use std::ops::Range;

use diem_models::Denoiser;
use diem_models::ProgressObserver;
use diem_operators::Observation;
use diem_sampling::{GuidanceConfig, GuidanceStats, NoiseRng, Sampler, Silent, StepObserver};
use tch::{Device, Kind, Tensor};

use crate::error::{EmError, Result};
use crate::seed::{derive_seed, SeedPurpose};

/// How the chunks of an E-step seed their noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkSeeds {
    /// Chunk `c` draws from `NoiseRng::seeded(derive_seed(seed, purpose, lap, c))` (EM runs: independent of
    /// every other stream of the run).
    #[default]
    Derived,
    /// Chunk `c` draws from `NoiseRng::seeded(seed + c)` (wrapping; `diem posterior`'s documented seeding).
    Consecutive,
}

/// One E-step's settings beyond the prior and the data. Build it with [`EStepPlan::new`] and the setters
/// ([`EStepPlan::chunk`], [`EStepPlan::kind`], [`EStepPlan::seeded`], [`EStepPlan::device`]); the fields stay
/// public for code that sets them directly.
///
/// ```
/// use diem_em::{EStepPlan, SeedPurpose};
/// use diem_sampling::PosteriorMethod;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dps = "{\"dps\": {\"zeta\": 0.5}}";
/// let method: PosteriorMethod = serde_json::from_str(dps)?;
/// let plan = EStepPlan::new(method.resolve(None)?, 2).chunk(64).seeded(7, SeedPurpose::EStepChunk, 3);
/// assert_eq!((plan.chunk, plan.samples_per_observation, plan.seed, plan.lap), (64, 2, 7, 3));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EStepPlan {
    /// The posterior method, resolved ([`diem_sampling::PosteriorMethod::resolve`]; an `MmpsConfig` converts
    /// with `.into()`).
    pub guidance: GuidanceConfig,
    /// Posterior samples per observation k: sample `j` belongs to observation `j mod N` (the data set repeated
    /// k times, as the authors' code duplicates it).
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
    /// How chunk seeds follow from `seed` (default: [`ChunkSeeds::Derived`]).
    pub chunk_seeds: ChunkSeeds,
}

impl EStepPlan {
    /// `samples_per_observation` samples per observation with `guidance`, in chunks of 256 samples, float32,
    /// seed 0 for [`SeedPurpose::EStepChunk`] at lap 0, where the observations are.
    pub fn new(guidance: impl Into<GuidanceConfig>, samples_per_observation: usize) -> Self {
        Self {
            guidance: guidance.into(),
            samples_per_observation,
            chunk: 256,
            kind: Kind::Float,
            seed: 0,
            purpose: SeedPurpose::EStepChunk,
            lap: 0,
            device: None,
            chunk_seeds: ChunkSeeds::Derived,
        }
    }

    /// Sets the samples per chunk.
    pub fn chunk(mut self, chunk: i64) -> Self {
        self.chunk = chunk;
        self
    }

    /// Sets the samples' dtype.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// Derives chunk seeds from the run seed, the purpose and the lap ([`ChunkSeeds::Derived`]).
    pub fn seeded(mut self, seed: u64, purpose: SeedPurpose, lap: u64) -> Self {
        (self.seed, self.purpose, self.lap, self.chunk_seeds) = (seed, purpose, lap, ChunkSeeds::Derived);
        self
    }

    /// Seeds chunk `c` with `seed + c` ([`ChunkSeeds::Consecutive`]).
    pub fn consecutive_seeds(mut self, seed: u64) -> Self {
        (self.seed, self.chunk_seeds) = (seed, ChunkSeeds::Consecutive);
        self
    }

    /// Sets where the sampling runs (`None`: where the observations are).
    pub fn device(mut self, device: Option<Device>) -> Self {
        self.device = device;
        self
    }

    /// The noise seed of chunk `c`.
    pub fn chunk_seed(&self, c: u64) -> u64 {
        match self.chunk_seeds {
            ChunkSeeds::Derived => derive_seed(self.seed, self.purpose, self.lap, c),
            ChunkSeeds::Consecutive => self.seed.wrapping_add(c),
        }
    }
}

/// Draws `k` posterior samples per observation of `obs` under `prior` with the plan's posterior method and
/// `sampler` (DPS: on its schedule and grid): `x_j ~ q(x | y_{j mod N}, A_{j mod N})`, `j = 0..kN`, returned
/// as `[kN, ..x_shape]` in `plan.kind`.
///
/// Chunk `c` covers samples `c·chunk .. (c+1)·chunk` and draws its noise from
/// `NoiseRng::seeded(plan.chunk_seed(c))`, so the result does not depend on anything but the plan (not on
/// earlier chunks, threads, a resume or how chunks are shared between ranks). `progress` (if any) advances by
/// one per chunk.
///
/// # Errors
/// [`EmError::Sampling`] when the method or the sampler fails (shapes, solver); [`EmError::Config`] for an
/// empty observation set.
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
    /// The posterior method's costs and solver events, summed over the shard's chunks (DPS: its steps).
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
    posterior_shard_observed(prior, obs, sampler, plan, chunks, progress, &mut Silent)
}

/// [`posterior_shard`] with an observer that sees every sampler step of every chunk, in order (e.g. to
/// find the step where a sample first became non-finite).
///
/// # Errors
/// As [`posterior_samples`].
pub fn posterior_shard_observed(
    prior: &dyn Denoiser,
    obs: &Observation,
    sampler: &dyn Sampler,
    plan: &EStepPlan,
    chunks: Range<u64>,
    progress: Option<&dyn ProgressObserver>,
    observer: &mut dyn StepObserver,
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
        let posterior = plan.guidance.from_observation(prior, &sub)?;
        let mut rng = NoiseRng::seeded(plan.chunk_seed(c));
        let mut shape = vec![len];
        shape.extend(&x_shape);
        let x = posterior.sample_observed(sampler, &shape, plan.kind, device, &mut rng, observer)?;
        stats += posterior.stats();
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

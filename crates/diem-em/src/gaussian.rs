//! The Gaussian initial prior and its EM fit `fit_moments` (docs/method.md §7.4).
//!
//! ```text
//! μ_x ← 0,  Σ_x ← I
//! repeat `iterations` times:
//!     E-step: one sample per pair (y_i, A_i) from the posterior of N(μ_x, Σ_x), by the exact Gaussian
//!             denoiser (§7.2) + MMPS with the `cov_x` covariance Σ_x (exact, §5.2) + DDIM, from μ_x + σ(1) z
//!     M-step: (μ_x, Σ_x) ← PPCA(samples, rank r)    (§7.3)
//! ```

use std::path::Path;

use diem_dist::{Communicator, Single};
use diem_linalg::{ppca, Dplr};
use diem_models::checkpoint::{read_safetensors, tensors_to_safetensors};
use diem_models::ProgressObserver;
use diem_models::{GaussianDenoiser, VeSchedule};
use diem_operators::Observation;
use diem_sampling::{Ddim, MmpsConfig, TimeGrid};
use tch::{Device, Kind, Tensor};

use crate::config::{Covariance, GaussianEmConfig, PosteriorSpec, SolverSpec};
use crate::dist::{broadcast_from_root, gather_to_root, shard_chunks, sync};
use crate::error::{EmError, Result};
use crate::estep::{chunk_count, posterior_shard, EStepPlan};
use crate::io::write_atomic;
use crate::seed::SeedPurpose;

/// A Gaussian prior `N(μ_x, Σ_x)` with a DPLR covariance, over samples of shape `x_shape`.
#[derive(Debug)]
pub struct GaussianPrior {
    /// `μ_x`, flattened `[N]`.
    pub mean: Tensor,
    /// `Σ_x`, unbatched DPLR of size N.
    pub cov: Dplr,
    /// The per-sample shape (`N = Π x_shape`).
    pub x_shape: Vec<i64>,
}

impl Clone for GaussianPrior {
    fn clone(&self) -> Self {
        Self { mean: self.mean.shallow_clone(), cov: self.cov.clone(), x_shape: self.x_shape.clone() }
    }
}

impl GaussianPrior {
    /// `N(0, I)` over `x_shape`.
    pub fn standard(x_shape: &[i64], kind: Kind, device: Device) -> Self {
        let n: i64 = x_shape.iter().product();
        Self {
            mean: Tensor::zeros([n], (kind, device)),
            cov: Dplr::identity(n, kind, device),
            x_shape: x_shape.to_vec(),
        }
    }

    /// The PPCA fit of `samples: [S, ..x_shape]` with rank `rank` (docs/method.md §7.3).
    ///
    /// # Errors
    /// [`EmError::Linalg`] when the PPCA fails (e.g. rank above the data's size).
    pub fn fit_ppca(samples: &Tensor, rank: usize) -> Result<Self> {
        let (mean, cov) = ppca(samples, rank)?;
        Ok(Self { mean, cov, x_shape: samples.size()[1..].to_vec() })
    }

    /// The number of entries per sample N.
    pub fn dim(&self) -> i64 {
        self.cov.dim()
    }

    /// The exact denoiser of this prior (docs/method.md §7.2).
    ///
    /// # Errors
    /// [`EmError::Models`] when the mean and covariance do not fit.
    pub fn denoiser(&self) -> Result<GaussianDenoiser> {
        Ok(GaussianDenoiser::new(self.mean.shallow_clone(), self.cov.clone())?)
    }

    /// The mean reshaped to `x_shape` (what a network prior carries as μ_x).
    pub fn mean_shaped(&self) -> Tensor {
        self.mean.reshape(self.x_shape.as_slice())
    }

    /// The dense covariance `[N, N]` (small N only).
    pub fn cov_dense(&self) -> Tensor {
        self.cov.to_dense()
    }

    /// Saves `mean`, `d`, `u`, `v` and `x_shape` (as f64) to a safetensors file, atomically.
    ///
    /// # Errors
    /// [`EmError::Models`] or [`EmError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named = vec![
            ("mean".to_string(), self.mean.shallow_clone()),
            ("d".to_string(), self.cov.d().shallow_clone()),
            ("x_shape".to_string(), Tensor::from_slice(&self.x_shape).to_kind(Kind::Double)),
        ];
        if let (Some(u), Some(v)) = (self.cov.u(), self.cov.v()) {
            named.push(("u".to_string(), u.shallow_clone()));
            named.push(("v".to_string(), v.shallow_clone()));
        }
        let bytes = tensors_to_safetensors(path, &named)?;
        write_atomic(path, &bytes)
    }

    /// Loads a file written by [`GaussianPrior::save`] onto `device`.
    ///
    /// # Errors
    /// [`EmError::Models`] or [`EmError::File`] naming the file and the missing or inconsistent tensor.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let mut t = read_safetensors(path, device)?;
        let mut take = |name: &str| {
            t.remove(name).ok_or_else(|| EmError::file(path, format!("tensor `{name}` is missing")))
        };
        let mean = take("mean")?;
        let d = take("d")?;
        let x_shape: Vec<i64> = Vec::<f64>::try_from(take("x_shape")?.to_device(Device::Cpu))?
            .into_iter()
            .map(|v| v as i64)
            .collect();
        let (u, v) = match (take("u"), take("v")) {
            (Ok(u), Ok(v)) => (Some(u), Some(v)),
            _ => (None, None),
        };
        let cov = Dplr::new(d, u, v).map_err(|e| EmError::file(path, format!("covariance: {e}")))?;
        // A forged x_shape must not overflow: its product is checked like an operator's.
        let n = diem_operators::operator::checked_numel(&x_shape)
            .filter(|_| !x_shape.is_empty() && x_shape.iter().all(|&d| d >= 1))
            .ok_or_else(|| EmError::file(path, format!("x_shape {x_shape:?} is not a valid sample shape")))?;
        if mean.size() != [n] || cov.dim() != n {
            return Err(EmError::file(path, format!("mean/covariance do not have x_shape {x_shape:?}")));
        }
        Ok(Self { mean, cov, x_shape })
    }
}

/// Gaussian EM `fit_moments` (docs/method.md §7.4) on the pairs of `obs`, with the noise schedule `schedule` (the
/// experiment's (a, b)) and the run seed `seed`. The samples and the prior have `obs.y`'s dtype.
///
/// # Errors
/// As [`fit_gaussian_with`].
pub fn fit_gaussian(
    obs: &Observation,
    config: &GaussianEmConfig,
    schedule: VeSchedule,
    seed: u64,
) -> Result<GaussianPrior> {
    fit_gaussian_with(obs, config, schedule, seed, None, &mut |_, _| Ok(()))
}

/// [`fit_gaussian`] with a progress bar (advanced once per E-step chunk) and a callback after every iteration
/// `(iteration, prior)`, e.g. to record the fit's trajectory.
///
/// Iteration `i`, chunk `c` draws its noise from `derive_seed(seed, GaussianChunk, i, c)`.
///
/// # Errors
/// [`EmError::Config`] for an invalid configuration; [`EmError::Sampling`] when a posterior solve fails;
/// [`EmError::Linalg`] when the PPCA fails (e.g. rank above the sample size); whatever the callback returns.
pub fn fit_gaussian_with(
    obs: &Observation,
    config: &GaussianEmConfig,
    schedule: VeSchedule,
    seed: u64,
    progress: Option<&dyn ProgressObserver>,
    on_iteration: &mut dyn FnMut(usize, &GaussianPrior) -> Result<()>,
) -> Result<GaussianPrior> {
    fit_gaussian_on(&Single, obs, config, schedule, seed, progress, on_iteration)
}

/// [`fit_gaussian_with`] on the ranks of `comm`: every rank calls it with the same arguments. Each
/// iteration's E-step chunks are shared between the ranks ([`crate::dist::shard_chunks`]), rank 0 gathers the
/// samples (the same, bit for bit, as one process draws) and fits the PPCA, and every rank receives the fit.
/// `on_iteration` runs on rank 0 only. A failure on any rank stops every rank with that error.
///
/// # Errors
/// As [`fit_gaussian_with`]; [`EmError::Dist`] when a collective fails or another rank failed.
pub fn fit_gaussian_on(
    comm: &dyn Communicator,
    obs: &Observation,
    config: &GaussianEmConfig,
    schedule: VeSchedule,
    seed: u64,
    progress: Option<&dyn ProgressObserver>,
    on_iteration: &mut dyn FnMut(usize, &GaussianPrior) -> Result<()>,
) -> Result<GaussianPrior> {
    let checked = (|| {
        config.validate("gaussian")?;
        let x_shape = obs.operator.x_shape();
        let n: i64 = x_shape.iter().product();
        if config.rank as i64 > n {
            return Err(EmError::config(
                "gaussian.rank",
                format!("must be ≤ the {n} entries per sample, got {}", config.rank),
            ));
        }
        Ok((x_shape, n))
    })();
    let (x_shape, _) = sync(comm, checked)?;
    let n_obs = obs.len();
    let pairs = config.pair_indices(n_obs);
    let subset;
    let data = if (pairs.len() as i64) < n_obs {
        subset = obs.select(&pairs);
        &subset
    } else {
        obs
    };
    let kind = if obs.y.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let device = obs.y.device();
    let sampler = Ddim::new(schedule, TimeGrid::uniform(config.steps)?);
    let mut prior = GaussianPrior::standard(&x_shape, kind, device);
    let chunks = chunk_count(data.len(), 1, config.chunk_size as i64);
    let mine = shard_chunks(chunks, comm.rank(), comm.size());
    for it in 0..config.iterations {
        let plan = EStepPlan::new(cov_x_mmps(&prior, &config.solver), 1)
            .chunk(config.chunk_size as i64)
            .kind(kind)
            .seeded(seed, SeedPurpose::GaussianChunk, it as u64);
        let local =
            prior.denoiser().and_then(|d| posterior_shard(&d, data, &sampler, &plan, mine.clone(), progress));
        let local = sync(comm, local)?;
        let gathered = gather_to_root(comm, &local.samples)?;
        let fitted = match gathered {
            Some(samples) => {
                let fit = GaussianPrior::fit_ppca(&samples.to_device(device), config.rank)
                    .and_then(|p| on_iteration(it, &p).map(|()| p));
                Some(sync(comm, fit)?)
            }
            None => {
                sync(comm, Ok(()))?;
                None
            }
        };
        prior = GaussianPrior::broadcast_from_root(comm, fitted, &x_shape, device)?;
    }
    Ok(prior)
}

impl GaussianPrior {
    /// Rank 0's prior (`Some` there) on every rank, on `device`: the mean and the DPLR factors are broadcast.
    /// One process gets its prior back.
    ///
    /// # Errors
    /// [`EmError::Dist`] when a collective fails; [`EmError::Linalg`] for inconsistent factors.
    pub fn broadcast_from_root(
        comm: &dyn Communicator,
        root: Option<Self>,
        x_shape: &[i64],
        device: Device,
    ) -> Result<Self> {
        if comm.size() == 1 {
            return root.ok_or_else(|| EmError::config("gaussian", "no prior to broadcast"));
        }
        let parts = root.map(|p| {
            let mut v = vec![p.mean.shallow_clone(), p.cov.d().shallow_clone()];
            if let (Some(u), Some(w)) = (p.cov.u(), p.cov.v()) {
                v.extend([u.shallow_clone(), w.shallow_clone()]);
            }
            v
        });
        let mut parts = broadcast_from_root(comm, parts, device)?.into_iter();
        let (Some(mean), Some(d)) = (parts.next(), parts.next()) else {
            return Err(EmError::config("gaussian", "rank 0 broadcast no prior"));
        };
        let (u, v) = (parts.next(), parts.next());
        Ok(Self { mean, cov: Dplr::new(d, u, v)?, x_shape: x_shape.to_vec() })
    }
}

/// The exact posterior denoiser configuration for a Gaussian prior: MMPS with the `cov_x` covariance of the
/// same Σ_x (docs/method.md §5.2, §7.4).
pub fn cov_x_mmps(prior: &GaussianPrior, solver: &SolverSpec) -> MmpsConfig {
    PosteriorSpec::new(Covariance::CovX, *solver).to_mmps(&prior.cov)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_sample_shape_is_an_error_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gaussian.safetensors");
        let prior = GaussianPrior::standard(&[3], Kind::Double, Device::Cpu);
        prior.save(&path).unwrap();
        assert_eq!(GaussianPrior::load(&path, Device::Cpu).unwrap().x_shape, vec![3]);
        for forged in [vec![4e9f64, 4e9, 4e9], vec![0.0], vec![-3.0, -1.0]] {
            let named = vec![
                ("mean".to_string(), prior.mean.shallow_clone()),
                ("d".to_string(), prior.cov.d().shallow_clone()),
                ("x_shape".to_string(), Tensor::from_slice(&forged)),
            ];
            let bytes = tensors_to_safetensors(&path, &named).unwrap();
            std::fs::write(&path, bytes).unwrap();
            let err = GaussianPrior::load(&path, Device::Cpu).unwrap_err().to_string();
            assert!(err.contains("gaussian.safetensors") && err.contains("x_shape"), "{err}");
        }
    }
}

//! Choosing a back end: what the launcher says about this process, and [`init`].

use std::str::FromStr;

use crate::{Backend, Communicator, DistError, Result, Single};

/// The environment variable the binaries read for the back end (`auto`, `single`, `mpi`, `nccl`).
pub const BACKEND_VAR: &str = "DIEM_DIST";

/// Which back end to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// MPI when a launcher started several ranks (NCCL on top when built with it and the ranks compute on
    /// CUDA), else [`Single`].
    #[default]
    Auto,
    /// One process, whatever the launcher says.
    Single,
    /// MPI with host staging.
    Mpi,
    /// MPI for control and NCCL for CUDA tensors.
    Nccl,
}

impl FromStr for BackendChoice {
    type Err = DistError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "single" | "none" => Ok(Self::Single),
            "mpi" => Ok(Self::Mpi),
            "nccl" => Ok(Self::Nccl),
            _ => Err(DistError::Parse { value: s.to_string() }),
        }
    }
}

impl BackendChoice {
    /// The choice named by [`BACKEND_VAR`], [`BackendChoice::Auto`] when unset.
    ///
    /// # Errors
    /// [`DistError::Parse`] for an unknown name.
    pub fn from_env() -> Result<Self> {
        std::env::var(BACKEND_VAR).map_or(Ok(Self::Auto), |v| v.parse())
    }
}

/// What the process launcher (`mpirun`/`mpiexec` of Open MPI or MPICH, SLURM's `srun`) told this process
/// through its environment, read before any MPI call: enough to pick a GPU and to refuse running as one of
/// several ranks without MPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The variable that told (e.g. `OMPI_COMM_WORLD_SIZE`).
    pub launcher: String,
    /// This process's rank.
    pub rank: usize,
    /// The number of ranks.
    pub size: usize,
    /// This process's rank on its node.
    pub local_rank: usize,
}

impl Launch {
    /// Reads the launcher's variables; `None` when no launcher started this process.
    pub fn detect() -> Option<Self> {
        Self::detect_from(|k| std::env::var(k).ok())
    }

    /// [`Launch::detect`] over any variable lookup (for tests).
    pub fn detect_from(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse::<usize>().ok());
        // (size, rank, local rank) variables of Open MPI, MPICH/Hydra, PMIx and SLURM, most specific first.
        const SOURCES: [(&str, &str, &str); 4] = [
            ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
            ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
            ("PMIX_SIZE", "PMIX_RANK", "PMIX_LOCAL_RANK"),
            ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),
        ];
        SOURCES.iter().find_map(|(size, rank, local)| {
            let (n, r) = (num(size)?, num(rank)?);
            // SLURM_NTASKS is also set inside an `sbatch` script that has not run `srun` yet: only a step
            // (SLURM_STEP_ID) is a launch.
            if *size == "SLURM_NTASKS" && get("SLURM_STEP_ID").is_none() {
                return None;
            }
            (n >= 1 && r < n).then(|| Self {
                launcher: (*size).to_string(),
                rank: r,
                size: n,
                local_rank: num(local).unwrap_or(0),
            })
        })
    }
}

/// Starts the chosen back end. `cuda` says whether this rank computes on a CUDA device (NCCL needs one).
///
/// - [`BackendChoice::Auto`]: [`Single`] without a launcher or with one rank; with several launched
///   ranks, NCCL when compiled in and `cuda`, else MPI; an error when MPI is not compiled in.
/// - [`BackendChoice::Single`]: one process, even under a launcher (each rank then runs alone).
/// - [`BackendChoice::Mpi`] / [`BackendChoice::Nccl`]: that back end, or an error saying which feature
///   is missing.
///
/// MPI is initialized at most once per process.
///
/// # Errors
/// [`DistError::LauncherWithoutMpi`], [`DistError::NotCompiled`], and the back ends' errors (for NCCL: a
/// missing `libnccl.so.2`, or no CUDA device).
pub fn init(choice: BackendChoice, cuda: bool) -> Result<Box<dyn Communicator>> {
    match decide(choice, cuda, Launch::detect().as_ref(), Compiled::THIS_BUILD)? {
        Backend::Single => Ok(Box::new(Single)),
        Backend::Mpi => init_mpi(),
        Backend::Nccl => init_nccl(),
    }
}

/// The back ends a build contains (its cargo features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compiled {
    /// Feature `mpi`.
    pub mpi: bool,
    /// Feature `nccl`.
    pub nccl: bool,
}

impl Compiled {
    /// This build.
    pub const THIS_BUILD: Self = Self { mpi: cfg!(feature = "mpi"), nccl: cfg!(feature = "nccl") };
}

/// The back end [`init`] starts for a choice, whether the rank computes on CUDA, what the launcher said
/// and what the build contains: the decision alone, without starting anything (see [`init`] for the rules).
///
/// # Errors
/// [`DistError::LauncherWithoutMpi`] for [`BackendChoice::Auto`] under a launcher of several ranks in a
/// build without MPI; [`DistError::NotCompiled`] for an explicit choice the build lacks.
pub fn decide(
    choice: BackendChoice,
    cuda: bool,
    launch: Option<&Launch>,
    compiled: Compiled,
) -> Result<Backend> {
    let mpi = || {
        if compiled.mpi {
            Ok(Backend::Mpi)
        } else {
            Err(DistError::NotCompiled { backend: "mpi", feature: "diem-dist/mpi" })
        }
    };
    let nccl = || {
        if compiled.nccl {
            Ok(Backend::Nccl)
        } else {
            Err(DistError::NotCompiled { backend: "nccl", feature: "diem-dist/nccl" })
        }
    };
    match (choice, launch) {
        (BackendChoice::Single, _) => Ok(Backend::Single),
        (BackendChoice::Mpi, _) => mpi(),
        (BackendChoice::Nccl, _) => nccl(),
        (BackendChoice::Auto, Some(l)) if l.size > 1 => {
            if compiled.nccl && cuda {
                Ok(Backend::Nccl)
            } else if compiled.mpi {
                Ok(Backend::Mpi)
            } else {
                Err(DistError::LauncherWithoutMpi {
                    launcher: l.launcher.clone(),
                    rank: l.rank,
                    size: l.size,
                })
            }
        }
        (BackendChoice::Auto, _) => Ok(Backend::Single),
    }
}

fn init_mpi() -> Result<Box<dyn Communicator>> {
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(crate::mpi::Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(DistError::NotCompiled { backend: "mpi", feature: "diem-dist/mpi" })
    }
}

fn init_nccl() -> Result<Box<dyn Communicator>> {
    #[cfg(feature = "nccl")]
    {
        Ok(Box::new(crate::nccl::Nccl::init()?))
    }
    #[cfg(not(feature = "nccl"))]
    {
        Err(DistError::NotCompiled { backend: "nccl", feature: "diem-dist/nccl" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn detects_each_launcher() {
        assert_eq!(Launch::detect_from(env(&[])), None);
        let ompi = Launch::detect_from(env(&[
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ]))
        .unwrap();
        assert_eq!((ompi.rank, ompi.size, ompi.local_rank), (3, 4, 1));
        let hydra = Launch::detect_from(env(&[("PMI_SIZE", "2"), ("PMI_RANK", "1")])).unwrap();
        assert_eq!((hydra.rank, hydra.size, hydra.local_rank), (1, 2, 0));
        // An sbatch script before srun is not a launch; an srun step is.
        assert_eq!(Launch::detect_from(env(&[("SLURM_NTASKS", "8"), ("SLURM_PROCID", "0")])), None);
        let srun = Launch::detect_from(env(&[
            ("SLURM_NTASKS", "8"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_ID", "0"),
        ]))
        .unwrap();
        assert_eq!((srun.rank, srun.size, srun.local_rank), (5, 8, 1));
        // Inconsistent values are no launch.
        assert_eq!(Launch::detect_from(env(&[("PMI_SIZE", "2"), ("PMI_RANK", "2")])), None);
    }

    #[test]
    fn parses_backend_names() {
        assert_eq!("".parse::<BackendChoice>().unwrap(), BackendChoice::Auto);
        assert_eq!(" MPI ".parse::<BackendChoice>().unwrap(), BackendChoice::Mpi);
        assert_eq!("nccl".parse::<BackendChoice>().unwrap(), BackendChoice::Nccl);
        assert_eq!("single".parse::<BackendChoice>().unwrap(), BackendChoice::Single);
        assert!(matches!("gloo".parse::<BackendChoice>(), Err(DistError::Parse { .. })));
    }

    #[test]
    fn decisions_follow_launcher_choice_and_build() {
        let none = Compiled { mpi: false, nccl: false };
        let mpi = Compiled { mpi: true, nccl: false };
        let all = Compiled { mpi: true, nccl: true };
        let two = Launch::detect_from(env(&[("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "1")]));
        let one = Launch::detect_from(env(&[("PMI_SIZE", "1"), ("PMI_RANK", "0")]));
        let auto = BackendChoice::Auto;
        // A launcher of several ranks and no MPI in the build: refuse, naming the launcher and rank.
        match decide(auto, false, two.as_ref(), none) {
            Err(DistError::LauncherWithoutMpi { launcher, rank, size }) => {
                assert_eq!((launcher.as_str(), rank, size), ("OMPI_COMM_WORLD_SIZE", 1, 2))
            }
            other => panic!("expected LauncherWithoutMpi, got {other:?}"),
        }
        assert_eq!(decide(auto, false, None, none).unwrap(), Backend::Single);
        assert_eq!(decide(auto, true, one.as_ref(), all).unwrap(), Backend::Single);
        assert_eq!(decide(auto, true, two.as_ref(), mpi).unwrap(), Backend::Mpi);
        assert_eq!(decide(auto, false, two.as_ref(), all).unwrap(), Backend::Mpi);
        assert_eq!(decide(auto, true, two.as_ref(), all).unwrap(), Backend::Nccl);
        assert_eq!(decide(BackendChoice::Single, true, two.as_ref(), all).unwrap(), Backend::Single);
        assert_eq!(decide(BackendChoice::Mpi, false, None, mpi).unwrap(), Backend::Mpi);
        assert!(matches!(
            decide(BackendChoice::Nccl, true, two.as_ref(), mpi),
            Err(DistError::NotCompiled { backend: "nccl", .. })
        ));
        assert!(matches!(
            decide(BackendChoice::Mpi, false, None, none),
            Err(DistError::NotCompiled { backend: "mpi", .. })
        ));
    }

    #[test]
    fn single_without_launcher() {
        if Launch::detect().is_none() {
            let c = init(BackendChoice::Auto, false).unwrap();
            assert_eq!((c.rank(), c.size()), (0, 1));
        }
        if !cfg!(feature = "mpi") {
            assert!(matches!(init(BackendChoice::Mpi, false), Err(DistError::NotCompiled { .. })));
        }
    }
}

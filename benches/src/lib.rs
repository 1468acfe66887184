//! Synthetic studies and comparison harnesses for diem.
//!
//! - [`mixture`]: the mixture-on-a-manifold posterior problem of docs/method.md §10 with its closed-form posterior.
//! - [`figure2`]: the paper's Figure 2 study (docs/method.md §10.4–10.5), run by `cargo xtask figure2`.
//! - [`sweep`]: beyond the paper, full posterior samplers (MMPS, DPS, TMPD, PiGDM, DiffPIR, heuristics)
//!   against the exact posterior for d = 2..64, run by `cargo xtask sweep`.
//! - [`frontier`]: accuracy per second against azula (issue 14): the sweep's problem at d = 8 and 32, divergence
//!   against wall time for diem's samplers and azula's, run by `cargo xtask sweep --frontier`.
//! - [`posterior_bench`]: our side of `cargo xtask bench posterior` (speed and memory against azula; the azula
//!   side is `benches/python/azula_posterior.py`).
//! - [`inverse`]: the FFHQ-256 posterior-sampling benchmark of docs/method.md §9d (Table 4, the cost table of
//!   §11.3), run by `cargo xtask posterior-bench` (binary `inverse_bench`).
//! - [`stats`] and [`report`]: medians, quartiles, CSV files and log–log figures shared by the studies.
//! - [`random`]: seeded host-side draws and multinomial resampling.
//!
//! ```no_run
//! use diem_benches::figure2::{run, Figure2Config};
//! # fn main() -> diem_benches::Result<()> {
//! let config = Figure2Config { seeds: 2, ..Figure2Config::default() };
//! let records = run(&config, &mut |r| println!("{} {} {:.3e}", r.sigma_t, r.choice.name(), r.divergence))?;
//! assert_eq!(records.len(), 2 * 10 * 4);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod error;
pub mod figure2;
pub mod frontier;
pub mod inverse;
pub mod mixture;
pub mod posterior_bench;
pub mod random;
pub mod report;
pub mod stats;
pub mod sweep;

pub use error::{BenchError, Error, Result};

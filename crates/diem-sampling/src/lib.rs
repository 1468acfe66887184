//! Diffusion samplers and posterior guidance (SPEC.md §4–5).
//!
//! Planned contents (issue "diem-sampling and diem-metrics"): the `Sampler` trait with DDPM, DDIM and
//! predictor-corrector samplers over any `Denoiser`, and posterior denoisers (MMPS, covariance heuristics,
//! TMPD, PGDM, DPS, DiffPIR). This crate holds no code yet; it exists so the workspace layout of DESIGN.md
//! is fixed from the start.

//! Diffusion expectation-maximization (SPEC.md §7.4, §8): the Gaussian initial prior, EM laps of posterior
//! sampling and denoiser training, run directories and resume.
//!
//! This crate holds no code yet (issue "diem-em, the `diem` CLI and `cargo xtask demo`"); it exists so the
//! workspace layout of DESIGN.md is fixed from the start.

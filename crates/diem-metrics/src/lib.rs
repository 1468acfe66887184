//! Sample-quality metrics (SPEC.md §9–10): debiased log-domain Sinkhorn divergence, moment errors, PSNR,
//! SSIM, and FID/IS from a user-supplied Inception TorchScript file.
//!
//! This crate holds no code yet (issue "diem-sampling and diem-metrics"); it exists so the workspace layout of
//! DESIGN.md is fixed from the start.

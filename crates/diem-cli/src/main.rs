//! `diem`: the command-line interface to diem's diffusion priors.
//!
//! Today it reports the compute environment (`diem info`); fitting, sampling and posterior commands arrive
//! with the EM issue.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use anyhow::Result;
use clap::{Parser, Subcommand};
use diem_models::DeviceChoice;

/// Learn diffusion priors from incomplete, noisy observations and sample posteriors with them.
#[derive(Parser)]
#[command(name = "diem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the libtorch build, the visible CUDA devices and the device diem would use.
    Info {
        /// Device to resolve: auto, cpu, cuda or cuda:N (default: $DIEM_DEVICE, else auto).
        #[arg(long)]
        device: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Info { device } => info(device),
    }
}

fn info(device: Option<String>) -> Result<()> {
    let resolved = match device {
        Some(text) => text.parse::<DeviceChoice>()?.resolve()?,
        None => diem_models::device_from_env()?,
    };
    println!("diem {}", env!("CARGO_PKG_VERSION"));
    println!("CUDA available: {}", tch::Cuda::is_available());
    println!("CUDA devices: {}", diem_models::device::cuda_device_count());
    println!("cuDNN available: {}", tch::Cuda::cudnn_is_available());
    println!("intra-op threads: {}", tch::get_num_threads());
    println!("selected device: {resolved:?}");
    Ok(())
}

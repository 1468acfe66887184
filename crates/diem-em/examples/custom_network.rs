//! DiEM with your own network, on data in memory, without a run directory.
//!
//! 384 points of a twisted ring in R^3, each seen only through its own random 2×3 projection with noise
//! σ_y = 0.02. A user-defined network (a small residual MLP written with plain tch layers, not one of diem's
//! built-ins) is plugged in through `NoiseConditionalNet` + `ModelFactory`, and `EmLoop` runs the Gaussian
//! initialization and two short laps in memory, printing each lap's loss and how far the E-step samples lie
//! from the hidden points.
//!
//! Run with `cargo xtask cargo run -p diem-em --example custom_network` (a few seconds in debug mode).

use std::rc::Rc;

use diem_dist::Single;
use diem_em::{EmConfig, EmLoop, SamplerSpec};
use diem_models::{ModelFactory, NetworkConfig, NoiseConditionalNet};
use diem_operators::{NoiseCov, Observation, Projection};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// `F(u, e) = out(silu(hidden([u, e]))) + skip(u)`: the signature diem needs is
/// `forward_t(u, emb, train)`, where `u` is the preconditioned noisy sample and `emb` the noise embedding.
#[derive(Debug)]
struct ResidualMlp {
    hidden: nn::Linear,
    out: nn::Linear,
    skip: nn::Linear,
    embedding: i64,
}

impl NoiseConditionalNet for ResidualMlp {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, _train: bool) -> Tensor {
        let h = Tensor::cat(&[u.shallow_clone(), emb.to_kind(u.kind())], -1);
        self.out.forward(&self.hidden.forward(&h).silu()) + self.skip.forward(u)
    }

    fn embedding_features(&self) -> i64 {
        self.embedding
    }
}

/// Builds the network under the model's variable store and names it for checkpoints.
struct ResidualMlpFactory {
    features: i64,
    width: i64,
    embedding: i64,
}

impl ModelFactory for ResidualMlpFactory {
    fn describe(&self) -> NetworkConfig {
        NetworkConfig::custom(
            "example/residual-mlp",
            serde_json::json!({
                "features": self.features, "width": self.width, "embedding": self.embedding
            }),
        )
    }

    fn build(&self, path: &nn::Path) -> diem_models::Result<Box<dyn NoiseConditionalNet>> {
        let (f, w, e) = (self.features, self.width, self.embedding);
        let linear = nn::LinearConfig::default();
        Ok(Box::new(ResidualMlp {
            hidden: nn::linear(path / "hidden", f + e, w, linear),
            out: nn::linear(path / "out", w, f, linear),
            skip: nn::linear(path / "skip", f, f, nn::LinearConfig { bias: false, ..linear }),
            embedding: e,
        }))
    }
}

/// Fits the prior and prints a line per lap (public so that the test suite can run it).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let n = 384;
    let t = Tensor::rand([n], (Kind::Float, Device::Cpu)) * (2.0 * std::f64::consts::PI);
    let x = Tensor::stack(&[t.cos(), t.sin(), (&t * 2.0).sin() * 0.5], 1);
    let operator = Projection::random_sphere(n, 2, 3, 1)?;
    let observations = Observation::simulate(&x, Box::new(operator), NoiseCov::isotropic(0.02)?, 2)?;

    // The manifold preset, shrunk to run in seconds: a short Gaussian EM, 16 sampler steps, 64 M-step steps.
    let mut config = EmConfig::manifold(2);
    config.gaussian.rank = 3;
    config.gaussian.iterations = 3;
    config.gaussian.steps = 16;
    config.estep.sampler = SamplerSpec::Ddpm { steps: 16 };
    config.mstep.steps = 64;
    config.mstep.batch_size = 64;
    config.mstep.log_every = 16;
    config.diagnostics.sinkhorn_subsample = Some(64);

    let factory = Rc::new(ResidualMlpFactory { features: 3, width: 32, embedding: 8 });
    let mut em = EmLoop::with_model(config, observations, Device::Cpu, factory, Rc::new(Single))?;
    let gaussian = em.init()?;
    println!("Gaussian prior: mean {:?}", Vec::<f64>::try_from(gaussian.mean.to_kind(Kind::Double))?);
    let error = |samples: &Tensor| (samples - &x).square().sum_dim_intlist(1, false, Kind::Double).sqrt();
    while em.completed_laps() < em.config().laps {
        let lap = em.step()?;
        let loss = lap.report.records.last().map_or(f64::NAN, |r| r.loss);
        let median = error(&lap.samples).median().double_value(&[]);
        println!(
            "lap {}: loss {loss:.4}, median |sample − truth| {median:.3}, E-step {:.2} s, M-step {:.2} s",
            lap.lap, lap.estep_seconds, lap.mstep_seconds
        );
    }
    let model = em.model().ok_or("no model after two laps")?;
    println!("trained {} parameters of {:?}", model.num_parameters(), model.config());
    Ok(())
}

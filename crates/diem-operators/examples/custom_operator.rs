//! Your own forward operator in a few lines: a two-view tomography projector (the row and column sums of
//! an image, i.e. parallel-beam projections at 0° and 90°), checked like the built-in operators, used to
//! simulate observations, and saved to an observation file and loaded back.
//!
//! Run: `cargo xtask cargo run -p diem-operators --example custom_operator` (about a second; no data).
//!
//! 1. The operator: a struct with `x_shape`, `y_shape` and `apply`. The adjoint (the back-projection),
//!    batching, devices and cloning all come from the trait's defaults; the adjoint is autograd's.
//! 2. The same map as a closure, in one line, with [`FnOperator`].
//! 3. [`check_operator`]: the dot test `⟨Ax, u⟩ = ⟨x, Aᵀu⟩`, the adjoint against autograd, linearity and a
//!    power-method estimate of `‖A‖₂` (here `√(2n)`: the all-ones image is the top singular vector).
//! 4. `Observation::simulate`, then `Aᵀ y`.
//! 5. Persistence: with `kind`, `params` and a loader registered by `register_operator`, the observation
//!    round-trips through `.npz` and `.safetensors`, bit for bit.

use anyhow::{ensure, Result};
use diem_operators::params::Params;
use diem_operators::testing::{check_operator, dense_norm};
use diem_operators::{register_operator, FnOperator, LinearOperator, NoiseCov, Observation};
use tch::{Device, Kind, Tensor};

// ── 1. The operator: five lines that matter ─────────────────────────────────────────────────────────

/// Row and column sums of a `[1, n, n]` image: `y = [Σ_w x[h, w]; Σ_h x[h, w]]`, shape `[2, n]`.
#[derive(Clone, Debug)]
struct TwoViews {
    n: i64,
}

impl LinearOperator for TwoViews {
    fn x_shape(&self) -> Vec<i64> {
        vec![1, self.n, self.n]
    }
    fn y_shape(&self) -> Vec<i64> {
        vec![2, self.n]
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        let rows = x.sum_dim_intlist([3i64].as_slice(), false, x.kind()); // [N, 1, n]
        let cols = x.sum_dim_intlist([2i64].as_slice(), false, x.kind()); // [N, 1, n]
        Tensor::cat(&[rows, cols], 1)
    }

    // ── 5. Optional: persistence (a kind name and the arrays that rebuild it) ──
    fn kind(&self) -> String {
        "two_views".into()
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![("x_shape".into(), Tensor::from_slice(&self.x_shape()))]
    }
}

/// Rebuilds a [`TwoViews`] from the arrays written by its `params`.
fn load_two_views(p: &Params<'_>) -> diem_operators::Result<Box<dyn LinearOperator>> {
    let shape = p.shape("x_shape")?;
    Ok(Box::new(TwoViews { n: shape[shape.len() - 1] }))
}

fn main() -> Result<()> {
    let n = 16;
    let op = TwoViews { n };

    // ── 2. The same map as a closure ──
    let closure = FnOperator::new(&[1, n, n], &[2, n], |x| {
        let sum = |dim: i64| x.sum_dim_intlist([dim].as_slice(), false, x.kind());
        Tensor::cat(&[sum(3), sum(2)], 1)
    })?
    .named("two_views");

    // ── 3. The physics checks ──
    for (name, candidate) in [("struct", &op as &dyn LinearOperator), ("closure", &closure)] {
        let report = check_operator(candidate, 1e-10)?;
        println!(
            "{name:>7}: dot gap {:.1e}, autograd gap {:.1e}, ‖A‖₂ ≈ {:.6} (power method)",
            report.dot_gap, report.autograd_gap, report.norm
        );
        ensure!((report.norm - (2.0 * n as f64).sqrt()).abs() < 1e-6, "‖A‖₂ should be √(2n)");
    }
    println!("   SVD of the dense matrix: ‖A‖₂ = {:.6}", dense_norm(&op)[0]);

    // ── 4. Simulate observations y = A x + ε ──
    let x = Tensor::rand([4, 1, n, n], (Kind::Float, Device::Cpu));
    let obs = Observation::simulate(&x, Box::new(op.clone()), NoiseCov::isotropic(0.05)?, 7)?;
    let back = obs.operator.adjoint(&obs.y); // the back-projection Aᵀ y, by autograd
    println!("simulated y {:?}; back-projection Aᵀy {:?}", obs.y.size(), back.size());

    // ── 5. Save and load back ──
    register_operator("two_views", load_two_views)?;
    let dir = tempfile::tempdir()?;
    for ext in ["npz", "safetensors"] {
        let path = dir.path().join(format!("two_views.{ext}"));
        obs.save(&path)?;
        let again = Observation::load(&path, Device::Cpu)?;
        ensure!(again.operator.kind() == "two_views" && again.y.equal(&obs.y), "{ext}: round trip differs");
        println!("saved and loaded {}: kind {:?}, y identical", path.display(), again.operator.kind());
    }
    // A closure has no arrays: saving it is refused with a typed error, not a panic.
    let unsaved = Observation::simulate(&x, Box::new(closure), NoiseCov::isotropic(0.05)?, 7)?;
    let refused = unsaved.save(dir.path().join("closure.npz"));
    ensure!(refused.is_err(), "an FnOperator must not be saved");
    println!("saving the closure operator: {}", refused.err().map(|e| e.to_string()).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo test -p diem-operators` runs the example end to end (`test = true` in Cargo.toml).
    #[test]
    fn example_runs() {
        super::main().expect("the custom_operator example runs");
    }
}

//! Sinkhorn against independent references: plain (non-log) Sinkhorn, exact assignment on tiny inputs, the
//! closed-form 2-Wasserstein distance between Gaussians, and the blockwise path against the dense one.

use diem_metrics::{gaussian_w2_squared, MetricsError, Sinkhorn, DIVERGENCE_FLOOR};
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Double, Device::Cpu);

fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let n = t.size()[0];
    (0..n).map(|i| Vec::<f64>::try_from(&t.get(i)).unwrap()).collect()
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Textbook Sinkhorn with scalings u, v and kernel exp(−M/λ), in plain f64 loops.
fn plain_sinkhorn(u: &[Vec<f64>], v: &[Vec<f64>], lambda: f64, iters: usize) -> f64 {
    let (n, m) = (u.len(), v.len());
    let cost: Vec<Vec<f64>> = u.iter().map(|a| v.iter().map(|b| sq_dist(a, b)).collect()).collect();
    let k: Vec<Vec<f64>> = cost.iter().map(|r| r.iter().map(|c| (-c / lambda).exp()).collect()).collect();
    let (mut a, mut b) = (vec![1.0; n], vec![1.0; m]);
    for _ in 0..iters {
        for j in 0..m {
            b[j] = (1.0 / m as f64) / (0..n).map(|i| k[i][j] * a[i]).sum::<f64>();
        }
        for i in 0..n {
            a[i] = (1.0 / n as f64) / (0..m).map(|j| k[i][j] * b[j]).sum::<f64>();
        }
    }
    (0..n).flat_map(|i| (0..m).map(move |j| (i, j))).map(|(i, j)| a[i] * k[i][j] * b[j] * cost[i][j]).sum()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for pos in 0..=p.len() {
            let mut q = p.clone();
            q.insert(pos, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn log_domain_equals_plain_sinkhorn_on_small_inputs() {
    tch::manual_seed(1);
    let u = Tensor::randn([6, 3], CPU);
    let v = Tensor::randn([7, 3], CPU) + 0.5;
    let lambda = 0.7;
    let solver = Sinkhorn { lambda, max_iter: 5000, tol: 1e-13, check_every: 1, ..Sinkhorn::default() };
    let ours = solver.ot(&u, &v).unwrap();
    let reference = plain_sinkhorn(&to_rows(&u), &to_rows(&v), lambda, 5000);
    assert!(ours.converged, "{ours:?}");
    assert!((ours.cost - reference).abs() < 1e-9 * reference.abs().max(1.0), "{} vs {reference}", ours.cost);
}

#[test]
fn small_regularization_reaches_the_exact_assignment_cost() {
    tch::manual_seed(2);
    let n = 5;
    let u = Tensor::randn([n, 2], CPU);
    let v = Tensor::randn([n, 2], CPU);
    let (ur, vr) = (to_rows(&u), to_rows(&v));
    let exact = permutations(n as usize)
        .iter()
        .map(|p| p.iter().enumerate().map(|(i, &j)| sq_dist(&ur[i], &vr[j])).sum::<f64>() / n as f64)
        .fold(f64::INFINITY, f64::min);
    // At small λ Sinkhorn contracts slowly: ask for a moderate marginal accuracy, not 1e-9.
    let report =
        Sinkhorn { lambda: 1e-2, max_iter: 20_000, tol: 1e-4, ..Sinkhorn::default() }.ot(&u, &v).unwrap();
    assert!(report.converged, "{report:?}");
    assert!((report.cost - exact).abs() < 1e-2 * exact, "entropic {} vs exact {exact}", report.cost);
}

/// Deterministic "samples" of N(m, s²) at the quantiles (i + ½)/n: an empirical measure close to the Gaussian.
fn gaussian_quantiles(n: i64, m: f64, s: f64) -> Tensor {
    let p = (Tensor::arange(n, CPU) + 0.5) / n as f64;
    ((p * 2.0 - 1.0).erfinv() * (2f64.sqrt() * s) + m).unsqueeze(1)
}

#[test]
fn debiased_divergence_approaches_gaussian_w2_at_small_regularization() {
    let (m1, s1, m2, s2) = (0.0, 1.0, 1.0, 2.0);
    let a = gaussian_quantiles(300, m1, s1);
    let b = gaussian_quantiles(300, m2, s2);
    let closed = gaussian_w2_squared(
        &Tensor::from_slice(&[m1]),
        &Tensor::from_slice(&[s1 * s1]).reshape([1, 1]),
        &Tensor::from_slice(&[m2]),
        &Tensor::from_slice(&[s2 * s2]).reshape([1, 1]),
    )
    .unwrap();
    assert!((closed - 2.0).abs() < 1e-12, "W2² of N(0,1), N(1,4) is 1 + 1 = 2, got {closed}");
    let solver = Sinkhorn { lambda: 1e-2, max_iter: 20_000, tol: 1e-6, ..Sinkhorn::default() };
    let div = solver.divergence(&a, &b).unwrap();
    assert!((div - closed).abs() < 0.03 * closed, "Sinkhorn divergence {div} vs W2² {closed}");
}

#[test]
fn gaussian_w2_matches_commuting_closed_form() {
    // Diagonal covariances commute: W2² = |Δm|² + Σ (√a_i − √b_i)².
    let m1 = Tensor::from_slice(&[1.0, -2.0, 0.5]);
    let m2 = Tensor::from_slice(&[0.0, 1.0, 0.5]);
    let a = [4.0f64, 1.0, 0.25];
    let b = [1.0f64, 9.0, 0.25];
    let w = gaussian_w2_squared(&m1, &Tensor::from_slice(&a).diag(0), &m2, &Tensor::from_slice(&b).diag(0))
        .unwrap();
    let expected = 1.0 + 9.0 + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    assert!((w - expected).abs() < 1e-10, "{w} vs {expected}");
    // Same covariance, any SPD: only the mean term remains.
    let q = Tensor::randn([3, 3], CPU);
    let s = q.matmul(&q.tr()) + Tensor::eye(3, CPU);
    let w = gaussian_w2_squared(&m1, &s, &m2, &s).unwrap();
    assert!((w - 10.0).abs() < 1e-8, "{w}");
}

#[test]
fn two_sample_divergence_separates_same_and_different_distributions() {
    tch::manual_seed(3);
    let n = 200;
    let truth_a = Tensor::randn([n, 2], CPU);
    let truth_b = Tensor::randn([n, 2], CPU);
    let same = Tensor::randn([n, 2], CPU);
    let shifted = Tensor::randn([n, 2], CPU) * 1.3 + 0.5;
    // λ = 0.05 converges in a few hundred iterations at this size (λ = 1e-3 would need far more).
    let solver = Sinkhorn { lambda: 0.05, ..Sinkhorn::default() };
    let s_same = solver.two_sample_divergence(&truth_a, &truth_b, &same).unwrap();
    let s_shift = solver.two_sample_divergence(&truth_a, &truth_b, &shifted).unwrap();
    assert!(s_same >= DIVERGENCE_FLOOR);
    assert!(s_shift > 0.3, "a shifted, wider set must be far: {s_shift}");
    assert!(s_same < 0.1 * s_shift, "same distribution {s_same} vs shifted {s_shift}");
    // OT of a set with itself is far below OT between different sets.
    let self_cost = solver.ot(&truth_a, &truth_a).unwrap().cost;
    let cross_cost = solver.ot(&truth_a, &shifted).unwrap().cost;
    assert!(self_cost < 0.05 * cross_cost, "{self_cost} vs {cross_cost}");
}

#[test]
fn blockwise_path_equals_dense_path() {
    tch::manual_seed(4);
    let u = Tensor::randn([300, 3], CPU);
    let v = Tensor::randn([257, 3], CPU) * 0.8;
    let dense = Sinkhorn { lambda: 0.05, ..Sinkhorn::default() };
    // 8 KiB blocks: 1024 f64 entries, far below 300 × 257, forcing recomputation in many blocks.
    let blocked = Sinkhorn { max_block_bytes: 8 << 10, ..dense };
    let a = dense.ot(&u, &v).unwrap();
    let b = blocked.ot(&u, &v).unwrap();
    assert_eq!(a.iterations, b.iterations);
    assert!((a.cost - b.cost).abs() < 1e-10 * a.cost, "{a:?} vs {b:?}");
}

#[test]
fn single_precision_agrees_with_double() {
    tch::manual_seed(5);
    let u = Tensor::randn([128, 5], (Kind::Float, Device::Cpu));
    let v = Tensor::randn([128, 5], (Kind::Float, Device::Cpu)) + 0.3;
    let d = Sinkhorn::default().ot(&u, &v).unwrap().cost;
    let f = Sinkhorn { kind: Kind::Float, ..Sinkhorn::default() }.ot(&u, &v).unwrap().cost;
    assert!((d - f).abs() < 1e-3 * d, "{d} vs {f}");
}

#[test]
fn invalid_inputs_are_errors() {
    let u = Tensor::randn([4, 2], CPU);
    let v3 = Tensor::randn([4, 3], CPU);
    let solver = Sinkhorn::default();
    assert!(matches!(solver.ot(&u, &v3), Err(MetricsError::Shape { .. })));
    assert!(matches!(solver.ot(&u.flatten(0, -1), &u), Err(MetricsError::Shape { .. })));
    let nan = Tensor::from_slice(&[f64::NAN, 0.0, 1.0, 2.0]).reshape([2, 2]);
    assert!(matches!(solver.ot(&u, &nan), Err(MetricsError::NonFinite { .. })));
    let bad = Sinkhorn { lambda: 0.0, ..solver };
    assert!(matches!(bad.ot(&u, &u), Err(MetricsError::Parameter { name: "lambda", .. })));
}

/// ε-scaling reaches the same fixed point as the plain iteration, and at the reference's λ = 1e-3 it
/// converges in far fewer iterations (the plain iteration needs thousands on spread-out points).
#[test]
fn epsilon_scaling_reaches_the_same_plan_in_fewer_iterations() {
    tch::manual_seed(4);
    let u = Tensor::randn([64, 3], CPU);
    let v = Tensor::randn([64, 3], CPU) * 1.5 + 0.5;
    let plain = Sinkhorn { lambda: 1e-3, max_iter: 20_000, tol: 1e-4, ..Sinkhorn::default() };
    let scaled = Sinkhorn { scaling: Some(0.8), ..plain };
    let (a, b) = (plain.ot(&u, &v).unwrap(), scaled.ot(&u, &v).unwrap());
    assert!(a.converged && b.converged, "{a:?} {b:?}");
    assert!((a.cost - b.cost).abs() < 1e-3 * a.cost, "{} vs {}", a.cost, b.cost);
    assert!(b.iterations * 4 < a.iterations, "scaled {} vs plain {} iterations", b.iterations, a.iterations);

    // The reference's settings: 1,024 iterations are not enough without scaling, and plenty with it.
    let reference = Sinkhorn { lambda: 1e-3, max_iter: 1024, ..Sinkhorn::default() };
    let scaled = Sinkhorn { scaling: Some(0.8), ..reference };
    let (c, d) = (reference.ot(&u, &v).unwrap(), scaled.ot(&u, &v).unwrap());
    assert!(!c.converged, "the plain iteration converged at λ = 1e-3: {c:?}");
    assert!(d.converged, "{d:?}");
    assert!((d.cost - a.cost).abs() < 5e-3 * a.cost, "{} vs the tight solution {}", d.cost, a.cost);
    assert!(Sinkhorn { scaling: Some(1.0), ..reference }.ot(&u, &v).is_err());
}

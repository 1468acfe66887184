//! The mixture denoiser against an independent f64 Bayes computation and autograd Tweedie
//! (docs/method.md §10.2, §12.1 item 8).

use diem_models::{tweedie_covariance, vjp, Denoiser, MixtureDenoiser};
use ndarray::{Array1, Array2};
use tch::{Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

fn to_array2(t: &Tensor) -> Array2<f64> {
    let (r, c) = t.size2().unwrap();
    Array2::from_shape_vec((r as usize, c as usize), Vec::<f64>::try_from(t.flatten(0, -1)).unwrap()).unwrap()
}

/// Bayes' formula term by term: full Gaussian log-likelihoods, normalized weights, per-component posterior
/// means.
fn bayes_mean(centres: &Array2<f64>, s: f64, x: &Array1<f64>, sigma: f64) -> Array1<f64> {
    let v = s * s + sigma * sigma;
    let d = x.len() as f64;
    let logl: Vec<f64> = centres
        .rows()
        .into_iter()
        .map(|mu| {
            let d2: f64 = mu.iter().zip(x).map(|(m, xi)| (xi - m).powi(2)).sum();
            -d2 / (2.0 * v) - 0.5 * d * (2.0 * std::f64::consts::PI * v).ln()
        })
        .collect();
    let m = logl.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logl.iter().map(|l| (l - m).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut out = Array1::zeros(x.len());
    for (wi, mu) in w.iter().zip(centres.rows()) {
        let post = (&mu.to_owned() * (sigma * sigma) + x * (s * s)) / v;
        out = out + post * (wi / total);
    }
    out
}

#[test]
fn mixture_mean_matches_bayes_formula() {
    tch::manual_seed(0);
    let centres = Tensor::rand([16, 3], OPTS) * 4.0 - 2.0;
    let s = 0.1;
    let den = MixtureDenoiser::new(centres.shallow_clone(), s).unwrap();
    let c = to_array2(&centres);
    let sig = [0.01f64, 0.1, 0.5, 2.0, 30.0];
    let x_t = Tensor::rand([sig.len() as i64, 3], OPTS) * 4.0 - 2.0;
    let out = to_array2(&den.denoise(&x_t, &Tensor::from_slice(&sig)));
    let xs = to_array2(&x_t);
    for (i, &sg) in sig.iter().enumerate() {
        let want = bayes_mean(&c, s, &xs.row(i).to_owned(), sg);
        for j in 0..3 {
            assert!((out[[i, j]] - want[j]).abs() < 1e-10, "σ = {sg}: {} vs {}", out[[i, j]], want[j]);
        }
    }
    // The prior mean is the centres' average.
    let pm = den.prior_mean().unwrap();
    assert!((pm - centres.mean_dim(0, false, Kind::Double)).abs().max().double_value(&[]) < 1e-14);
}

#[test]
fn mixture_moments_match_autograd_tweedie() {
    tch::manual_seed(1);
    let centres = Tensor::rand([32, 3], OPTS) * 4.0 - 2.0;
    let den = MixtureDenoiser::new(centres, 0.05).unwrap();
    let sig = [0.03f64, 0.3, 1.0, 5.0];
    let sigma = Tensor::from_slice(&sig);
    let x_t = Tensor::rand([4, 3], OPTS) * 4.0 - 2.0;
    // E[x | x_t] = x_t + σ² ∇ ln p(x_t).
    let x = x_t.detach().set_requires_grad(true);
    let lp = den.log_prob(&x, &sigma);
    let grad = vjp(&lp, &x, &lp.ones_like(), false).unwrap();
    let tweedie_mean = &x_t + grad * sigma.square().unsqueeze(1);
    let mean = den.denoise(&x_t, &sigma);
    assert!((tweedie_mean - &mean).abs().max().double_value(&[]) < 1e-10);
    // Cov[x | x_t] = σ² J equals the closed form.
    let closed = den.covariance(&x_t, &sigma);
    let auto = tweedie_covariance(&den, &x_t, &sigma).unwrap();
    let err = (&closed - auto).abs().max().double_value(&[]);
    assert!(err < 1e-10, "covariance error {err}");
    // And it is a covariance: symmetric with non-negative eigenvalues.
    assert!((&closed - closed.transpose(1, 2)).abs().max().double_value(&[]) < 1e-14);
    let eig = closed.linalg_eigvalsh("L");
    assert!(eig.min().double_value(&[]) > 0.0);
}

#[test]
fn mixture_rejects_bad_arguments() {
    assert!(MixtureDenoiser::new(Tensor::zeros([4], OPTS), 0.1).is_err());
    assert!(MixtureDenoiser::new(Tensor::zeros([4, 2], OPTS), 0.0).is_err());
}

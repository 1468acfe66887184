//! EDM preconditioning (docs/method.md §3.1, §12.1 item 3) and the DSM loss (docs/method.md §3.3).

use diem_models::{
    c_in, c_noise, c_out, c_skip, loss_weight, Denoiser, EdmDenoiser, Mlp, MlpConfig, NoiseConditionalNet,
    SineEmbedding,
};
use proptest::prelude::*;
use tch::{nn, Device, Kind, Tensor};

fn mlp_denoiser(vs: &nn::VarStore, features: i64) -> EdmDenoiser<Mlp> {
    let cfg = MlpConfig { features, hidden: vec![32, 32], embedding_features: 16 };
    EdmDenoiser::new(Mlp::new(&vs.root(), &cfg).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn preconditioning_identities(log_sigma in -9.0f64..7.0) {
        let s = log_sigma.exp();
        prop_assert!((loss_weight(s) * c_out(s).powi(2) - 1.0).abs() < 1e-12);
        prop_assert!((c_out(s).powi(2) + c_skip(s) - 1.0).abs() < 1e-12);
        prop_assert!((c_in(s).powi(2) - c_skip(s)).abs() < 1e-12 * c_skip(s).max(1e-300) + 1e-300);
        prop_assert!((c_noise(s) - log_sigma).abs() < 1e-12);
    }
}

#[test]
fn embedding_frequencies_run_from_one_to_1e_minus_4() {
    for e in [4, 64, 256] {
        let w = SineEmbedding::new(e).unwrap().frequencies();
        assert_eq!(w[0], 1.0);
        assert_eq!(*w.last().unwrap(), 1e-4);
        assert!(w.windows(2).all(|p| p[1] < p[0]));
    }
}

/// `d_θ(x, σ) → x` as σ → 0, at rate O(σ), for a randomly initialized (bounded) network.
#[test]
fn denoiser_tends_to_identity_as_sigma_vanishes() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = mlp_denoiser(&vs, 3);
    let x = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
    let mut prev = f64::INFINITY;
    for s in [1.0, 1e-2, 1e-4, 1e-6] {
        let sigma = Tensor::full([16], s, (Kind::Float, Device::Cpu));
        let err = tch::no_grad(|| (d.denoise(&x, &sigma) - &x).abs().max().double_value(&[]));
        assert!(err < prev, "error {err} at σ = {s} did not decrease");
        assert!(err < 20.0 * s.max(1e-6), "error {err} at σ = {s}");
        prev = err;
    }
    assert!(prev < 1e-4);
}

/// The preconditioned output, computed by hand from the network, and the loss equal to the unweighted MSE
/// between F_θ and `(x − c_skip x_t)/c_out` (docs/method.md §3.3).
#[test]
fn forward_and_loss_match_their_definitions() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = mlp_denoiser(&vs, 4);
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([5, 4], opts);
    let z = Tensor::randn([5, 4], opts);
    let sig = [0.002f64, 0.1, 1.0, 7.0, 80.0];
    let sigma = Tensor::from_slice(&sig).to_kind(Kind::Float);
    let x_t = &x + sigma.unsqueeze(1) * &z;
    let emb = SineEmbedding::new(16).unwrap().forward(&sigma.log());

    let mut mse = 0.0;
    for (b, &s) in sig.iter().enumerate() {
        let b = b as i64;
        let xt_b = x_t.get(b).unsqueeze(0);
        let f = tch::no_grad(|| d.net().forward_t(&(&xt_b * c_in(s)), &emb.get(b).unsqueeze(0), false));
        let want = &xt_b * c_skip(s) + &f * c_out(s);
        let got = tch::no_grad(|| d.denoise(&xt_b, &Tensor::from_slice(&[s as f32])));
        assert!((got - &want).abs().max().double_value(&[]) < 1e-5 * (1.0 + s));
        let target = (x.get(b).unsqueeze(0) - &xt_b * c_skip(s)) / c_out(s);
        mse += (f - target).square().mean(Kind::Double).double_value(&[]) / sig.len() as f64;
    }
    let loss = d.loss(&x, &sigma, &z, false).unwrap().double_value(&[]);
    assert!((loss - mse).abs() < 1e-4 * mse, "loss {loss} vs unweighted F-MSE {mse}");
    assert!(d.loss(&x, &sigma.narrow(0, 0, 4), &z, false).is_err());
    assert!(d.loss(&x, &sigma, &z.narrow(0, 0, 4), false).is_err());
}

/// Each sample is denoised at its own σ: a batch equals its samples one by one.
#[test]
fn per_sample_sigma_is_batch_independent() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = mlp_denoiser(&vs, 2);
    let x = Tensor::randn([3, 2], (Kind::Float, Device::Cpu));
    let sigma = Tensor::from_slice(&[0.1f32, 1.0, 10.0]);
    let all = tch::no_grad(|| d.denoise(&x, &sigma));
    for b in 0..3 {
        let one = tch::no_grad(|| d.denoise(&x.narrow(0, b, 1), &sigma.narrow(0, b, 1)));
        assert!((one - all.narrow(0, b, 1)).abs().max().double_value(&[]) < 1e-6);
    }
    // A scalar σ is shared by the batch.
    let shared = tch::no_grad(|| d.denoise(&x, &Tensor::from(1.0f32)));
    assert!((shared.get(1) - all.get(1)).abs().max().double_value(&[]) < 1e-6);
}

/// The batched set loss equals the loss of the whole set at once, whatever the batch size.
#[test]
fn mean_loss_is_the_whole_set_loss_in_any_batching() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = mlp_denoiser(&vs, 3);
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([10, 3], opts);
    let z = Tensor::randn([10, 3], opts);
    let sigma = Tensor::logspace(-2.0, 1.0, 10, 10.0, opts);
    let whole = tch::no_grad(|| d.loss(&x, &sigma, &z, false).unwrap().double_value(&[]));
    for batch in [1, 3, 10, 64] {
        let m = d.mean_loss(&x, &sigma, &z, batch, Device::Cpu).unwrap();
        assert!((m - whole).abs() < 1e-5 * whole, "batch {batch}: {m} vs {whole}");
    }
    assert!(d.mean_loss(&x.narrow(0, 0, 0), &sigma, &z, 4, Device::Cpu).is_err());
}

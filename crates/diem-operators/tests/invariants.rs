//! Closed-form invariants of the operators and generators (docs/method.md §12.1 items 2 and 15, §9b–§9d).

mod common;

use common::{make_op, randn, rel_diff, KINDS};
use diem_operators::downsample::{cubic, resample_matrix};
use diem_operators::kspace::line_mask_params;
use diem_operators::testing::batch_dot;
use diem_operators::{
    Blur, Boundary, Downsample, KSpace, LinearOperator, Mask, NoiseCov, Observation, Projection, Resample,
};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Full mask: ‖A x‖ = ‖x‖ and AᵀA x = x; partial mask: 0 ≤ ⟨AᵀA x, x⟩ ≤ ⟨x, x⟩ and AᵀA symmetric.
    #[test]
    fn kspace_isometry_and_contraction(n in 1i64..4, c in 1i64..3, h in 3i64..12, w in 3i64..12, r in 1.0f64..8.0, seed in any::<u64>()) {
        tch::manual_seed(seed as i64);
        let shape = [c, h, w];
        let full = KSpace::full(&shape).unwrap();
        let x = randn(n, &shape, Kind::Double);
        let ax = full.apply(&x);
        let gap = (batch_dot(&ax, &ax) - batch_dot(&x, &x)).abs().max().double_value(&[]);
        prop_assert!(gap < 1e-10 * batch_dot(&x, &x).max().double_value(&[]));
        prop_assert!(rel_diff(&full.gram(&x), &x) < 1e-12);

        let part = KSpace::random_lines(n, &shape, r, seed).unwrap();
        let z = randn(n, &shape, Kind::Double);
        let gx = part.gram(&x);
        let q = batch_dot(&gx, &x);
        let xx = batch_dot(&x, &x);
        prop_assert!(q.ge(-1e-12).all().int64_value(&[]) == 1);
        prop_assert!((&q - &xx * (1.0 + 1e-12)).le(0.0).all().int64_value(&[]) == 1);
        let sym = (batch_dot(&gx, &z) - batch_dot(&x, &part.gram(&z))).abs().max().double_value(&[]);
        prop_assert!(sym < 1e-10 * xx.max().double_value(&[]));
    }

    /// Binary masks are idempotent: A(A x) = A x.
    #[test]
    fn mask_idempotent(which in prop::sample::select(vec![1usize, 2]), n in 1i64..4, c in 1i64..4, h in 2i64..8, w in 2i64..8, seed in any::<u64>()) {
        let op = make_op(which, n, c, 2 * h, 2 * w, seed);
        let x = randn(n, &op.x_shape(), Kind::Float);
        let once = op.apply(&x);
        prop_assert!(rel_diff(&op.apply(&once), &once) == 0.0);
        prop_assert!(rel_diff(&op.adjoint(&x), &once) == 0.0);
    }

    /// The same seed gives the same operator (parameters equal bit for bit).
    #[test]
    fn seeded_generators_reproduce(which in 0..KINDS, seed in any::<u64>()) {
        tch::manual_seed(7);
        let a = make_op(which, 2, 2, 8, 8, seed);
        tch::manual_seed(7);
        let b = make_op(which, 2, 2, 8, 8, seed);
        for ((na, ta), (nb, tb)) in a.params().iter().zip(b.params().iter()) {
            prop_assert_eq!(na, nb);
            prop_assert!(ta.equal(tb), "{} differs for the same seed", na);
        }
    }
}

#[test]
fn random_pixel_deletion_rate_within_three_sigma() {
    for (rho, seed) in [(0.25, 0u64), (0.5, 1), (0.75, 2)] {
        let (n, h, w) = (64i64, 32i64, 32i64);
        let m = Mask::random_pixels(n, &[3, h, w], rho, seed).unwrap();
        assert_eq!(m.mask().size(), [n, 1, h, w], "one mask per pixel, shared by channels");
        let count = (n * h * w) as f64;
        let sd = (rho * (1.0 - rho) / count).sqrt();
        let rate = m.deleted_fraction();
        assert!((rate - rho).abs() < 3.0 * sd, "ρ = {rho}: deleted fraction {rate} (3σ = {})", 3.0 * sd);
    }
    // The channels of a pixel are deleted together.
    let m = Mask::random_pixels(2, &[3, 8, 8], 0.5, 9).unwrap();
    let y = m.apply(&Tensor::ones([2, 3, 8, 8], (Kind::Float, Device::Cpu)));
    assert!(y.narrow(1, 0, 1).equal(&y.narrow(1, 2, 1)));
}

#[test]
fn ffhq_random_mask_deletes_exactly_64225_pixels() {
    let m = Mask::exact_deletions(2, &[3, 256, 256], 64_225, 0).unwrap();
    let deleted = m.mask().eq(0.0).sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Int64);
    assert_eq!(Vec::<i64>::try_from(&deleted).unwrap(), vec![64_225, 64_225]);
    assert!(!m.mask().get(0).equal(&m.mask().get(1)), "samples get different masks");
}

#[test]
fn box_mask_position_and_size() {
    let m = Mask::random_box(16, &[3, 256, 256], (128, 128), (16, 16), 3).unwrap();
    for b in 0..16 {
        let hole = m.mask().get(b).get(0).eq(0.0);
        let rows = hole.any_dim(1, false).nonzero().squeeze_dim(1);
        let cols = hole.any_dim(0, false).nonzero().squeeze_dim(1);
        assert_eq!(rows.size()[0], 128);
        assert_eq!(cols.size()[0], 128);
        let (top, left) = (rows.int64_value(&[0]), cols.int64_value(&[0]));
        assert!((16..112).contains(&top) && (16..112).contains(&left), "corner ({top}, {left})");
        assert_eq!(hole.sum(Kind::Int64).int64_value(&[]), 128 * 128);
    }
    assert!(Mask::random_box(1, &[3, 32, 32], (20, 20), (8, 8), 0).is_err(), "box that does not fit");
}

#[test]
fn mri_mask_centre_band_and_rate() {
    // docs/method.md §9c: R = 6 at W = 320 keeps p = 1/9 and 20 centre columns [150, 170).
    let (p, c) = line_mask_params(6.0, 320);
    assert!((p - 1.0 / 9.0).abs() < 1e-15);
    assert_eq!(c, 10);
    assert_eq!(line_mask_params(4.0, 320).1, 15);
    for r in [2.0, 4.0, 6.0, 8.0] {
        let (n, w) = (400i64, 320i64);
        let op = KSpace::random_lines(n, &[1, 4, w], r, 11).unwrap();
        let m = op.mask();
        let (_, c) = line_mask_params(r, w);
        let band = m.narrow(1, w / 2 - c, 2 * c);
        assert_eq!(band.min().double_value(&[]), 1.0, "R = {r}: centre band always kept");
        let kept = m.mean(Kind::Double).double_value(&[]);
        // Expected fraction 1/R exactly when 60/R is an integer; SD of the binomial part.
        let expected = p_expected(r, w);
        let sd = (line_mask_params(r, w).0 * (1.0 - line_mask_params(r, w).0) / (n * w) as f64).sqrt();
        assert!((kept - expected).abs() < 4.0 * sd, "R = {r}: kept {kept}, expected {expected}");
        if (60.0 / r).fract() == 0.0 {
            assert!((expected - 1.0 / r).abs() < 1e-12);
        }
    }
    assert!(KSpace::random_lines(1, &[1, 8, 8], 0.5, 0).is_err());
}

fn p_expected(r: f64, w: i64) -> f64 {
    let (p, c) = line_mask_params(r, w);
    let band = (2 * c) as f64 / w as f64;
    band + (1.0 - band) * p
}

#[test]
fn kspace_matches_numpy_convention() {
    // A centred impulse maps to a flat spectrum 1/sqrt(HW) (real), DC at index (H/2, W/2) for a constant.
    let (h, w) = (6i64, 8i64);
    let op = KSpace::full(&[1, h, w]).unwrap();
    let x = Tensor::ones([1, 1, h, w], (Kind::Double, Device::Cpu));
    let y = op.apply(&x);
    let re = y.get(0).get(0);
    assert!((re.double_value(&[h / 2, w / 2]) - ((h * w) as f64).sqrt()).abs() < 1e-12);
    assert!((re.abs().sum(Kind::Double).double_value(&[]) - ((h * w) as f64).sqrt()).abs() < 1e-12);
    let delta = Tensor::zeros([1, 1, h, w], (Kind::Double, Device::Cpu));
    let _ = delta.get(0).get(0).get(h / 2).get(w / 2).fill_(1.0);
    let k = op.apply(&delta);
    let expect = 1.0 / ((h * w) as f64).sqrt();
    assert!((k.narrow(1, 0, 1) - expect).abs().max().double_value(&[]) < 1e-12);
    assert!(k.narrow(1, 1, 1).abs().max().double_value(&[]) < 1e-12);
}

#[test]
fn blur_reflect_matches_torch_reflection_pad_and_direct_sum() {
    tch::manual_seed(0);
    let (c, h, w, k) = (2i64, 9i64, 7i64, 5i64);
    let kernels = Tensor::rand([2, k, k], (Kind::Double, Device::Cpu));
    let op = Blur::new(kernels.shallow_clone(), &[c, h, w], Boundary::Reflect).unwrap();
    let x = randn(2, &[c, h, w], Kind::Double);
    let y = op.apply(&x);
    let xp = x.reflection_pad2d([2, 2, 2, 2]);
    for b in 0..2 {
        for (i, j) in [(0i64, 0i64), (4, 3), (8, 6), (1, 5)] {
            let patch = xp.get(b).get(1).narrow(0, i, k).narrow(1, j, k);
            let direct = (patch * kernels.get(b)).sum(Kind::Double).double_value(&[]);
            assert!((direct - y.double_value(&[b, 1, i, j])).abs() < 1e-12);
        }
    }
    // The fold-back adjoint of the reflect pad equals autograd through torch's own reflection pad.
    let g = randn(2, &[c, h + 4, w + 4], Kind::Double);
    let xr = x.detach().set_requires_grad(true);
    let loss = (xr.reflection_pad2d([2, 2, 2, 2]) * &g).sum(Kind::Double);
    let torch_adj = Tensor::run_backward(&[loss], &[&xr], false, false).remove(0);
    let ours = diem_operators::padding::Boundary::Reflect.source_indices(h, 2).unwrap();
    assert_eq!(ours, vec![2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 7, 6]);
    let w_idx = Tensor::from_slice(&Boundary::Reflect.source_indices(w, 2).unwrap());
    let h_idx = Tensor::from_slice(&ours);
    let fold = Tensor::zeros([2, c, h, w + 4], (Kind::Double, Device::Cpu)).index_add(2, &h_idx, &g);
    let fold = Tensor::zeros([2, c, h, w], (Kind::Double, Device::Cpu)).index_add(3, &w_idx, &fold);
    assert!(rel_diff(&fold, &torch_adj) < 1e-14);
    // Kernels must fit the reflect boundary: padding ≤ n − 1.
    assert!(Blur::new(Tensor::ones([1, 9, 9], (Kind::Float, Device::Cpu)), &[1, 4, 4], Boundary::Reflect)
        .is_err());
    assert!(
        Blur::new(Tensor::ones([1, 4, 3], (Kind::Float, Device::Cpu)), &[1, 8, 8], Boundary::Zero).is_err()
    );
}

#[test]
fn kernels_are_normalized_and_centred() {
    let g = Blur::gaussian(&[1, 64, 64], 61, 3.0, Boundary::Reflect).unwrap();
    assert!((g.kernels().sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-5);
    let m = Blur::random_motion(4, &[3, 256, 256], 61, 0.5, Boundary::Reflect, 5).unwrap();
    let sums = m.kernels().sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double);
    assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
    assert!(m.kernels().min().double_value(&[]) >= 0.0);
    // A motion kernel is spread out: its peak holds well under the whole mass.
    assert!(m.kernels().max().double_value(&[]) < 0.5);
    // A constant image stays constant under a normalized blur with a reflecting boundary.
    let x = Tensor::full([4, 3, 256, 256], 0.7, (Kind::Float, Device::Cpu));
    assert!((m.apply(&x) - 0.7).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn bicubic_resizer_closed_form() {
    assert_eq!(cubic(0.0), 1.0);
    assert_eq!(cubic(1.0), 0.0);
    assert_eq!(cubic(2.0), 0.0);
    assert!((cubic(0.5) - 0.5625).abs() < 1e-15);
    assert!((cubic(1.5) + 0.0625).abs() < 1e-15);
    let m = resample_matrix(256, 4, Resample::Bicubic);
    for j in 0..64 {
        let row = &m[j * 256..(j + 1) * 256];
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Interior rows: weights s·cubic(s(u_j − i)) with u_j = 4j − 1.5 (1-based j, i), before normalizing.
        if (4..60).contains(&j) {
            let jj = (j + 1) as f64;
            let u = 4.0 * jj - 1.5;
            let raw: Vec<f64> = (1..=256).map(|i| 0.25 * cubic(0.25 * (u - i as f64))).collect();
            let total: f64 = raw.iter().sum();
            for i in 0..256 {
                assert!((row[i] - raw[i] / total).abs() < 1e-12);
            }
        }
    }
    // Boundary row 0 mirrors (edge repeated): u_1 = 2.5 reaches 1-based pixels down to −5.
    let u = 2.5;
    let mut expect = vec![0.0; 256];
    let fov: Vec<i64> = (-6..12).collect();
    let raw: Vec<f64> = fov.iter().map(|&i| 0.25 * cubic(0.25 * (u - i as f64 - 1.0))).collect();
    let total: f64 = raw.iter().sum();
    for (&i, r) in fov.iter().zip(&raw) {
        let src = if i < 0 { -i - 1 } else { i };
        expect[src as usize] += r / total;
    }
    for i in 0..256 {
        assert!((m[i] - expect[i]).abs() < 1e-12);
    }
    // A constant image stays constant; the output shape is [C, 64, 64].
    let op = Downsample::bicubic(&[3, 256, 256], 4).unwrap();
    assert_eq!(op.y_shape(), [3, 64, 64]);
    let y = op.apply(&Tensor::full([1, 3, 256, 256], -0.3, (Kind::Double, Device::Cpu)));
    assert!((y + 0.3).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn average_pooling_matches_torch() {
    let op = Downsample::average(&[2, 8, 12], 4).unwrap();
    let x = randn(3, &[2, 8, 12], Kind::Double);
    let y = op.apply(&x);
    let expect = x.avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>);
    assert!(rel_diff(&y, &expect) < 1e-12);
    // Adjoint: nearest up-sampling divided by k².
    let u = randn(3, &[2, 2, 3], Kind::Double);
    let up =
        u.repeat_interleave_self_int(4, 2, None::<i64>).repeat_interleave_self_int(4, 3, None::<i64>) / 16.0;
    assert!(rel_diff(&op.adjoint(&u), &up) < 1e-12);
    assert!(Downsample::average(&[2, 8, 12], 3).is_err(), "3 does not divide 8");
}

#[test]
fn projection_rows_on_unit_sphere() {
    let p = Projection::random_sphere(100, 2, 5, 0).unwrap();
    let norms =
        p.matrix().to_kind(Kind::Double).square().sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-6);
    // Isotropy: the mean of the rows is near 0 (200 rows, coordinates of variance 1/5).
    let mean = p.matrix().to_kind(Kind::Double).mean_dim([0i64, 1].as_slice(), false, Kind::Double);
    assert!(mean.abs().max().double_value(&[]) < 4.0 * (0.2f64 / 200.0).sqrt());
}

#[test]
fn simulate_adds_noise_on_every_entry() {
    tch::manual_seed(0);
    let x = randn(64, &[3, 16, 16], Kind::Double);
    let op = Mask::random_pixels(64, &[3, 16, 16], 0.75, 1).unwrap();
    let mask = op.mask().shallow_clone();
    let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.1).unwrap(), 2).unwrap();
    // On deleted pixels y is pure noise with standard deviation 0.1 (docs/method.md §1).
    let deleted = mask.eq(0.0).expand([64, 3, 16, 16], false);
    let noise = obs.y.masked_select(&deleted);
    let count = noise.size()[0] as f64;
    let sd = (noise.square().mean(Kind::Double).double_value(&[])).sqrt();
    assert!((sd - 0.1).abs() < 4.0 * 0.1 / (2.0 * count).sqrt(), "noise std {sd}");
    // Same seed, same observation; different seed, different noise.
    let again =
        Observation::simulate(&x, obs.operator.clone(), NoiseCov::isotropic(0.1).unwrap(), 2).unwrap();
    assert!(again.y.equal(&obs.y));
    let other =
        Observation::simulate(&x, obs.operator.clone(), NoiseCov::isotropic(0.1).unwrap(), 3).unwrap();
    assert!(!other.y.equal(&obs.y));
    // Diagonal noise scales entry-wise.
    let std = Tensor::full([1, 3, 16, 16], 0.5, (Kind::Double, Device::Cpu));
    let diag = Observation::simulate(&x, obs.operator.clone(), NoiseCov::diagonal(std).unwrap(), 2).unwrap();
    assert!(
        rel_diff(&(&diag.y - obs.operator.apply(&x)), &((&obs.y - obs.operator.apply(&x)) * 5.0)) < 1e-12
    );
    // Wrong input shape is an error, not a panic.
    assert!(Observation::simulate(
        &randn(2, &[3, 8, 8], Kind::Float),
        obs.operator.clone(),
        NoiseCov::isotropic(0.1).unwrap(),
        0
    )
    .is_err());
}

#[test]
fn select_and_narrow_chunk_a_data_set() {
    tch::manual_seed(0);
    let x = randn(6, &[1, 8, 8], Kind::Float);
    let op = KSpace::random_lines(6, &[1, 8, 8], 2.0, 4).unwrap();
    let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.01).unwrap(), 5).unwrap();
    let part = obs.select(&[4, 1]);
    assert_eq!(part.len(), 2);
    assert!(part.y.get(0).equal(&obs.y.get(4)));
    let full = obs.operator.apply(&x);
    assert!(part
        .operator
        .apply(&x.index_select(0, &Tensor::from_slice(&[4i64, 1])))
        .equal(&full.index_select(0, &Tensor::from_slice(&[4i64, 1]))));
    let chunk = obs.narrow(2, 3);
    assert_eq!(chunk.operator.batch(), 3);
    assert!(chunk.y.equal(&obs.y.narrow(0, 2, 3)));
}

#[test]
#[should_panic(expected = "must have shape")]
fn wrong_input_shape_panics_with_both_shapes() {
    let op = Mask::random_pixels(2, &[3, 8, 8], 0.5, 0).unwrap();
    let _ = op.apply(&Tensor::zeros([2, 3, 8, 9], (Kind::Float, Device::Cpu)));
}

#[test]
fn cuda_twin_matches_cpu() {
    if !tch::Cuda::is_available() {
        eprintln!("skipping cuda_twin_matches_cpu: CUDA is not available");
        return;
    }
    let dev = Device::Cuda(0);
    for which in 0..KINDS {
        let op = make_op(which, 2, 2, 8, 8, 3);
        let x = randn(2, &op.x_shape(), Kind::Double);
        let u = randn(2, &op.y_shape(), Kind::Double);
        let gpu = op.to_device(dev);
        assert!(rel_diff(&gpu.apply(&x.to_device(dev)).to_device(Device::Cpu), &op.apply(&x)) < 1e-10);
        assert!(rel_diff(&gpu.adjoint(&u.to_device(dev)).to_device(Device::Cpu), &op.adjoint(&u)) < 1e-10);
    }
}

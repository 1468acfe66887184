//! Normalization, the split, the k-space observations and `prepare.json` (docs/method.md §9c).

mod common;

use common::{python, write_volume};
use diem_fastmri::{
    images_file, make_fixture, normalize_volume, observations_file, prepare, Normalization, PrepareConfig,
    PrepareSummary, Split,
};
use diem_operators::{KSpace, LinearOperator, Observation};
use tch::{Device, Kind, Tensor};

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn normalization_maps_each_volume_max_to_2_or_its_range_to_minus_2_2() {
    tch::manual_seed(0);
    let v = Tensor::rand([5, 6, 6], (Kind::Float, Device::Cpu)) * 3e-4 + 1e-5;
    let x = normalize_volume(&v, Normalization::Max, "v.h5".as_ref()).unwrap();
    assert_eq!(x.max().double_value(&[]), 2.0);
    let want = v.to_kind(Kind::Double) / v.max().double_value(&[]) * 4.0 - 2.0;
    assert!(max_abs(&(x.to_kind(Kind::Double) - want)) < 1e-6);
    assert!(x.min().double_value(&[]) > -2.0);
    let x = normalize_volume(&v, Normalization::Minmax, "v.h5".as_ref()).unwrap();
    assert_eq!((x.min().double_value(&[]), x.max().double_value(&[])), (-2.0, 2.0));
    let err = normalize_volume(
        &Tensor::zeros([2, 4, 4], (Kind::Float, Device::Cpu)),
        Normalization::Max,
        "z.h5".as_ref(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("z.h5"), "{err}");
    assert!(normalize_volume(
        &Tensor::ones([2, 4, 4], (Kind::Float, Device::Cpu)),
        Normalization::Minmax,
        "o.h5".as_ref()
    )
    .is_err());
}

#[test]
fn prepare_normalizes_per_volume_and_simulates_noisy_kspace() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    make_fixture(&python(), &raw, 3, 44, 32, 1).unwrap();
    write_volume(&raw.join("singlecoil_train/short.h5"), 20, 32); // slices 10..=19 only
    let out = dir.path().join("prepared");
    let config = PrepareConfig { size_multiple: 8, seed: 3, ..PrepareConfig::default() };
    let s = prepare(&python(), &raw, &out, &config).unwrap();
    assert_eq!((s.volumes, s.train_volumes, s.val_volumes), (4, 3, 1));
    assert_eq!((s.train_slices, s.val_slices, s.size), (31 + 31 + 10, 31, 32));
    assert_eq!(s.short_volumes.len(), 1);
    assert_eq!((s.short_volumes[0].total_slices, s.short_volumes[0].kept), (20, 10));
    assert_eq!(PrepareSummary::load(&out).unwrap(), s);

    // Per-volume max normalization: every volume's kept slices peak at exactly 2 (file order:
    // file_000, file_001, short).
    let x = diem_em::read_npy(&out.join(images_file(Split::Train)), Device::Cpu).unwrap();
    assert_eq!(x.size(), [72, 1, 32, 32]);
    for (start, len) in [(0, 31), (31, 31), (62, 10)] {
        let vol = x.narrow(0, start, len);
        assert_eq!(vol.max().double_value(&[]), 2.0, "volume at {start}");
        assert!(vol.min().double_value(&[]) >= -2.0);
    }

    // y − A x is the noise: std 1e-2 on every entry, the masked ones included.
    let obs = Observation::load(out.join(observations_file(Split::Train)), Device::Cpu).unwrap();
    assert_eq!(obs.operator.kind(), "kspace");
    assert_eq!(obs.y.size(), [72, 2, 32, 32]);
    let noise = (&obs.y - obs.operator.apply(&x)).to_kind(Kind::Double);
    let mask = obs.operator.params().into_iter().find(|(n, _)| n == "mask").unwrap().1;
    let masked = mask.eq(0.0).view([72, 1, 1, 32]).expand([72, 2, 32, 32], false);
    let std_all = noise.std(true).double_value(&[]);
    let std_masked = noise.masked_select(&masked).std(true).double_value(&[]);
    let std_kept = noise.masked_select(&masked.logical_not()).std(true).double_value(&[]);
    for (what, sd) in [("all", std_all), ("masked", std_masked), ("kept", std_kept)] {
        assert!((sd - 1e-2).abs() < 5e-4, "{what}: noise std {sd}");
    }
    assert!(noise.mean(Kind::Double).double_value(&[]).abs() < 2e-4);
    // The centre band [W/2 − ⌈3W/(16R)⌉, W/2 + ⌈..⌉) = [15, 17) at W = 32, R = 6 is in every mask.
    assert_eq!(mask.narrow(1, 15, 2).min().double_value(&[]), 1.0);
    assert!((s.mean_kept_fraction - 1.0 / 6.0).abs() < 0.05, "{}", s.mean_kept_fraction);
    // Different masks per observation.
    assert!(!mask.get(0).equal(&mask.get(1)) || !mask.get(1).equal(&mask.get(2)));

    // The validation split has its own images and observations.
    let v = Observation::load(out.join(observations_file(Split::Val)), Device::Cpu).unwrap();
    assert_eq!(v.y.size(), [31, 2, 32, 32]);

    // Sizes the U-Net cannot take are refused, naming a file.
    let err =
        prepare(&python(), &raw, &dir.path().join("p2"), &PrepareConfig { size_multiple: 64, ..config })
            .unwrap_err();
    assert!(err.to_string().contains(".h5") && err.to_string().contains("64"), "{err}");
}

#[test]
fn kspace_gram_is_symmetric_contractive_and_idempotent_for_mirror_masks() {
    tch::manual_seed(2);
    let shape = [1i64, 16, 16];
    let x = Tensor::randn([4, 1, 16, 16], (Kind::Double, Device::Cpu));
    let z = Tensor::randn([4, 1, 16, 16], (Kind::Double, Device::Cpu));
    let op = KSpace::random_lines(4, &shape, 4.0, 9).unwrap();
    let gram = |v: &Tensor| op.adjoint(&op.apply(v));
    let dot = |a: &Tensor, b: &Tensor| (a * b).sum(Kind::Double).double_value(&[]);
    let (gx, gz) = (gram(&x), gram(&z));
    assert!((dot(&gx, &z) - dot(&x, &gz)).abs() < 1e-10);
    let q = dot(&x, &gx);
    assert!(q >= 0.0 && q <= dot(&x, &x) + 1e-10);
    // A column set symmetric about DC (index 8: columns 8 ± k, and the Nyquist column 0) gives a projection.
    let mut m = vec![0.0f64; 16];
    for c in [0usize, 8, 5, 11, 7, 9] {
        m[c] = 1.0;
    }
    let mirror =
        KSpace::new(Tensor::from_slice(&m).view([1, 16]).expand([4, 16], false).contiguous(), &shape)
            .unwrap();
    let g = |v: &Tensor| mirror.adjoint(&mirror.apply(v));
    let once = g(&x);
    assert!(max_abs(&(g(&once) - &once)) < 1e-10);
    assert!(max_abs(&(&once - &x)) > 0.1);
}

#[test]
fn mask_generator_keeps_one_column_in_r_at_the_real_width() {
    // W = 320: p = 200/(320R − 120) and the centre band [160 − ⌈60/R⌉, 160 + ⌈60/R⌉) forced (docs/method.md §9c).
    for (r, tol) in [(4.0, 0.002), (6.0, 0.002), (8.0, 0.005), (10.0, 0.005)] {
        let op = KSpace::random_lines(4096, &[1, 1, 320], r, 11).unwrap();
        let mask = op.mask();
        let mean = mask.mean(Kind::Double).double_value(&[]);
        assert!((mean - 1.0 / r).abs() < tol, "R = {r}: kept fraction {mean}");
        let c = (60.0f64 / r).ceil() as i64;
        assert_eq!(mask.narrow(1, 160 - c, 2 * c).min().double_value(&[]), 1.0, "R = {r}: centre band");
        let p = 200.0 / (320.0 * r - 120.0);
        let outside = mask.narrow(1, 0, 160 - c).mean(Kind::Double).double_value(&[]);
        assert!((outside - p).abs() < 0.003, "R = {r}: keep probability {outside} vs {p}");
    }
}

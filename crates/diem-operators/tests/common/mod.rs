//! Shared builders for the integration tests: one random operator of each kind at a given shape.

use diem_operators::{
    Blur, Boundary, Compose, Downsample, Identity, KSpace, LinearOperator, Mask, Projection, Stack,
};
use tch::{Device, Kind, Tensor};

/// Number of operator families built by [`make_op`].
pub const KINDS: usize = 13;

/// A random operator of family `which` with `n` parameter sets on samples `[c, h, w]` (`h`, `w` even, ≥ 4).
pub fn make_op(which: usize, n: i64, c: i64, h: i64, w: i64, seed: u64) -> Box<dyn LinearOperator> {
    let shape = [c, h, w];
    let boundaries = [Boundary::Zero, Boundary::Reflect, Boundary::Symmetric, Boundary::Circular];
    match which {
        0 => Box::new(Identity::new(&shape).unwrap()),
        1 => Box::new(Mask::random_pixels(n, &shape, 0.5, seed).unwrap()),
        2 => Box::new(Mask::random_box(n, &shape, (h / 2, w / 2), (0, 0), seed).unwrap()),
        3 => {
            let p = Projection::random_sphere(n, 3, c * h * w, seed).unwrap();
            Box::new(Projection::new(p.matrix().shallow_clone(), &shape).unwrap())
        }
        4 => Box::new(KSpace::random_lines(n, &shape, 4.0, seed).unwrap()),
        5 => Box::new(Blur::random_motion(n, &shape, 5, 0.5, boundaries[(seed % 4) as usize], seed).unwrap()),
        6 => Box::new(Blur::gaussian(&shape, 3, 1.0, boundaries[(seed % 4) as usize]).unwrap()),
        7 => Box::new(Downsample::average(&shape, 2).unwrap()),
        8 => Box::new(Downsample::bicubic(&shape, 2).unwrap()),
        9 => Box::new(
            Compose::new(vec![
                Box::new(Blur::random_motion(n, &shape, 3, 0.5, Boundary::Reflect, seed).unwrap()),
                Box::new(Downsample::bicubic(&shape, 2).unwrap()),
            ])
            .unwrap(),
        ),
        10 => Box::new(
            Stack::new(vec![
                Box::new(Mask::random_pixels(n, &shape, 0.3, seed).unwrap()),
                Box::new(KSpace::random_lines(n, &shape, 2.0, seed ^ 1).unwrap()),
            ])
            .unwrap(),
        ),
        11 => {
            // Non-binary weights: a general diagonal operator, per channel.
            let m = Tensor::rand([n, c, h, w], (Kind::Float, Device::Cpu));
            Box::new(Mask::new(m, &shape).unwrap())
        }
        _ => Box::new(
            Compose::new(vec![
                Box::new(Mask::exact_deletions(n, &shape, h * w / 2, seed).unwrap()),
                Box::new(KSpace::full(&shape).unwrap()),
            ])
            .unwrap(),
        ),
    }
}

/// A standard normal tensor `[n, ..shape]` of the given kind.
pub fn randn(n: i64, shape: &[i64], kind: Kind) -> Tensor {
    let mut s = vec![n];
    s.extend(shape);
    Tensor::randn(&s, (kind, Device::Cpu))
}

/// The largest absolute entry of `a − b` relative to the largest absolute entry of `b` (at least 1e-30).
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[]);
    let s = b.to_kind(Kind::Double).abs().max().double_value(&[]).max(1e-30);
    d / s
}

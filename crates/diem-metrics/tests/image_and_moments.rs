//! PSNR, SSIM and moment errors on pairs with known answers, and SSIM against a loop-by-loop reference.

use diem_metrics::{moment_errors, psnr, relative_error, sample_moments, ssim, MetricsError};
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Double, Device::Cpu);

#[test]
fn psnr_of_a_constant_offset() {
    let x = Tensor::rand([2, 3, 8, 8], CPU);
    let y = &x + 0.1;
    let p = Vec::<f64>::try_from(psnr(&x, &y, 1.0).unwrap()).unwrap();
    for v in p {
        assert!((v - 20.0).abs() < 1e-9, "MSE 0.01 at range 1 is 20 dB, got {v}");
    }
    // Range 2 adds 20 log10(2) dB.
    let p2 = psnr(&x, &y, 2.0).unwrap().double_value(&[0]);
    assert!((p2 - 20.0 - 20.0 * 2f64.log10()).abs() < 1e-9);
    assert!(psnr(&x, &x, 1.0).unwrap().double_value(&[0]).is_infinite());
}

#[test]
fn ssim_of_identical_and_constant_images() {
    let x = Tensor::rand([2, 3, 16, 16], CPU);
    let s = Vec::<f64>::try_from(ssim(&x, &x, 1.0).unwrap()).unwrap();
    assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-12), "{s:?}");
    // Constant images a, b: only the luminance term remains, (2ab + C1)/(a² + b² + C1).
    let (a, b) = (0.3, 0.6);
    let xa = Tensor::full([1, 1, 12, 12], a, CPU);
    let xb = Tensor::full([1, 1, 12, 12], b, CPU);
    let c1 = 0.01f64.powi(2);
    let expected = (2.0 * a * b + c1) / (a * a + b * b + c1);
    let got = ssim(&xa, &xb, 1.0).unwrap().double_value(&[0]);
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    // The photographic negative 1 − x keeps positive luminance but anti-correlated structure: SSIM < 0.
    assert!(ssim(&x, &(1.0 - &x), 1.0).unwrap().double_value(&[0]) < 0.0);
}

/// SSIM computed window by window with explicit loops.
fn ssim_reference(x: &[Vec<Vec<f64>>], y: &[Vec<Vec<f64>>], range: f64) -> f64 {
    let (h, w) = (x[0].len(), x[0][0].len());
    let g: Vec<f64> = (0..11).map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp()).collect();
    let gs: f64 = g.iter().sum();
    let c1 = (0.01 * range).powi(2);
    let c2 = (0.03 * range).powi(2);
    let mut total = 0.0;
    let mut count = 0.0;
    for (xc, yc) in x.iter().zip(y) {
        for i in 0..=h - 11 {
            for j in 0..=w - 11 {
                let (mut mx, mut my, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for a in 0..11 {
                    for b in 0..11 {
                        let wgt = g[a] * g[b] / (gs * gs);
                        let (p, q) = (xc[i + a][j + b], yc[i + a][j + b]);
                        mx += wgt * p;
                        my += wgt * q;
                        sxx += wgt * p * p;
                        syy += wgt * q * q;
                        sxy += wgt * p * q;
                    }
                }
                let (vx, vy, cxy) = (sxx - mx * mx, syy - my * my, sxy - mx * my);
                total +=
                    (2.0 * mx * my + c1) * (2.0 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1.0;
            }
        }
    }
    total / count
}

fn to_nested(t: &Tensor) -> Vec<Vec<Vec<f64>>> {
    let s = t.size();
    (0..s[0]).map(|c| (0..s[1]).map(|i| Vec::<f64>::try_from(&t.get(c).get(i)).unwrap()).collect()).collect()
}

#[test]
fn ssim_matches_loop_reference() {
    tch::manual_seed(9);
    let x = Tensor::rand([1, 2, 14, 13], CPU);
    let y = (&x * 0.7 + Tensor::rand([1, 2, 14, 13], CPU) * 0.3).clamp(0.0, 1.0);
    let ours = ssim(&x, &y, 1.0).unwrap().double_value(&[0]);
    let reference = ssim_reference(&to_nested(&x.get(0)), &to_nested(&y.get(0)), 1.0);
    assert!((ours - reference).abs() < 1e-12, "{ours} vs {reference}");
}

#[test]
fn image_metrics_reject_bad_shapes() {
    let x = Tensor::rand([1, 1, 8, 8], CPU);
    assert!(matches!(ssim(&x, &x, 1.0), Err(MetricsError::Shape { .. })), "8×8 is smaller than the window");
    assert!(matches!(psnr(&x, &x.view([1, 8, 8]), 1.0), Err(MetricsError::Shape { .. })));
    assert!(matches!(psnr(&x, &x, 0.0), Err(MetricsError::Parameter { .. })));
}

#[test]
fn moments_of_known_data() {
    // Four points with mean (1, 0) and unbiased covariance diag(2/3·…): computed by hand.
    let x = Tensor::from_slice(&[0.0, 1.0, 2.0, -1.0, 1.0, 1.0, 1.0, -1.0]).reshape([4, 2]);
    let (m, c) = sample_moments(&x).unwrap();
    assert_eq!(Vec::<f64>::try_from(&m).unwrap(), vec![1.0, 0.0]);
    // x−m: (−1,1), (1,−1), (0,1), (0,−1): Σ = [[2, −2], [−2, 4]] / 3.
    let expected = Tensor::from_slice(&[2.0, -2.0, -2.0, 4.0]).reshape([2, 2]) / 3.0;
    assert!(relative_error(&c, &expected).unwrap() < 1e-14);
    let errs = moment_errors(&x, &Tensor::from_slice(&[2.0, 0.0]), &expected).unwrap();
    assert!((errs.mean - 0.5).abs() < 1e-14, "|(1,0) − (2,0)| / |(2,0)| = 0.5");
    assert!(errs.covariance < 1e-14);
    // Zero reference: the absolute error.
    assert!((relative_error(&m, &m.zeros_like()).unwrap() - 1.0).abs() < 1e-14);
    assert!(sample_moments(&x.narrow(0, 0, 1)).is_err());
}

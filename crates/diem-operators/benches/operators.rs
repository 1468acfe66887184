//! Criterion benches of the operators on the hot paths of the E-step: `KSpace` on `[256, 1, 320, 320]`
//! (the MRI data set at R = 6) and `Blur` on `[64, 3, 256, 256]` (FFHQ motion deblur: per-sample 61 × 61
//! kernels, reflect boundary), `apply` and `adjoint`, f32. A CUDA group runs the same work on GPU 0 when
//! libtorch sees one and is skipped otherwise.
//!
//! Run: `cargo xtask cargo bench -p diem-operators` (sample size 10, short measurement: a few minutes on
//! a 2-core CPU).

use std::time::Duration;

use criterion::Criterion;
use diem_operators::{Blur, Boundary, KSpace, LinearOperator};
use tch::{Device, Kind, Tensor};

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn bench_on(c: &mut Criterion, device: Device, label: &str) {
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group(format!("operators-{label}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));

    let kspace = KSpace::random_lines(256, &[1, 320, 320], 6.0, 0).expect("kspace").to_device(device);
    let x = Tensor::randn([256, 1, 320, 320], (Kind::Float, device));
    let y = kspace.apply(&x);
    group.bench_function("kspace_apply_256x1x320x320", |b| {
        b.iter(|| {
            let out = kspace.apply(&x);
            sync(device);
            out
        })
    });
    group.bench_function("kspace_adjoint_256x2x320x320", |b| {
        b.iter(|| {
            let out = kspace.adjoint(&y);
            sync(device);
            out
        })
    });
    drop((x, y));

    let blur = Blur::random_motion(64, &[3, 256, 256], 61, 0.5, Boundary::Reflect, 0)
        .expect("blur")
        .to_device(device);
    let x = Tensor::randn([64, 3, 256, 256], (Kind::Float, device));
    group.bench_function("blur61_reflect_apply_64x3x256x256", |b| {
        b.iter(|| {
            let out = blur.apply(&x);
            sync(device);
            out
        })
    });
    group.bench_function("blur61_reflect_adjoint_64x3x256x256", |b| {
        b.iter(|| {
            let out = blur.adjoint(&x);
            sync(device);
            out
        })
    });
    group.finish();
}

fn cpu(c: &mut Criterion) {
    bench_on(c, Device::Cpu, "cpu");
}

fn cuda(c: &mut Criterion) {
    if !tch::Cuda::is_available() {
        eprintln!("skipping the CUDA operator benches: CUDA is not available");
        return;
    }
    bench_on(c, Device::Cuda(0), "cuda");
}

// `criterion_group!` emits an undocumented public function (denied by the workspace lints), so the
// harness is spelled out.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    cpu(&mut c);
    cuda(&mut c);
    c.final_summary();
}

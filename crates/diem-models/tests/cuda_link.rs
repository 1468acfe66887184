//! The CUDA runtime is linked into every test binary when the libtorch in use has one (crate diem-build):
//! rustc's `--as-needed` would otherwise drop `libtorch_cuda.so`, and a GPU machine would look CPU-only.
//! This runs on a CPU machine too, because it checks what the process loaded, not what a GPU answers.

use diem_models::device::{cuda_runtime_loaded, libtorch_has_cuda};

#[test]
fn libtorch_cuda_is_mapped_whenever_libtorch_has_it() {
    // Touch libtorch so that the test does not depend on lazy loading.
    let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
    let (Some(has), Some(loaded)) = (libtorch_has_cuda(), cuda_runtime_loaded()) else {
        println!("skipped: /proc/self/maps is not available on this platform");
        return;
    };
    if has {
        assert!(loaded, "libtorch ships libtorch_cuda.so but this test binary did not load it");
    } else {
        println!("note: CPU-only libtorch; nothing to link");
        assert!(!loaded);
    }
}

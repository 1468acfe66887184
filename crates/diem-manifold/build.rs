//! Links `libtorch_cuda.so` into every binary, test, example and bench of this crate when the libtorch in
//! use has it (rustc's `--as-needed` would drop it; see the `diem-build` crate).
fn main() {
    diem_build::link_torch_cuda();
}

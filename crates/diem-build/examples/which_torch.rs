//! Which libtorch a build of diem links, and whether its binaries will load CUDA: the check a build script makes
//! before it asks the linker to keep `libtorch_cuda.so` (rustc links with `--as-needed`, which would otherwise
//! drop it from a binary that references none of its symbols, and CUDA would then look absent).
//!
//! Run with `cargo xtask cargo run -p diem-build --example which_torch`.

fn main() {
    match diem_build::torch_lib_dir() {
        Some(dir) => {
            println!("libtorch: {}", dir.display());
            if diem_build::has_torch_cuda(&dir) {
                println!(
                    "it ships libtorch_cuda.so: binaries link it with {}",
                    diem_build::NO_AS_NEEDED_TORCH_CUDA
                );
            } else {
                println!("it has no libtorch_cuda.so: a CPU-only libtorch, nothing extra to link");
            }
        }
        None => println!(
            "no libtorch found: set {} or LIBTORCH, or run `cargo xtask setup` for the project's .venv",
            diem_build::TORCH_LIB_VAR
        ),
    }
}

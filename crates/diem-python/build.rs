//! Link settings of the extension module: it resolves libtorch from the installed `torch` wheel next to it
//! (`site-packages/diem/_native*.so` → `site-packages/torch/lib`), never from a copy of its own.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
}

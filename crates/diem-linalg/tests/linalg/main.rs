//! Integration tests of diem-linalg (one test binary, so libtorch is linked once).

mod batched;
mod common;
mod dplr;
mod images;
mod ppca;
mod safeguard;
mod solvers;

//! Criterion benchmarks of diem's hot paths live under `benches/benches/`; this library is empty.

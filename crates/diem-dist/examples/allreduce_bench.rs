//! The cost of one M-step gradient all-reduce and of the initial parameter broadcast on the MPI back end,
//! host staging included, for the CIFAR U-Net's 57.6 M f32 parameters split into tensors of U-Net-like
//! sizes. Rank 0 prints one JSON line with the median and minimum seconds over the repeats.
//!
//! ```text
//! cargo xtask cargo build --release -p diem-dist --features mpi --example allreduce_bench
//! eval "$(cargo xtask env)"
//! mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x OMP_NUM_THREADS \
//!     target/release/examples/allreduce_bench [--numel N] [--tensors K] [--repeats R]
//! ```

use std::time::Instant;

use diem_dist::{Communicator, Mpi};
use tch::{Device, Kind, Tensor};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `k` tensor sizes summing to `numel`, spread over three orders of magnitude like a U-Net's weights and
/// biases.
fn sizes(numel: usize, k: usize) -> Vec<i64> {
    let weights: Vec<f64> = (0..k).map(|i| 10f64.powf(3.0 * (i % 7) as f64 / 6.0)).collect();
    let total: f64 = weights.iter().sum();
    let mut s: Vec<i64> =
        weights.iter().map(|w| ((w / total) * numel as f64).floor().max(1.0) as i64).collect();
    let assigned: i64 = s.iter().sum();
    s[0] += numel as i64 - assigned;
    s
}

/// Seconds of `f` on every rank after a barrier, the slowest rank's time (all ranks must finish).
fn timed(comm: &Mpi, mut f: impl FnMut()) -> f64 {
    comm.barrier().expect("barrier");
    let t = Instant::now();
    f();
    let mine = t.elapsed().as_secs_f64();
    let all = comm.all_gather_f64(&[mine]).expect("all_gather_f64");
    all.iter().map(|v| v[0]).fold(0.0, f64::max)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let numel = arg(&args, "--numel", 57_600_000);
    let k = arg(&args, "--tensors", 200);
    let repeats = arg(&args, "--repeats", 5).max(1);
    let comm = Mpi::init().expect("MPI init");
    let sizes = sizes(numel, k);
    let mut grads: Vec<Tensor> =
        sizes.iter().map(|&n| Tensor::randn([n], (Kind::Float, Device::Cpu)) + comm.rank() as f64).collect();

    // One warm-up of each (the first all-reduce also checks the layout across ranks).
    comm.all_reduce_mean(&mut grads).expect("all_reduce_mean");
    comm.broadcast(&mut grads, 0).expect("broadcast");
    let reduce: Vec<f64> = (0..repeats)
        .map(|_| timed(&comm, || comm.all_reduce_mean(&mut grads).expect("all_reduce_mean")))
        .collect();
    let bcast: Vec<f64> =
        (0..repeats).map(|_| timed(&comm, || comm.broadcast(&mut grads, 0).expect("broadcast"))).collect();
    if comm.is_root() {
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let gb = numel as f64 * 4.0 / 1e9;
        println!(
            "{{\"bench\":\"mpi_host_staging\",\"ranks\":{},\"numel\":{numel},\"tensors\":{},\"dtype\":\"f32\",\
             \"repeats\":{repeats},\"omp_threads\":{},\"all_reduce_mean_median_s\":{:.4},\"all_reduce_mean_min_s\":{:.4},\
             \"broadcast_median_s\":{:.4},\"broadcast_min_s\":{:.4},\"gigabytes\":{gb:.3}}}",
            comm.size(),
            sizes.len(),
            tch::get_num_threads(),
            median(reduce.clone()),
            min(&reduce),
            median(bcast.clone()),
            min(&bcast),
        );
    }
}

//! Peak memory of one method (docs/method.md §11.3), measured in a child process of the benchmark binary
//! (`inverse_bench --single ...`) so that each method's peak is its own.
//!
//! tch exposes no CUDA allocator statistics, so the child reports:
//! - its peak resident set size (`VmHWM` of `/proc/self/status`, host memory; on a CPU run this is the
//!   method's memory, model and libtorch included) and the resident size before sampling (`VmRSS`);
//! - on CUDA, the GPU memory `nvidia-smi` attributes to its process after sampling (the caching allocator's
//!   reserve plus the CUDA context, an upper bound of the peak tensor memory), when `nvidia-smi` is available
//!   and sees the process id.

use serde::{Deserialize, Serialize};

use crate::posterior_bench::proc_status_mib;

/// What a `--single` child prints (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// The method's name.
    pub method: String,
    /// The task it ran.
    pub task: String,
    /// Steps T.
    pub steps: usize,
    /// Resident set size before sampling (model and images loaded), MiB.
    pub base_rss_mib: Option<f64>,
    /// Peak resident set size of the process (`VmHWM`), MiB.
    pub peak_rss_mib: Option<f64>,
    /// GPU memory held by the process after sampling (nvidia-smi), MiB; `None` on CPU or when unknown.
    pub gpu_mib: Option<f64>,
    /// `"cpu"` or `"cuda:N"`.
    pub device: String,
}

impl MemoryReport {
    /// The memory column of `cost.md`: the GPU figure on CUDA when known, else the peak RSS.
    pub fn cell(&self) -> String {
        match (self.gpu_mib, self.peak_rss_mib, self.base_rss_mib) {
            (Some(g), _, _) => format!("{:.2} GiB GPU", g / 1024.0),
            (None, Some(p), Some(b)) => format!("{:.0} MiB RSS (+{:.0})", p, p - b),
            (None, Some(p), None) => format!("{p:.0} MiB RSS"),
            _ => "–".into(),
        }
    }
}

/// The resident set size now and at its peak, MiB (`VmRSS`, `VmHWM`); `None` off Linux.
pub fn rss_now_and_peak() -> (Option<f64>, Option<f64>) {
    (proc_status_mib("VmRSS:"), proc_status_mib("VmHWM:"))
}

/// GPU memory `nvidia-smi` attributes to process `pid`, MiB, or `None` (no nvidia-smi, or the process is not
/// listed, e.g. in another PID namespace).
pub fn gpu_memory_mib(pid: u32) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
        let mut parts = line.split(',').map(str::trim);
        let p: u32 = parts.next()?.parse().ok()?;
        let mib: f64 = parts.next()?.parse().ok()?;
        (p == pid).then_some(mib)
    })
}

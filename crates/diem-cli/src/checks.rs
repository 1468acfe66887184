//! What every command checks around its computation: output paths before anything runs, memory before a
//! large job starts, finiteness before anything is written, and printing that survives a closed pipe.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use diem_models::Denoiser;
use tch::Tensor;

/// Set once stdout is a closed pipe (`diem inspect run | head -1`): later lines are dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints one line on stdout. A closed pipe is not an error: the reader has what it wanted, and the
/// command's files are already written; the rest of the output is dropped.
///
/// # Errors
/// Any other write error.
pub fn say(line: impl std::fmt::Display) -> Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// Prints one line on stderr, ignoring failures (there is nowhere left to report them).
pub fn warn(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Checks an `--out` path before any work: its extension is `ext` (the format written), it is not a
/// directory, device or FIFO (a symbolic link is fine: the file it points to is written, the link stays),
/// it is none of `inputs` (`(what, path)` pairs: the command's input files), and it does not lie inside one
/// of `dirs` (`(what, dir)`: directories the command reads, such as the prior's run). Returns the file that
/// will be written.
///
/// # Errors
/// A message naming `--out` and what is wrong.
pub fn output_path(
    out: &Path,
    ext: &str,
    inputs: &[(&str, &Path)],
    dirs: &[(&str, &Path)],
) -> Result<PathBuf> {
    let shown = out.display();
    let has_ext = out.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case(ext));
    if !has_ext {
        bail!("--out {shown}: this command writes a .{ext} array; name the file *.{ext}");
    }
    let target =
        diem_models::checkpoint::write_target(out).map_err(|e| anyhow::anyhow!("--out {shown}: {e}"))?;
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("--out {shown}: the folder {} does not exist", parent.display());
    }
    for (what, input) in inputs {
        if same_file(&target, input) {
            bail!("--out {shown} is {what} {}: refusing to overwrite an input", input.display());
        }
    }
    let canon_parent = std::fs::canonicalize(parent).ok();
    for (what, dir) in dirs {
        if let (Some(p), Ok(d)) = (&canon_parent, std::fs::canonicalize(dir)) {
            if p.starts_with(&d) {
                bail!(
                    "--out {shown} lies inside {what} {}: refusing to write into a directory this command \
                     reads (a run's files are the run's own)",
                    dir.display()
                );
            }
        }
    }
    Ok(target)
}

/// Whether two paths name the same file (the same inode, or the same canonical path).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
    }
}

/// Host memory available to this process (`MemAvailable` of `/proc/meminfo`), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// The memory plan of drawing `rows` samples of `per_row` f32 entries, `chunk` rows at a time: the output
/// in host memory (twice, while it is gathered and while it is written) plus one chunk's working set (a
/// generous allowance for the sampler's copies and the network's activations: 64 copies of the chunk).
/// Says so on stderr when the job is large, and refuses before starting when it cannot fit.
///
/// # Errors
/// When the sizes overflow or the estimate exceeds the available memory (naming both).
pub fn check_memory(what: &str, rows: i64, per_row: i64, chunk: i64) -> Result<()> {
    let out = (rows as u64).checked_mul(per_row as u64).and_then(|n| n.checked_mul(4));
    let work = (chunk.min(rows) as u64).checked_mul(per_row as u64).and_then(|n| n.checked_mul(4 * 64));
    let (Some(out), Some(work)) = (out, work) else {
        bail!("{what}: {rows} × {per_row} entries overflow any memory; lower the count");
    };
    let peak = out.saturating_mul(2).saturating_add(work);
    let available = available_memory();
    if let Some(avail) = available {
        if peak > avail {
            bail!(
                "{what}: the samples alone take {} ({rows} × {per_row} float32) and the job needs about {} \
                 of memory at its peak, but {} are available: lower the count (or draw several files with \
                 different --seed)",
                bytes(out),
                bytes(peak),
                bytes(avail)
            );
        }
    }
    if peak >= 256 << 20 {
        warn(format!(
            "{what}: {} of output, about {} of memory at its peak{}",
            bytes(out),
            bytes(peak),
            available.map_or(String::new(), |a| format!(" ({} available)", bytes(a)))
        ));
    }
    Ok(())
}

/// A denoiser that watches another: it records the first call whose input or output holds NaN or ±∞
/// (which call, the noise level, which rows), so a non-finite result can be traced to the sampler step
/// where it appeared.
pub struct Watch<'a> {
    inner: &'a dyn Denoiser,
    calls: Cell<usize>,
    first: RefCell<Option<FirstNonFinite>>,
}

impl<'a> Watch<'a> {
    /// Watches `inner`.
    pub fn new(inner: &'a dyn Denoiser) -> Self {
        Self { inner, calls: Cell::new(0), first: RefCell::new(None) }
    }

    /// The first non-finite call: `(call index from 0, σ, rows)`.
    pub fn first_non_finite(&self) -> Option<FirstNonFinite> {
        self.first.borrow().clone()
    }
}

impl Denoiser for Watch<'_> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let out = self.inner.denoise(x_t, sigma);
        let call = self.calls.get();
        self.calls.set(call + 1);
        if self.first.borrow().is_none() {
            let mut rows = diem_em::error::non_finite_rows(&out);
            rows.extend(diem_em::error::non_finite_rows(x_t));
            rows.sort_unstable();
            rows.dedup();
            if !rows.is_empty() {
                let s = sigma.max().double_value(&[]);
                *self.first.borrow_mut() = Some((call, s, rows));
            }
        }
        out
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.inner.prior_mean()
    }
}

/// The first non-finite call a [`Watch`] saw: `(call index from 0, σ, rows)`.
pub type FirstNonFinite = (usize, f64, Vec<i64>);

/// The rows of a result `x` (`[N, ...]`, rows `offset..offset + N` of the whole output) that hold NaN or
/// ±∞, as an error naming `what` (the method), the rows and, from `first` (a [`Watch`]'s record with the
/// denoiser calls per sampler step and the step count), the sampler step where the first non-finite value
/// appeared; `hint` is appended.
///
/// # Errors
/// That error, when there is a non-finite entry.
pub fn finite_result(
    what: &str,
    x: &Tensor,
    offset: i64,
    first: Option<(FirstNonFinite, usize, usize)>,
    hint: &str,
) -> Result<()> {
    let rows = diem_em::error::non_finite_rows(x);
    if rows.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = rows.iter().take(8).map(|r| (r + offset).to_string()).collect();
    let more = if rows.len() > 8 { ", …" } else { "" };
    let step = match first {
        Some(((call, sigma, _), per_step, steps)) => {
            let step = call / per_step.max(1);
            if step >= steps {
                format!(" (first seen in the final denoising, σ = {sigma:.3e})")
            } else {
                format!(" (first seen at sampler step {} of {steps}, σ = {sigma:.3e})", step + 1)
            }
        }
        None => String::new(),
    };
    bail!(
        "{what}: {} of {} samples are NaN or infinite{step}: rows {}{more}; nothing was written{hint}",
        rows.len(),
        x.size().first().copied().unwrap_or(1),
        shown.join(", ")
    )
}

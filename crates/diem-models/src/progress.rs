//! Progress that shows in a terminal and in a batch job's log, behind the [`ProgressObserver`] trait.
//!
//! Long computations (the E-step's chunks, the M-step's steps, DiEM's laps) report to a [`ProgressObserver`]:
//! [`ProgressObserver::start`] a task, [`ProgressObserver::advance`] it, [`ProgressObserver::finish`] it.
//! Tasks nest (the laps contain an E-step): an observer sees `start`/`finish` pairs as a stack. The default,
//! [`TerminalProgress`], shows each task as a progress display ([`progress_bar`]); [`NoProgress`] ignores
//! everything; a GUI or a notebook implements the trait itself.
//!
//! In a terminal, a display is an indicatif bar. Without one (a batch job under SLURM, `mpirun` with output
//! to files, `nohup`), indicatif draws nothing at all, so a long fit would print nothing for hours. There the
//! bar is kept hidden and a logger thread writes one plain, timestamped line to stderr when it starts, at
//! least every [`LOG_INTERVAL_VAR`] seconds (default 30) while it runs, and when it ends:
//!
//! ```text
//! [2026-12-02 07:55:01Z] lap 3: E-step chunks 12/64 (18.8 %), 3.21/s, elapsed 00:00:04, ETA 00:00:16
//! ```
//!
//! ```
//! use diem_models::progress::ProgressObserver;
//! use std::cell::Cell;
//!
//! /// Counts the steps of every task.
//! #[derive(Default)]
//! struct Count(Cell<u64>);
//!
//! impl ProgressObserver for Count {
//!     fn start(&self, _label: &str, _total: u64) {}
//!     fn advance(&self, n: u64) { self.0.set(self.0.get() + n); }
//!     fn finish(&self) {}
//! }
//!
//! let count = Count::default();
//! let observer: &dyn ProgressObserver = &count;
//! observer.start("chunks", 3);
//! (0..3).for_each(|_| observer.advance(1));
//! observer.finish();
//! assert_eq!(count.0.get(), 3);
//! ```

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between two log lines of a bar without a terminal (a positive number; default 30).
pub const LOG_INTERVAL_VAR: &str = "DIEM_LOG_INTERVAL";

/// Receives the progress of long computations (module docs). Methods take `&self`, so one observer can be
/// shared by the nested tasks of a run; `start` and `finish` come in pairs, innermost task first to finish.
/// A function that is *given* an observer for a task its caller started calls only
/// [`ProgressObserver::advance`] and [`ProgressObserver::message`].
pub trait ProgressObserver {
    /// A task named `label` ("lap 3: E-step chunks") of `total` steps starts.
    fn start(&self, label: &str, total: u64);
    /// The current task advanced by `n` steps.
    fn advance(&self, n: u64);
    /// A short status of the current task ("loss 1.2e-2", "lap 3").
    fn message(&self, _message: &str) {}
    /// The current task is done.
    fn finish(&self);

    /// The current task stops unfinished (an error ended it); by default the same as
    /// [`ProgressObserver::finish`].
    fn abandon(&self) {
        self.finish();
    }
}

/// A task of a [`ProgressObserver`] that ends when dropped: [`ProgressTask::finish`] on success, otherwise
/// (an early return with an error) [`ProgressObserver::abandon`]. Derefs to the observer, to advance it.
#[derive(Debug)]
pub struct ProgressTask<'a> {
    observer: &'a dyn ProgressObserver,
    done: bool,
}

impl<'a> ProgressTask<'a> {
    /// Starts a task named `label` of `total` steps on `observer`.
    pub fn start(observer: &'a dyn ProgressObserver, label: &str, total: u64) -> Self {
        observer.start(label, total);
        Self { observer, done: false }
    }

    /// Ends the task as done.
    pub fn finish(mut self) {
        self.done = true;
        self.observer.finish();
    }
}

impl<'a> std::ops::Deref for ProgressTask<'a> {
    type Target = dyn ProgressObserver + 'a;

    fn deref(&self) -> &Self::Target {
        self.observer
    }
}

impl Drop for ProgressTask<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.observer.abandon();
        }
    }
}

impl std::fmt::Debug for dyn ProgressObserver + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressObserver")
    }
}

/// The observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ProgressObserver for NoProgress {
    fn start(&self, _label: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// The default observer: each task is a [`progress_bar`] display (an indicatif bar in a terminal,
/// timestamped log lines without one), shown when `enabled`; nested tasks are stacked.
#[derive(Debug, Default)]
pub struct TerminalProgress {
    enabled: bool,
    stack: Mutex<Vec<Progress>>,
}

impl TerminalProgress {
    /// Shows the tasks when `enabled`, else nothing.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, stack: Mutex::new(Vec::new()) }
    }

    /// Whether the tasks are shown.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn top(&self, f: impl FnOnce(&Progress)) {
        let stack = self.stack.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = stack.last() {
            f(p);
        }
    }
}

impl ProgressObserver for TerminalProgress {
    fn start(&self, label: &str, total: u64) {
        let bar = progress_bar(total, label, self.enabled);
        self.stack.lock().unwrap_or_else(PoisonError::into_inner).push(bar);
    }

    fn advance(&self, n: u64) {
        self.top(|p| p.inc(n));
    }

    fn message(&self, message: &str) {
        self.top(|p| p.set_message(message.to_string()));
    }

    fn finish(&self) {
        let bar = self.stack.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }

    /// Drops the display unfinished: without a terminal it logs a last line tagged `stopped`.
    fn abandon(&self) {
        let bar = self.stack.lock().unwrap_or_else(PoisonError::into_inner).pop();
        drop(bar);
    }
}

/// One progress display: an indicatif bar, plus, without a terminal, the logger thread of the module docs,
/// which writes a last line when the display is dropped (`done` after [`Progress::finish_and_clear`],
/// `stopped` otherwise). As a [`ProgressObserver`] it is one task: `start` renames and resets it.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    logger: Option<Arc<AtomicBool>>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(stop) = &self.logger {
            stop.store(true, Ordering::Relaxed);
            let tag = if self.bar.is_finished() { "done" } else { "stopped" };
            eprintln!("{}", status_line(&self.bar, tag));
        }
    }
}

impl Progress {
    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets the position.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Sets the total number of steps.
    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }

    /// Sets the status message.
    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Marks the display finished and clears it from the terminal.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl ProgressObserver for Progress {
    fn start(&self, label: &str, total: u64) {
        self.bar.set_prefix(label.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    fn advance(&self, n: u64) {
        self.inc(n);
    }

    fn message(&self, message: &str) {
        self.set_message(message);
    }

    fn finish(&self) {
        self.finish_and_clear();
    }
}

/// A progress display of `len` steps named `label` ("lap 3: E-step chunks"); hidden when `enabled` is
/// false. See the module docs for what it does without a terminal.
pub fn progress_bar(len: u64, label: impl Into<String>, enabled: bool) -> Progress {
    let label = label.into();
    if !enabled {
        return Progress { bar: ProgressBar::hidden(), logger: None };
    }
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(label);
        return Progress { bar, logger: None };
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    bar.set_prefix(label);
    eprintln!("{}", status_line(&bar, "started"));
    let stop = Arc::new(AtomicBool::new(false));
    let (watched, stopped) = (bar.clone(), stop.clone());
    let interval = log_interval();
    std::thread::spawn(move || {
        let mut last = Instant::now();
        while !stopped.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if last.elapsed() >= interval && !stopped.load(Ordering::Relaxed) && !watched.is_finished() {
                eprintln!("{}", status_line(&watched, ""));
                last = Instant::now();
            }
        }
    });
    Progress { bar, logger: Some(stop) }
}

/// The interval from [`LOG_INTERVAL_VAR`], 30 s when unset or invalid.
fn log_interval() -> Duration {
    std::env::var(LOG_INTERVAL_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// One log line: time, label, position, rate, elapsed time, ETA, message, and `tag` (started / done).
fn status_line(bar: &ProgressBar, tag: &str) -> String {
    let pos = bar.position();
    let elapsed = bar.elapsed();
    let mut line = format!("[{}] {}", utc_now(), bar.prefix());
    match bar.length() {
        Some(len) if len > 0 => {
            line.push_str(&format!(" {pos}/{len} ({:.1} %)", 100.0 * pos as f64 / len as f64))
        }
        _ => line.push_str(&format!(" {pos}")),
    }
    if pos > 0 {
        line.push_str(&format!(", {:.3}/s", pos as f64 / elapsed.as_secs_f64().max(1e-9)));
    }
    line.push_str(&format!(", elapsed {}", hms(elapsed)));
    if tag.is_empty() && pos > 0 && bar.length().is_some_and(|l| l > pos) {
        line.push_str(&format!(", ETA {}", hms(bar.eta())));
    }
    let msg = bar.message();
    if !msg.is_empty() {
        line.push_str(&format!(" · {msg}"));
    }
    if !tag.is_empty() {
        line.push_str(&format!(" ({tag})"));
    }
    line
}

/// `HH:MM:SS`.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// `YYYY-MM-DD HH:MM:SSZ` for seconds since the Unix epoch (proleptic Gregorian calendar).
fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(utc_from_unix(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc_from_unix(1_796_083_200 + 3_661), "2026-12-01 01:01:01Z");
    }

    #[test]
    fn a_task_dropped_early_is_abandoned_and_terminal_tasks_nest() {
        #[derive(Default)]
        struct Log(std::cell::RefCell<Vec<String>>);
        impl ProgressObserver for Log {
            fn start(&self, label: &str, total: u64) {
                self.0.borrow_mut().push(format!("start {label} {total}"));
            }
            fn advance(&self, n: u64) {
                self.0.borrow_mut().push(format!("advance {n}"));
            }
            fn finish(&self) {
                self.0.borrow_mut().push("finish".into());
            }
            fn abandon(&self) {
                self.0.borrow_mut().push("abandon".into());
            }
        }
        let log = Log::default();
        let task = ProgressTask::start(&log, "a", 2);
        task.advance(2);
        task.finish();
        drop(ProgressTask::start(&log, "b", 1));
        assert_eq!(log.0.borrow().as_slice(), ["start a 2", "advance 2", "finish", "start b 1", "abandon"]);

        let terminal = TerminalProgress::new(false);
        terminal.start("laps", 3);
        terminal.start("lap 0: E-step chunks", 4);
        terminal.advance(4);
        let depth = || terminal.stack.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert_eq!(depth(), 2);
        terminal.finish();
        assert_eq!(depth(), 1);
        terminal.abandon();
        assert_eq!(depth(), 0);
        terminal.finish();
        assert_eq!(depth(), 0, "finishing with no task is harmless");
    }

    #[test]
    fn status_lines_carry_position_rate_and_eta() {
        let bar = ProgressBar::with_draw_target(Some(64), ProgressDrawTarget::hidden());
        bar.set_prefix("lap 3: E-step chunks");
        bar.set_message("loss 1.0e-2");
        bar.inc(16);
        let line = status_line(&bar, "");
        assert!(line.contains("lap 3: E-step chunks 16/64 (25.0 %)"), "{line}");
        assert!(line.contains("/s") && line.contains("ETA") && line.contains("loss 1.0e-2"), "{line}");
        assert!(status_line(&bar, "done").ends_with("(done)"));
        assert_eq!(hms(Duration::from_secs(3_725)), "01:02:05");
    }
}

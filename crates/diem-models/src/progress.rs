//! Progress that shows in a terminal and in a batch job's log.
//!
//! In a terminal, [`progress_bar`] is an indicatif bar. Without one (a batch job under SLURM, `mpirun` with
//! output to files, `nohup`), indicatif draws nothing at all, so a long fit would print nothing for hours.
//! There the bar is kept hidden and a logger thread writes one plain, timestamped line to stderr when it
//! starts, at least every [`LOG_INTERVAL_VAR`] seconds (default 30) while it runs, and when it ends:
//!
//! ```text
//! [2026-12-02 07:55:01Z] lap 3: E-step chunks 12/64 (18.8 %), 3.21/s, elapsed 00:00:04, ETA 00:00:16
//! ```

use std::io::IsTerminal;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between two log lines of a bar without a terminal (a positive number; default 30).
pub const LOG_INTERVAL_VAR: &str = "DIEM_LOG_INTERVAL";

/// A progress display: an indicatif [`ProgressBar`] (through `Deref`), plus, without a terminal, the logger
/// thread of the module docs, which writes a last line when the display is dropped (`done` after
/// `finish*`, `stopped` otherwise).
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    logger: Option<Arc<AtomicBool>>,
}

impl Deref for Progress {
    type Target = ProgressBar;

    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
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
    /// The underlying bar (for functions that take a `&ProgressBar`).
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
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

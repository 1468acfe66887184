//! libtorch's CPU threads on a shared machine: the intra-op thread count and the OpenMP wait policy that the
//! binaries (`diem`, `diem-manifold`, `diem-cifar`, `diem-fastmri`) apply at start-up through
//! [`init_process_threads`].
//!
//! libtorch's CPU kernels run on GNU OpenMP (libgomp). Between parallel regions libgomp's worker threads spin
//! (about 300,000 iterations, a few milliseconds) before they sleep. That is free on an idle machine, but beside
//! other busy processes the spinning workers take the cores that the thread with the work needs: a `diem fit`
//! E-step next to two busy processes on a 2-core machine spent 54 % of its CPU time spinning in libgomp and
//! 18 % in sgemm. With `OMP_WAIT_POLICY=PASSIVE` the workers sleep at once, so contention costs throughput in
//! proportion to the cores taken instead of a collapse (`BENCHMARKS.md`, "Threads on a shared machine").
//!
//! libgomp reads its environment once, when the library is loaded (before `main`), so setting the variable
//! from inside the process is too late: [`init_process_threads`] re-executes the binary with the variable set
//! (once; the re-executed process finds it set and goes on).
//!
//! What a user can override (each one turns the corresponding default off):
//!
//! | variable | effect |
//! | --- | --- |
//! | [`THREADS_VAR`] (`DIEM_THREADS`) | libtorch's intra-op threads (default: libtorch's, the number of cores) |
//! | `OMP_NUM_THREADS` | the same, read by libtorch itself; `DIEM_THREADS` wins when both are set |
//! | `OMP_WAIT_POLICY` | `active` / `passive`: no re-execution, libgomp's own behaviour for that value |
//! | `GOMP_SPINCOUNT` | libgomp's spin count before sleeping; set it (e.g. `300000`, libgomp's default) to keep spinning |
//! | [`NO_REEXEC_VAR`] (`DIEM_NO_REEXEC=1`) | never re-execute (the wait policy then stays libgomp's default) |

use std::ffi::OsString;

/// Environment variable: libtorch's intra-op thread count (a positive integer), applied by
/// [`init_process_threads`].
pub const THREADS_VAR: &str = "DIEM_THREADS";

/// Environment variable: `1` keeps [`init_process_threads`] from re-executing the binary.
pub const NO_REEXEC_VAR: &str = "DIEM_NO_REEXEC";

/// The OpenMP wait policy the binaries default to.
pub const DEFAULT_WAIT_POLICY: &str = "PASSIVE";

/// What [`init_process_threads`] decided, for a start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSettings {
    /// libtorch's intra-op threads after the call.
    pub intra_op: i32,
    /// `OMP_WAIT_POLICY` as this process sees it (`None`: unset, libgomp spins before it sleeps).
    pub wait_policy: Option<String>,
    /// `GOMP_SPINCOUNT` as this process sees it.
    pub spin_count: Option<String>,
}

impl std::fmt::Display for ThreadSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} intra-op threads, OMP_WAIT_POLICY={}, GOMP_SPINCOUNT={}",
            self.intra_op,
            self.wait_policy.as_deref().unwrap_or("(unset)"),
            self.spin_count.as_deref().unwrap_or("(unset)")
        )
    }
}

/// The environment additions a process with the variables `get` needs before libgomp starts: the default wait
/// policy, unless the user chose a policy or a spin count, or asked for no re-execution.
pub fn wait_policy_additions(get: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, &'static str)> {
    let set = |k: &str| get(k).is_some_and(|v| !v.is_empty());
    if set("OMP_WAIT_POLICY") || set("GOMP_SPINCOUNT") || get(NO_REEXEC_VAR).is_some_and(|v| v == "1") {
        Vec::new()
    } else {
        vec![("OMP_WAIT_POLICY", DEFAULT_WAIT_POLICY)]
    }
}

/// Parses [`THREADS_VAR`]: a positive integer, or `None` (unset, empty or invalid, with a warning for the last).
pub fn threads_from_env(get: impl Fn(&str) -> Option<OsString>) -> Option<i32> {
    let raw = get(THREADS_VAR)?;
    let text = raw.to_string_lossy();
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match text.parse::<i32>() {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            eprintln!("warning: {THREADS_VAR}={text:?} is not a positive integer; ignored");
            None
        }
    }
}

/// Applies diem's thread defaults to this process; call it first thing in `main`, before any libtorch call.
///
/// 1. When neither `OMP_WAIT_POLICY` nor `GOMP_SPINCOUNT` is set (and [`NO_REEXEC_VAR`] is not `1`), sets
///    `OMP_WAIT_POLICY=PASSIVE` and re-executes the binary with the same arguments, because libgomp has read
///    its environment already. Should the re-execution fail, it warns and goes on with libgomp's default.
/// 2. Sets libtorch's intra-op threads from [`THREADS_VAR`] when given (otherwise `OMP_NUM_THREADS` or
///    libtorch's default, the number of cores, stay).
///
/// Returns the settings in effect. On Unix a successful re-execution does not return.
pub fn init_process_threads() -> ThreadSettings {
    let get = |k: &str| std::env::var_os(k);
    let additions = wait_policy_additions(get);
    if !additions.is_empty() {
        reexec_with(&additions);
    }
    if let Some(n) = threads_from_env(get) {
        tch::set_num_threads(n);
    }
    ThreadSettings {
        intra_op: tch::get_num_threads(),
        wait_policy: std::env::var("OMP_WAIT_POLICY").ok(),
        spin_count: std::env::var("GOMP_SPINCOUNT").ok(),
    }
}

/// Replaces this process by the same executable and arguments with `vars` added to its environment; returns
/// only when that fails (after a warning).
#[cfg(unix)]
fn reexec_with(vars: &[(&str, &str)]) {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!(
                "warning: cannot find this executable to apply OMP_WAIT_POLICY ({e}); libgomp default kept"
            );
            return;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    // Keep argv[0] as the user typed it (clap's usage lines name it).
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    // Also the marker that stops a second re-execution should libgomp's variables be cleared on the way.
    cmd.env(NO_REEXEC_VAR, "1");
    let err = cmd.exec();
    eprintln!("warning: re-executing with OMP_WAIT_POLICY failed ({err}); libgomp default kept");
}

/// Without `exec` the variables cannot reach libgomp before it starts: nothing to do.
#[cfg(not(unix))]
fn reexec_with(_vars: &[(&str, &str)]) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let owned: Vec<(String, OsString)> =
            pairs.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        move |k: &str| owned.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn passive_only_when_the_user_chose_nothing() {
        assert_eq!(wait_policy_additions(env(&[])), vec![("OMP_WAIT_POLICY", "PASSIVE")]);
        assert_eq!(
            wait_policy_additions(env(&[("OMP_WAIT_POLICY", "")])),
            vec![("OMP_WAIT_POLICY", "PASSIVE")]
        );
        assert!(wait_policy_additions(env(&[("OMP_WAIT_POLICY", "active")])).is_empty());
        assert!(wait_policy_additions(env(&[("GOMP_SPINCOUNT", "300000")])).is_empty());
        assert!(wait_policy_additions(env(&[(NO_REEXEC_VAR, "1")])).is_empty());
        assert_eq!(wait_policy_additions(env(&[(NO_REEXEC_VAR, "0")])).len(), 1);
    }

    #[test]
    fn thread_count_is_a_positive_integer() {
        assert_eq!(threads_from_env(env(&[])), None);
        assert_eq!(threads_from_env(env(&[(THREADS_VAR, " 3 ")])), Some(3));
        assert_eq!(threads_from_env(env(&[(THREADS_VAR, "0")])), None);
        assert_eq!(threads_from_env(env(&[(THREADS_VAR, "two")])), None);
        assert_eq!(threads_from_env(env(&[(THREADS_VAR, "")])), None);
    }
}

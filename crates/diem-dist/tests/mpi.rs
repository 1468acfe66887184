//! The MPI back end with real ranks: `mpirun` runs the `diem-dist-check` binary (MPI can be initialized once
//! per process, and the test harness is no MPI program), and these tests read what every rank printed.
//!
//! Skipped, with a printed reason, when the crate is built without the `mpi` feature or `mpirun` is not on
//! `PATH`. Every launch has a deadline (a hang is a failure, and the job is killed).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `mpirun` may take before the test kills it and fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// The checking binary, or why these tests cannot run.
fn binary() -> Result<PathBuf, String> {
    #[cfg(feature = "mpi")]
    {
        Ok(PathBuf::from(env!("CARGO_BIN_EXE_diem-dist-check")))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err("built without the `mpi` feature (run `cargo xtask cargo test -p diem-dist --features mpi`)"
            .into())
    }
}

/// `mpirun` on `PATH`, or why not.
fn mpirun() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("mpirun"))
        .find(|p| p.is_file())
        .ok_or_else(|| "mpirun is not on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev)".into())
}

/// Both, or a printed skip.
fn setup() -> Option<(PathBuf, PathBuf)> {
    match (mpirun(), binary()) {
        (Ok(m), Ok(b)) => Some((m, b)),
        (Err(why), _) | (_, Err(why)) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// What one `mpirun` left behind.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// The lines a rank printed to stdout, without their `[rank R/N] ` tag.
    fn lines_of(&self, rank: usize, size: usize) -> Vec<&str> {
        let tag = format!("[rank {rank}/{size}] ");
        self.stdout.lines().filter_map(|l| l.strip_prefix(&tag)).collect()
    }

    /// The value a rank printed as `key=value`.
    fn value(&self, rank: usize, size: usize, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.lines_of(rank, size).into_iter().find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    fn describe(&self) -> String {
        format!("after {:.1?}\n--- stdout\n{}--- stderr\n{}", self.took, self.stdout, self.stderr)
    }
}

/// Runs `mpirun -np <np> diem-dist-check <args>`, killing it at [`DEADLINE`].
fn launch(mpirun: &PathBuf, binary: &PathBuf, np: usize, args: &[&str]) -> Run {
    let mut cmd = Command::new(mpirun);
    // Root in containers; more ranks than cores on small machines; no pinning (OpenMPI binds each rank to one
    // core for np <= 2, and libtorch then runs one thread).
    cmd.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", &np.to_string()]);
    // Forward what libtorch needs (to remote nodes; local ranks inherit the environment anyway).
    cmd.env("OMP_NUM_THREADS", std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| "1".into()));
    for var in ["OMP_NUM_THREADS", "LD_LIBRARY_PATH"] {
        if var == "OMP_NUM_THREADS" || std::env::var_os(var).is_some() {
            cmd.args(["-x", var]);
        }
    }
    cmd.arg(binary).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("cannot start mpirun");
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for mpirun") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            // SIGTERM first: mpirun forwards it to its ranks; SIGKILL would orphan them.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!("mpirun -np {np} {args:?} hung for {DEADLINE:?} and was killed\n{stdout}\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    Run {
        success: status.success(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        took,
    }
}

/// Every collective on 1 and 2 ranks: each rank's own checks pass, and the all-reduce's result hashes agree.
fn check_collectives(np: usize, args: &[&str]) {
    let Some((mpirun, binary)) = setup() else { return };
    let mut all = vec!["collectives"];
    all.extend_from_slice(args);
    let run = launch(&mpirun, &binary, np, &all);
    assert!(run.success, "mpirun -np {np} {all:?} failed {}", run.describe());
    let mut hashes = Vec::new();
    for rank in 0..np {
        let lines = run.lines_of(rank, np);
        assert!(lines.contains(&"ok"), "rank {rank} did not finish {}", run.describe());
        for key in ["second_init", "broadcast", "allreduce", "allgather", "gather_rows"] {
            assert!(
                run.value(rank, np, key).is_some(),
                "rank {rank} did not report {key} {}",
                run.describe()
            );
        }
        if np > 1 {
            for key in ["gather_mismatch", "check_same_mismatch", "layout_mismatch"] {
                let v = run.value(rank, np, key);
                assert!(
                    v.is_some_and(|v| v.starts_with("detected")),
                    "rank {rank}: {key} {}",
                    run.describe()
                );
            }
        }
        hashes.push(run.value(rank, np, "allreduce_hash").expect("every rank prints its hash").to_string());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "all-reduce results differ between ranks: {hashes:?}");
    println!("mpirun -np {np} {all:?}: ok in {:.1?}, all-reduce hash {}", run.took, hashes[0]);
}

#[test]
fn two_ranks_run_every_collective() {
    check_collectives(2, &[]);
}

#[test]
fn two_ranks_split_messages_into_pieces() {
    // At most 7 elements (bytes, for byte messages) per MPI call: every collective goes in pieces, as
    // buffers over 2^31 - 1 elements do.
    check_collectives(2, &["7"]);
}

#[test]
fn one_rank_under_mpirun() {
    check_collectives(1, &[]);
}

#[test]
fn a_failing_rank_stops_every_rank_through_agree() {
    let Some((mpirun, binary)) = setup() else { return };
    let run = launch(&mpirun, &binary, 2, &["agree-fail"]);
    assert!(!run.success, "the job must fail {}", run.describe());
    for rank in 0..2 {
        let tag = format!("[rank {rank}/2] error: ");
        let line = run
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix(&tag))
            .unwrap_or_else(|| panic!("rank {rank} printed no error {}", run.describe()));
        assert!(
            line.contains("rank 1") && line.contains("cannot read data/shard-1.npz"),
            "rank {rank}: {line}"
        );
    }
}

#[test]
fn abort_ends_every_rank() {
    let Some((mpirun, binary)) = setup() else { return };
    let run = launch(&mpirun, &binary, 2, &["abort"]);
    assert!(!run.success, "abort must fail the job {}", run.describe());
    assert!(!run.stdout.contains("] ok"), "no rank may finish {}", run.describe());
}

#[test]
fn auto_picks_mpi_under_a_launcher() {
    let Some((mpirun, binary)) = setup() else { return };
    let run = launch(&mpirun, &binary, 2, &["auto"]);
    assert!(run.success, "{}", run.describe());
    for rank in 0..2 {
        assert_eq!(run.value(rank, 2, "backend"), Some("mpi"), "{}", run.describe());
        // Both ranks run on this machine: their node-local ranks are their world ranks.
        assert_eq!(run.value(rank, 2, "local_rank"), Some(rank.to_string().as_str()), "{}", run.describe());
    }
}

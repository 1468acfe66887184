//! A kill never leaves half a file: write a report atomically, then show that a writer that fails half-way
//! leaves the previous version and no temporary file behind.
//!
//! Run with `cargo xtask cargo run -p diem-fs --example atomic_write`.

fn main() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("report.md");
    diem_fs::write_atomic(&path, b"| lap | loss |\n| 0 | 1.09 |\n")?;
    let failed = diem_fs::write_atomic_with(&path, |f| {
        std::io::Write::write_all(f, b"| lap | lo")?; // half of the new version ...
        Err(std::io::Error::other("the process was interrupted")) // ... then the writer fails
    });
    println!("second write: {failed:?}");
    println!("{} still holds:\n{}", path.display(), std::fs::read_to_string(&path)?);
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    println!("files in the folder: {names:?}");
    Ok(())
}

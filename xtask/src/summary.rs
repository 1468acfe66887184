//! Adding up the `test result:` lines that libtest prints for every test binary and doctest run.

/// Totals over every `test result:` line seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestTotals {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests marked `#[ignore]`.
    pub ignored: u64,
    /// Number of `test result:` lines (test binaries and doctest runs) seen.
    pub suites: u64,
}

impl TestTotals {
    /// Adds one line if it is a libtest result line, e.g.
    /// `test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
        let Some((_, counts)) = rest.split_once(". ") else { return };
        let mut seen = false;
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => continue,
            }
            seen = true;
        }
        if seen {
            self.suites += 1;
        }
    }

    /// The plain closing line: `summary: N passed, N failed, N skipped`.
    pub fn closing_line(&self) -> String {
        format!("summary: {} passed, {} failed, {} skipped", self.passed, self.failed, self.ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines_and_ignores_others() {
        let mut t = TestTotals::default();
        t.add_line(
            "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        t.add_line("test foo::bar ... ok");
        t.add_line("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add_line("running 7 tests");
        assert_eq!(t, TestTotals { passed: 7, failed: 3, ignored: 1, suites: 2 });
        assert_eq!(t.closing_line(), "summary: 7 passed, 3 failed, 1 skipped");
    }
}

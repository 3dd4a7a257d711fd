//! Counting KTAP results (Documentation/dev-tools/ktap.rst) in a guest's output.

/// Totals of the leaf test results found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            passed: self.passed + o.passed,
            failed: self.failed + o.failed,
            skipped: self.skipped + o.skipped,
        }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Counts `ok N ...` / `not ok N ...` lines, any number of KTAP documents in a row. A result
/// that closes a group of subtests (indented deeper, just above it) is not counted again.
/// `# SKIP` and `# TODO` results count as skipped.
pub fn count(output: &str) -> Totals {
    let mut t = Totals::default();
    let mut last_indent: Option<usize> = None;
    for line in output.lines() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if body.starts_with("KTAP version") && indent == 0 {
            last_indent = None; // a new document
            continue;
        }
        let (ok, rest) = if let Some(r) = body.strip_prefix("ok ") {
            (true, r)
        } else if let Some(r) = body.strip_prefix("not ok ") {
            (false, r)
        } else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let parent = last_indent.is_some_and(|l| l > indent);
        last_indent = Some(indent);
        if parent {
            continue;
        }
        let directive = rest
            .split_once('#')
            .map(|(_, d)| d.trim_start().to_ascii_uppercase());
        if directive
            .as_deref()
            .is_some_and(|d| d.starts_with("SKIP") || d.starts_with("TODO"))
        {
            t.skipped += 1;
        } else if ok {
            t.passed += 1;
        } else {
            t.failed += 1;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_directives() {
        let out = "KTAP version 1\n1..2\n    KTAP version 1\n    1..3\n    ok 1 a\n    not ok 2 b\n    ok 3 c # SKIP no hugetlb\nnot ok 1 suite\nok 2 other\nrandom ok 3 text\n";
        assert_eq!(
            count(out),
            Totals {
                passed: 2,
                failed: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn two_documents() {
        let out = "KTAP version 1\n1..1\nok 1 smoke\nKTAP version 1\n1..1\nnot ok 1 x\n";
        assert_eq!(
            count(out),
            Totals {
                passed: 1,
                failed: 1,
                skipped: 0
            }
        );
        assert_eq!(count(out).to_string(), "1 passed, 1 failed");
    }
}

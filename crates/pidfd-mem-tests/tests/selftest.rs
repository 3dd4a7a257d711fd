//! Host checks of the guest suite's harness (no module needed): the
//! `--selftest` table must be reported exactly as its names say, and the
//! real suite must skip every test (exit 0) where `/dev/pidfd_mem` is
//! missing.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pidfd-mem-tests");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run pidfd-mem-tests");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn harness_reports_each_outcome() {
    let (code, out) = run(&["--selftest"]);
    assert!(
        out.starts_with("KTAP version 1\n1..10\n"),
        "KTAP header:\n{out}"
    );
    let mut seen = 0;
    for line in out.lines() {
        let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("not ok ") {
            (false, r)
        } else {
            continue;
        };
        let name = rest.split_whitespace().nth(1).expect("name");
        seen += 1;
        if name.starts_with("pass_") {
            assert!(ok && !rest.contains("# SKIP"), "{name} must pass:\n{out}");
        } else if name.starts_with("fail_") {
            assert!(!ok, "{name} must fail:\n{out}");
        } else if name.starts_with("skip_") {
            assert!(
                ok && rest.contains("# SKIP no such feature"),
                "{name} must skip:\n{out}"
            );
        }
    }
    assert_eq!(seen, 10, "{out}");
    assert!(
        out.contains("# fail_expected_vs_seen: ") && out.contains("one: expected 1, seen 2"),
        "{out}"
    );
    assert!(
        out.contains("# fail_sigbus_unexpected: died of SIGBUS"),
        "{out}"
    );
    assert!(
        out.contains("expected death by SIGBUS, but the test returned normally"),
        "{out}"
    );
    assert!(out.contains("# fail_timeout: timeout"), "{out}");
    assert!(
        out.contains("# fail_panic: panic: index out of bounds"),
        "{out}"
    );
    assert!(
        out.contains("\n# 4 passed, 5 failed, 1 skipped\n4 passed, 5 failed, 1 skipped\n"),
        "{out}"
    );
    assert_eq!(code, 1, "exit status with failures");
}

#[test]
fn suite_skips_without_module() {
    if std::path::Path::new("/dev/pidfd_mem").exists() {
        println!("SKIP: /dev/pidfd_mem exists here; this test checks the suite without it");
        return;
    }
    let (code, out) = run(&[]);
    let n = out.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(n > 40, "{out}");
    assert!(
        out.lines()
            .filter(|l| l.starts_with("ok "))
            .all(|l| l.contains("# SKIP")),
        "{out}"
    );
    assert!(
        out.contains(&format!("0 passed, 0 failed, {n} skipped")),
        "{out}"
    );
    assert_eq!(code, 0);
    // Filters select by substring.
    let (code, out) = run(&["m1_", "u1_unmap_split"]);
    let names: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ok "))
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("m1_") || *n == "u1_unmap_split"),
        "{names:?}"
    );
    assert!(
        names.contains(&"u1_unmap_split") && names.len() > 3,
        "{names:?}"
    );
    assert_eq!(code, 0);
}

#[test]
fn list_names_follow_contract_ids() {
    let (code, out) = run(&["--list"]);
    assert_eq!(code, 0);
    for name in out.lines() {
        let id = name.split('_').next().unwrap();
        let known = [
            "abi", "o1", "o2", "m1", "m2", "u1", "k1", "k2", "a1", "a2", "a2a", "a3", "a4", "a5",
            "a6", "a7", "a8", "a9", "c1", "c2", "c3", "c4", "l1", "l2", "l3", "l4", "o3", "r1",
            "p1", "p2", "p3",
        ];
        assert!(
            known.contains(&id),
            "test {name} is not named after a contract id"
        );
    }
}

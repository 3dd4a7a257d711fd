//! `pidfd-mem-tests`: the guest integration suite of pidfd_mem, shaped like
//! a kselftest. Each test is named after the contract id it checks
//! (`shared/spec/pidfd_mem.md`) and runs in its own forked child; the
//! output is KTAP, closed by `N passed, N failed, N skipped`. Exit status 0
//! iff no test failed. Tests are skipped when `/dev/pidfd_mem` is missing.
//!
//! Usage: `pidfd-mem-tests [--list] [FILTER...]`: run the tests whose name
//! contains any FILTER (all without filters). Run it in the VM:
//! `cargo xtask run -- target/release/pidfd-mem-tests`.

mod harness;
mod selftest;

pub(crate) use ktap_harness::{ensure, expect_eq, fail, note, skip};
mod suite;
mod util;

use std::process::ExitCode;
use std::time::Duration;

use harness::Test;
use rustix::process::Signal;

use suite::{access as a, control as c, life as l, open as o, race as r, security as s};

const BUS: Signal = Signal::BUS;

/// Every test, in contract order.
fn tests() -> Vec<Test> {
    vec![
        Test::new("abi_unknown_ioctl_enotty", o::abi_unknown_ioctl_enotty),
        Test::new("o1_open_self", o::o1_open_self),
        Test::new("o1_open_child", o::o1_open_child),
        Test::new("o2_ebadf", o::o2_ebadf),
        Test::new("o2_einval_not_pidfd", o::o2_einval_not_pidfd),
        Test::new("o2_einval_flags", o::o2_einval_flags),
        Test::new("o2_einval_reserved", o::o2_einval_reserved),
        Test::new("o2_esrch_exited", o::o2_esrch_exited),
        Test::new("o2_esrch_kernel_thread", o::o2_esrch_kernel_thread),
        Test::new("o2_efault", o::o2_efault),
        Test::new("m1_map_ok", c::m1_map_ok),
        Test::new("m1_map_unaligned_einval", c::m1_map_unaligned_einval),
        Test::new("m1_map_size_offset_einval", c::m1_map_size_offset_einval),
        Test::new("m1_map_overflow_einval", c::m1_map_overflow_einval),
        Test::new("m1_map_flags_einval", c::m1_map_flags_einval),
        Test::new("m1_map_padding_einval", c::m1_map_padding_einval),
        Test::new("m1_map_overlap_eexist", c::m1_map_overlap_eexist),
        Test::new("m1_map_locked_eperm", c::m1_map_locked_eperm),
        Test::new("m1_map_esrch", c::m1_map_esrch),
        Test::new("m2_grant_is_window", c::m2_grant_is_window),
        Test::new("u1_unmap_split", c::u1_unmap_split),
        Test::new("u1_unmap_no_grant_ok", c::u1_unmap_no_grant_ok),
        Test::new("u1_unmap_after_exit", c::u1_unmap_after_exit),
        Test::new("u1_unmap_einval", c::u1_unmap_einval),
        Test::new("u1_unmap_locked_eperm", c::u1_unmap_locked_eperm),
        Test::new("u1_unmap_zaps_every_mapper", c::u1_unmap_zaps_every_mapper),
        Test::signal("u1_unmap_then_sigbus", c::u1_unmap_then_sigbus, BUS),
        Test::new("k1_lock", c::k1_lock),
        Test::new("k1_lock_arg_einval", c::k1_lock_arg_einval),
        Test::new("k2_close_ctl_keeps_grants", c::k2_close_ctl_keeps_grants),
        Test::new("a1_map_private_einval", a::a1_map_private_einval),
        Test::new(
            "a1_write_over_ro_grant_eacces",
            a::a1_write_over_ro_grant_eacces,
        ),
        Test::new("a1_mprotect_refused", a::a1_mprotect_refused),
        Test::new("a1_mremap", a::a1_mremap),
        Test::new(
            "a1_split_and_moved_mirror_drops_replaced_pages",
            a::a1_split_and_moved_mirror_drops_replaced_pages,
        ),
        Test::new("a2_faults_are_errors", a::a2_faults_are_errors),
        Test::signal("a2_hole_sigbus", a::a2_hole_sigbus, BUS),
        Test::signal("a2_ungranted_sigbus", a::a2_ungranted_sigbus, BUS),
        Test::signal("a2_prot_none_sigbus", a::a2_prot_none_sigbus, BUS),
        Test::signal("a2_ro_vma_write_sigbus", a::a2_ro_vma_write_sigbus, BUS),
        Test::new(
            "a2_zeros_and_write_allocates",
            a::a2_zeros_and_write_allocates,
        ),
        Test::new("a2a_memory_kinds", a::a2a_memory_kinds).timeout(Duration::from_secs(60)),
        Test::new(
            "a2a_regular_file_page_cache",
            a::a2a_regular_file_page_cache,
        ),
        Test::new("a2a_thp_mapped_whole", a::a2a_thp_mapped_whole).timeout(Duration::from_secs(60)),
        Test::new("a3_pread_pwrite", a::a3_pread_pwrite),
        Test::new("a3_read_write_lseek", a::a3_read_write_lseek),
        Test::new("a3_short_count", a::a3_short_count),
        Test::new("a3_eio", a::a3_eio),
        Test::new("a3_eacces", a::a3_eacces),
        Test::new("a3_esrch", a::a3_esrch),
        Test::new("a4_poll_hup_on_exit", a::a4_poll_hup_on_exit),
        Test::new("a4_poll_hup_every_open", a::a4_poll_hup_every_open),
        Test::new("a5_fork_child_coherent", a::a5_fork_child_coherent),
        Test::new(
            "a5_fork_child_drops_replaced_pages",
            a::a5_fork_child_drops_replaced_pages,
        ),
        Test::new("a6_self_mapping", a::a6_self_mapping),
        Test::new(
            "a6_split_mirror_granted_over_itself",
            a::a6_split_mirror_granted_over_itself,
        ),
        Test::new("a7_mirror_of_mirror_sigbus", a::a7_mirror_of_mirror_sigbus),
        Test::new("a8_proc_mem_sees_mirror", a::a8_proc_mem_sees_mirror),
        Test::new("a9_futex_on_mirror_efault", a::a9_futex_on_mirror_efault),
        Test::new("c1_both_directions", l::c1_both_directions),
        Test::new("c3_mapping_changes", l::c3_mapping_changes),
        Test::signal("l2_exit_sigbus", l::l2_exit_sigbus, BUS),
        Test::new("l2_exit_faults", l::l2_exit_faults),
        Test::new("l1_mem_outlives_creator", o::l1_mem_outlives_creator),
        Test::signal("l4_exec_sigbus", l::l4_exec_sigbus, BUS),
        Test::new("l4_exec_esrch_pollhup", l::l4_exec_esrch_pollhup),
        Test::new("r1_remote_proc_map", o::r1_remote_proc_map),
        Test::new("p1_unprivileged_eperm", o::p1_unprivileged_eperm),
        Test::new("p1_mem_is_capability", o::p1_mem_is_capability),
        Test::new("p2_ctl_is_capability", o::p2_ctl_is_capability),
        Test::new(
            "c2_mirror_store_breaks_cow_in_t",
            r::c2_mirror_store_breaks_cow_in_t,
        ),
        Test::new("c2_store_after_read_fault", r::c2_store_after_read_fault),
        Test::new(
            "c2_pwrite_not_in_child_forked_during_copy",
            r::c2_pwrite_not_in_child_forked_during_copy,
        )
        .timeout(Duration::from_secs(60)),
        Test::new("c4_churn_never_stale", r::c4_churn_never_stale),
        Test::new(
            "a6_mutual_mirrors_no_deadlock",
            r::a6_mutual_mirrors_no_deadlock,
        ),
        Test::new(
            "o3_fds_do_not_pin_address_space",
            r::o3_fds_do_not_pin_address_space,
        ),
        Test::new(
            "l3_unload_refused_while_in_use",
            r::l3_unload_refused_while_in_use,
        ),
        Test::new("p3_unmap_races_faults", r::p3_unmap_races_faults),
        Test::new(
            "u1_split_grant_faults_never_sigbus",
            r::u1_split_grant_faults_never_sigbus,
        ),
        Test::new(
            "p1_unpriv_cannot_open_other_users",
            s::p1_unpriv_cannot_open_other_users,
        ),
        Test::new(
            "p1_yama_scope1_descendants_only",
            s::p1_yama_scope1_descendants_only,
        ),
        Test::new(
            "p1_received_mem_grants_only",
            s::p1_received_mem_grants_only,
        ),
        Test::new(
            "p3_map_kernel_addresses_einval",
            s::p3_map_kernel_addresses_einval,
        ),
        Test::new("p3_offsets_near_i64_max", s::p3_offsets_near_i64_max),
        Test::new(
            "p3_pread_kernel_offsets_no_data",
            s::p3_pread_kernel_offsets_no_data,
        ),
        Test::new("p3_kernel_buffers_efault", s::p3_kernel_buffers_efault),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--idle") {
        util::idle_main(args.get(1).map(String::as_str).unwrap_or(""));
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: pidfd-mem-tests [--list] [FILTER...]");
        println!("Runs the tests whose name contains any FILTER (all by default); KTAP output.");
        return ExitCode::SUCCESS;
    }
    let list = args.iter().any(|a| a == "--list");
    if args.iter().any(|a| a == "--selftest") {
        // The harness's own tests (no module needed); see tests/selftest.rs.
        let all = selftest::tests();
        let sel: Vec<&Test> = all.iter().collect();
        return if harness::run_all(&sel, None) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let all = tests();
    let selected: Vec<&Test> = all
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    if list {
        for t in &selected {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }
    let missing = (!std::path::Path::new(pidfd_mem::sys::PIDFD_MEM_DEVICE).exists()).then(|| {
        format!(
            "{} missing: {}",
            pidfd_mem::sys::PIDFD_MEM_DEVICE,
            pidfd_mem::MODULE_HELP
        )
    });
    if harness::run_all(&selected, missing.as_deref()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

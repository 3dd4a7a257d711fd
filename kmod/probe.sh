#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Feature probes for Kbuild: print -D flags for what the kernel headers under
# $1 (the kernel source tree, $(srctree)) declare. Probes, not version numbers.
inc="$1/include/linux"
has() { grep -qsE "$2" "$inc/$1"; }

# get_user_pages_remote() and pin_user_pages_remote() lost their vmas argument
# in 6.5.
has mm.h 'struct vm_area_struct \*\*vmas, int \*locked\);' && echo -DPIDFD_MEM_HAVE_GUP_VMAS
# Huge PFN mappings of VM_PFNMAP VMAs (pmd_special, ->huge_fault by order):
# 6.12. The architecture's support is CONFIG_ARCH_SUPPORTS_PMD_PFNMAP.
has mm.h 'huge_fault\)\(struct vm_fault \*vmf, unsigned int order\)' &&
	has mm.h 'CONFIG_ARCH_SUPPORTS_PMD_PFNMAP' &&
	echo -DPIDFD_MEM_HAVE_HUGE_PFNMAP_API
# vm_flags became read-only outside vm_flags_{set,clear,mod}() in 6.3.
has mm.h 'void vm_flags_mod\(' && echo -DPIDFD_MEM_HAVE_VM_FLAGS_SET
# Faults may run under the per-VMA lock since 6.4.
has mm.h 'void release_fault_lock\(' && echo -DPIDFD_MEM_HAVE_RELEASE_FAULT_LOCK
# mm->get_unmapped_area became mm_get_unmapped_area() in 6.10.
has sched/mm.h 'mm_get_unmapped_area\(' && echo -DPIDFD_MEM_HAVE_MM_GET_UNMAPPED_AREA
exit 0

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pidfd_mem: internal definitions shared by the module's objects.
 *
 * One kernel object, one file:
 *   device.c  /dev/pidfd_mem: PIDFD_MEM_OPEN, REMOTE_PROC_MAP, permission
 *   control.c the control fd: PIDFD_MEM_MAP / _UNMAP / _LOCK
 *   access.c  the access fd (struct pidfd_mem): read/write/poll/mmap, lifetime
 *   mirror.c  a mirror VMA (struct pidfd_mem_mirror): fault, pfn_mkwrite,
 *             ptrace access, and the zap that drops its PTEs
 *   grant.c   a grant: one window and its interval notifier on T's mm
 *
 * The contract is shared/spec/pidfd_mem.md; ids such as C3 refer to it.
 */
#ifndef PIDFD_MEM_INTERNAL_H
#define PIDFD_MEM_INTERNAL_H

#include <linux/fs.h>
#include <linux/interval_tree.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/wait.h>

#include <uapi/linux/pidfd_mem.h>

/*
 * struct pidfd_mem - the state behind one PIDFD_MEM_OPEN (or REMOTE_PROC_MAP):
 * T's address space, its grants, and every mirror of them in every mapper.
 * The control file and the access file each hold a reference; every mirror
 * VMA holds the access file.
 */
struct pidfd_mem {
	struct kref kref;
	/* T's mm at OPEN, pinned with mmgrab only: never keeps it alive (O3). */
	struct mm_struct *mm;
	/* Tells when T's address space is torn down (exit or exec, L2/L4). */
	struct mmu_interval_notifier watch;
	/* The access file's inode (the module's pseudo filesystem). */
	struct inode *inode;
	/* Serialises MAP, UNMAP and LOCK; protects @locked. */
	struct mutex ctl_lock;
	bool locked;
	/*
	 * The notifier lock of the hmm discipline: protects @grants and every
	 * grant's @revoked, and orders PTE installation against the interval
	 * notifiers' sequence updates. Never held while sleeping on another
	 * lock, allocating, or zapping page tables.
	 */
	struct mutex lock;
	struct rb_root_cached grants;
	/*
	 * Protects @mirrors and each mirror's @start, @end, @pgoff, @watched
	 * and @dead against the zap, which reads them under it shared. Taken
	 * for write only under the mapper's mmap_lock, never around an
	 * allocation or a wait on anything but its readers.
	 */
	struct rw_semaphore mirrors_lock;
	struct list_head mirrors;
	/* Set once T's address space is gone; @wq wakes pollers (A4). */
	bool dead;
	wait_queue_head_t wq;
};

/*
 * struct pidfd_mem_grant - one window mem[offset, offset+size) that mirrors
 * T[address, address+size). Its fields other than @revoked never change:
 * UNMAP that splits a grant makes new grants.
 */
struct pidfd_mem_grant {
	struct interval_tree_node node;	/* [offset, offset + size - 1] */
	struct mmu_interval_notifier notifier;	/* T[address, address+size) */
	struct pidfd_mem *ctx;
	struct kref kref;
	u64 address;
	u64 offset;
	u64 size;
	u32 prot;
	bool revoked;			/* under ctx->lock */
	bool watched;			/* @notifier was inserted; set before publication */
};

/*
 * struct pidfd_mem_mirror - one mirror VMA, in the mapper M that mapped it
 * (or inherited it by fork). The zap finds mirrors here rather than through
 * the access inode's i_mmap tree: taking that tree's i_mmap_rwsem inside T's
 * invalidations deadlocked against mm_take_all_locks() (DESIGN.md).
 *
 * Without that lock, what keeps M's page tables alive while we zap them is
 * @notifier, an interval notifier on M over the VMA: M tells it of every
 * unmap (munmap, mremap, exit) before it frees page tables there, and the
 * mirror then drops its PTEs itself and is marked @dead, which the zap skips.
 * [@start, @end) is always inside the VMA's range, even while a split is
 * moving the VMA's bounds (->open of the new part shrinks the old part's
 * range first), and every address of the VMA is in some mirror's range.
 */
struct pidfd_mem_mirror {
	struct list_head node;		/* in ctx->mirrors */
	struct mmu_interval_notifier notifier;	/* M[start, end) at creation */
	struct pidfd_mem *ctx;
	struct vm_area_struct *vma;
	struct mm_struct *mm;		/* M, the VMA's */
	/* The mirror this one was split from, for a split that fails. */
	struct pidfd_mem_mirror *split_from;
	unsigned long start, end;	/* part of the VMA this mirror covers */
	unsigned long pgoff;		/* mem page at @start */
	/*
	 * @notifier is inserted. A fork child's mirrors are not: they start
	 * empty and are watched at their first fault (mirror.c).
	 */
	bool watched;
	bool dead;			/* M is unmapping it: never zap it */
};

/* access.c */
extern struct vfsmount *pidfd_mem_mnt;
struct pidfd_mem *pidfd_mem_create(struct mm_struct *mm);
void pidfd_mem_put(struct pidfd_mem *ctx);
struct file *pidfd_mem_access_file(struct pidfd_mem *ctx);
bool pidfd_mem_is_access_file(struct file *file);
/* How pidfd_mem_rw() takes T's mmap_lock. */
enum pidfd_mem_rw_lock {
	PIDFD_MEM_RW_UNLOCKED,	/* read/write: wait for it */
	PIDFD_MEM_RW_LOCKED,	/* the caller holds it (a mapper that is T) */
	PIDFD_MEM_RW_NESTED,	/* the caller holds a mapper's: only try it */
};

ssize_t pidfd_mem_rw(struct pidfd_mem *ctx, u64 pos, struct iov_iter *iter,
		     bool write, enum pidfd_mem_rw_lock how);
int pidfd_mem_fs_init(void);
void pidfd_mem_fs_exit(void);

/* control.c */
struct file *pidfd_mem_control_file(struct pidfd_mem *ctx);

/* mirror.c */
#if defined(PIDFD_MEM_HAVE_HUGE_PFNMAP_API) && \
	defined(CONFIG_ARCH_SUPPORTS_PMD_PFNMAP)
#define PIDFD_MEM_HAVE_HUGE_PFNMAP
#endif
bool pidfd_mem_is_mirror(struct vm_area_struct *vma);
void pidfd_mem_mirror_zap(struct pidfd_mem *ctx, u64 offset, u64 len);
int pidfd_mem_mirror_mmap(struct pidfd_mem *ctx, struct vm_area_struct *vma);
unsigned long pidfd_mem_mirror_get_unmapped_area(struct pidfd_mem *ctx,
						 struct file *file,
						 unsigned long addr,
						 unsigned long len,
						 unsigned long pgoff,
						 unsigned long flags);

/* grant.c */
int pidfd_mem_grant_map(struct pidfd_mem *ctx, u64 address, u64 offset,
			u64 size, u32 prot);
int pidfd_mem_grant_unmap(struct pidfd_mem *ctx, u64 offset, u64 size);
struct pidfd_mem_grant *pidfd_mem_grant_find(struct pidfd_mem *ctx, u64 offset);
struct pidfd_mem_grant *pidfd_mem_grant_get(struct pidfd_mem *ctx, u64 offset);
void pidfd_mem_grant_put(struct pidfd_mem_grant *grant);
bool pidfd_mem_grant_any_readonly(struct pidfd_mem *ctx, u64 offset, u64 len);
void pidfd_mem_grant_destroy_all(struct pidfd_mem *ctx);

/* Compatibility across kernel versions, from the probes in Kbuild. */
static inline void pidfd_mem_vm_flags_set(struct vm_area_struct *vma,
					  vm_flags_t set, vm_flags_t clear)
{
#ifdef PIDFD_MEM_HAVE_VM_FLAGS_SET
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags | set) & ~clear;
#endif
}

#endif /* PIDFD_MEM_INTERNAL_H */

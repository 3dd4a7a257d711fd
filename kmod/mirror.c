// SPDX-License-Identifier: GPL-2.0
/*
 * A mirror: a VMA made by mmap() of the access fd, in any process.
 *
 * The VMA is VM_PFNMAP: its PTEs are special, so they take no reference on
 * T's pages, pin nothing, and are invisible to GUP (A9) and to rmap. Pages
 * are installed at fault time from T's page tables (hmm_range_fault) and
 * dropped by the grant's interval notifier (grant.c) before T may free them.
 *
 * Read faults map T's present neighbouring pages read-only in the same fault
 * (fault-around); the first write to a page goes through ->pfn_mkwrite and a
 * write fault, which faults the page writable and dirty in T first, so that
 * the store is T's store (C2: copy-on-write broken, KSM unshared, writeback
 * sees the page dirty).
 */
#include <linux/hmm.h>
#include <linux/mman.h>
#include <linux/moduleparam.h>
#include <linux/sched/mm.h>
#include <linux/uio.h>

#include "internal.h"

/* Pages looked up and mapped by one read fault (at most, and aligned). */
static unsigned int fault_around_pages = 64;
module_param(fault_around_pages, uint, 0644);
MODULE_PARM_DESC(fault_around_pages,
		 "pages mapped around a read fault in a mirror (1..64, power of 2)");

#define PIDFD_MEM_FAULT_MAX 64

static int pidfd_mem_pte_noop(pte_t *pte, unsigned long addr, void *data)
{
	return 0;
}

/* What one fault installs: T's pfns for the mirror pages from @start. */
struct pidfd_mem_fill {
	struct mm_struct *mm;		/* the mapper's */
	unsigned long *pfns;		/* from hmm_range_fault() */
	unsigned long start;
	unsigned long write;		/* index of the page mapped writable */
	pgprot_t ro, rw;
};

/*
 * Install one special PTE (as vmf_insert_pfn_prot() would, for RAM that T
 * maps with its normal cache mode). Runs under the mapper's PTL and
 * ctx->lock; an existing PTE is left alone.
 */
static int pidfd_mem_fill_pte(pte_t *pte, unsigned long addr, void *data)
{
	struct pidfd_mem_fill *fill = data;
	unsigned long i = (addr - fill->start) >> PAGE_SHIFT;
	unsigned long hpfn = fill->pfns[i];

	if (!(hpfn & HMM_PFN_VALID) || (hpfn & HMM_PFN_ERROR) ||
	    !pte_none(ptep_get(pte)))
		return 0;
	set_pte_at(fill->mm, addr, pte,
		   pte_mkspecial(pfn_pte(hpfn & ~HMM_PFN_FLAGS,
					 i == fill->write ? fill->rw : fill->ro)));
	return 0;
}

/* The window of mirror pages [*start, *end) that a fault at @addr maps. */
static void pidfd_mem_mirror_window(struct vm_fault *vmf,
				    struct pidfd_mem_grant *grant, u64 off,
				    bool write, unsigned long *start,
				    unsigned long *end)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr = vmf->address & PAGE_MASK;
	unsigned long n = clamp_val(fault_around_pages, 1, PIDFD_MEM_FAULT_MAX);
	unsigned long lo, hi, span;

	if (write || n == 1 || !is_power_of_2(n)) {
		*start = addr;
		*end = addr + PAGE_SIZE;
		return;
	}
	span = n << PAGE_SHIFT;
	lo = max3(ALIGN_DOWN(addr, span), vma->vm_start, addr & PMD_MASK);
	hi = min3(ALIGN_DOWN(addr, span) + span, vma->vm_end,
		  (addr & PMD_MASK) + PMD_SIZE);
	/* Stay inside the grant. */
	if (addr - lo > off - grant->offset)
		lo = addr - (off - grant->offset);
	if (hi - addr > grant->offset + grant->size - off)
		hi = addr + (grant->offset + grant->size - off);
	*start = lo;
	*end = hi;
}

/* Give up the mapper's mmap_lock before answering VM_FAULT_RETRY. */
static void pidfd_mem_release_fault_lock(struct vm_fault *vmf)
{
#ifdef PIDFD_MEM_HAVE_RELEASE_FAULT_LOCK
	release_fault_lock(vmf);
#else
	mmap_read_unlock(vmf->vma->vm_mm);
#endif
}

static vm_fault_t pidfd_mem_mirror_handle(struct vm_fault *vmf, bool write)
{
	struct vm_area_struct *vma = vmf->vma;
	struct pidfd_mem *ctx = vma->vm_file->private_data;
	struct mm_struct *mm = ctx->mm;
	unsigned long pfns[PIDFD_MEM_FAULT_MAX];
	unsigned long addr = vmf->address & PAGE_MASK;
	u64 off = (u64)vmf->pgoff << PAGE_SHIFT;
	struct pidfd_mem_grant *grant;
	struct hmm_range range = {};
	struct pidfd_mem_fill fill = {};
	unsigned long start, end, taddr, idx, npages;
	bool self = vma->vm_mm == mm;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	int err;

	grant = pidfd_mem_grant_get(ctx, off);
	if (!grant)
		return VM_FAULT_SIGBUS;
	if (write && !(grant->prot & PIDFD_MEM_PROT_WRITE))
		goto put_grant;
	if (!mmget_not_zero(mm))
		goto put_grant;

	pidfd_mem_mirror_window(vmf, grant, off, write, &start, &end);
	npages = (end - start) >> PAGE_SHIFT;
	idx = (addr - start) >> PAGE_SHIFT;
	taddr = grant->address + (off - grant->offset);

	/*
	 * Make sure the mapper's page table exists now: filling PTEs
	 * under ctx->lock must not allocate, since reclaim may call our
	 * invalidate callback, which takes ctx->lock.
	 */
	if (pmd_none(*vmf->pmd) &&
	    apply_to_page_range(vma->vm_mm, start, end - start,
				pidfd_mem_pte_noop, NULL)) {
		ret = VM_FAULT_OOM;
		goto put_mm;
	}

	/*
	 * T's mmap_lock nests inside the mapper's only by trylock: when T and
	 * the mapper mirror each other, blocking here could deadlock against
	 * writers queued on both. A mapper that is T holds it already (A6).
	 */
	if (!self && !mmap_read_trylock(mm)) {
		if ((vmf->flags & FAULT_FLAG_ALLOW_RETRY) &&
		    !(vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
			/*
			 * Once the mapper's lock is gone the mirror, its file
			 * and ctx may go: drop the grant first, keep only mm.
			 */
			pidfd_mem_grant_put(grant);
			pidfd_mem_release_fault_lock(vmf);
			/* Wait for T's writer with no lock held, then retry. */
			if (!mmap_read_lock_killable(mm))
				mmap_read_unlock(mm);
			mmput_async(mm);
			return VM_FAULT_RETRY;
		}
		if (mmap_read_lock_killable(mm))
			goto put_mm;
	}

	if (write) {
		struct vm_area_struct *tvma = vma_lookup(mm, taddr);

		/* Never fault a mirror (or I/O memory) of T: A2, A7. */
		if (!tvma || (tvma->vm_flags & (VM_IO | VM_PFNMAP | VM_MIXEDMAP)))
			goto unlock_mm;
		/* T's own write fault: breaks COW, unshares KSM, dirties (C2). */
		if (fixup_user_fault(mm, taddr, FAULT_FLAG_WRITE, NULL))
			goto unlock_mm;
	}

	/*
	 * Two walks under one sequence: the first faults the page asked for in
	 * T (hmm_range_fault() would also fault every page after it in its
	 * window, and fail on one T cannot fault), the second takes the whole
	 * window as T maps it, faulting nothing.
	 */
	range.notifier = &grant->notifier;
	range.hmm_pfns = pfns;
	do {
		range.notifier_seq = mmu_interval_read_begin(&grant->notifier);
		range.start = taddr;
		range.end = taddr + PAGE_SIZE;
		range.default_flags = HMM_PFN_REQ_FAULT |
				      (write ? HMM_PFN_REQ_WRITE : 0);
		range.pfn_flags_mask = 0;
		err = hmm_range_fault(&range);
		if (err || npages == 1)
			continue;
		range.start = taddr - (addr - start);
		range.end = range.start + (end - start);
		range.default_flags = 0;
		err = hmm_range_fault(&range);
		/* T changed the page between the walks: start again. */
		if (!err && (!(pfns[idx] & HMM_PFN_VALID) ||
			     (write && !(pfns[idx] & HMM_PFN_WRITE))))
			err = -EBUSY;
	} while (err == -EBUSY);
	if (!err)
		fill.write = write ? idx : npages;
	if (!self)
		mmap_read_unlock(mm);
	if (err) {
		ret = err == -ENOMEM ? VM_FAULT_OOM : VM_FAULT_SIGBUS;
		goto put_mm;
	}

	mutex_lock(&ctx->lock);
	if (grant->revoked) {
		ret = VM_FAULT_SIGBUS;
		goto unlock_ctx;
	}
	/* An invalidation ran since the lookup: let the access fault again. */
	ret = VM_FAULT_NOPAGE;
	if (mmu_interval_read_retry(&grant->notifier, range.notifier_seq))
		goto unlock_ctx;
	fill.pfns = pfns;
	fill.start = start;
	fill.mm = vma->vm_mm;
	fill.ro = vma->vm_page_prot;
	fill.rw = vm_get_page_prot(vma->vm_flags);
	/*
	 * One page table walk and one PTL for the whole window. The page table
	 * exists (made above), so this allocates nothing.
	 */
	if (apply_to_page_range(vma->vm_mm, start, end - start,
				pidfd_mem_fill_pte, &fill))
		ret = VM_FAULT_SIGBUS;
unlock_ctx:
	mutex_unlock(&ctx->lock);
	goto put_mm;

unlock_mm:
	if (!self)
		mmap_read_unlock(mm);
put_mm:
	/* Never the last reference here: tearing T down belongs elsewhere. */
	mmput_async(mm);
put_grant:
	pidfd_mem_grant_put(grant);
	return ret;
}

static vm_fault_t pidfd_mem_mirror_fault(struct vm_fault *vmf)
{
	return pidfd_mem_mirror_handle(vmf, vmf->flags & FAULT_FLAG_WRITE);
}

/*
 * First write to a page mapped read-only by a read fault. The core would
 * make the PTE writable as it is; instead drop it, so that the store comes
 * back as a write fault that asks T for the page writable and dirty.
 */
static vm_fault_t pidfd_mem_mirror_pfn_mkwrite(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct pidfd_mem *ctx = vma->vm_file->private_data;
	struct pidfd_mem_grant *grant;
	bool writable;

	grant = pidfd_mem_grant_get(ctx, (u64)vmf->pgoff << PAGE_SHIFT);
	if (!grant)
		return VM_FAULT_SIGBUS;
	writable = grant->prot & PIDFD_MEM_PROT_WRITE;
	pidfd_mem_grant_put(grant);
	if (!writable)
		return VM_FAULT_SIGBUS;
	zap_vma_ptes(vma, vmf->address & PAGE_MASK, PAGE_SIZE);
	return VM_FAULT_NOPAGE;
}

/* ptrace and /proc/PID/mem of a mapper see through the mirror (A8). */
static int pidfd_mem_mirror_access(struct vm_area_struct *vma,
				   unsigned long addr, void *buf, int len,
				   int write)
{
	struct pidfd_mem *ctx = vma->vm_file->private_data;
	struct kvec kvec = { .iov_base = buf };
	struct iov_iter iter;
	u64 off;

	off = ((u64)vma->vm_pgoff << PAGE_SHIFT) + (addr - vma->vm_start);
	kvec.iov_len = min_t(unsigned long, len, vma->vm_end - addr);
	iov_iter_kvec(&iter, write ? ITER_SOURCE : ITER_DEST, &kvec, 1,
		      kvec.iov_len);
	return pidfd_mem_rw(ctx, off, &iter, write,
			    vma->vm_mm == ctx->mm ? PIDFD_MEM_RW_LOCKED :
						    PIDFD_MEM_RW_NESTED);
}

static const struct vm_operations_struct pidfd_mem_mirror_ops = {
	.fault = pidfd_mem_mirror_fault,
	.pfn_mkwrite = pidfd_mem_mirror_pfn_mkwrite,
	.access = pidfd_mem_mirror_access,
};

/* mmap() of the access fd (A1). */
int pidfd_mem_mirror_mmap(struct pidfd_mem *ctx, struct vm_area_struct *vma)
{
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (off > LLONG_MAX - len)
		return -EINVAL;
	if (pidfd_mem_grant_any_readonly(ctx, off, len)) {
		if (vma->vm_flags & VM_WRITE)
			return -EACCES;
		pidfd_mem_vm_flags_set(vma, 0, VM_MAYWRITE);
	}
	pidfd_mem_vm_flags_set(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP, 0);
	vma->vm_ops = &pidfd_mem_mirror_ops;
	return 0;
}

/*
 * Place a mirror at the same offset within a 2 MiB frame as the address in T
 * it starts at, so that T's huge pages can be mapped whole where the kernel
 * allows it (contract section 9).
 */
unsigned long pidfd_mem_mirror_get_unmapped_area(struct pidfd_mem *ctx,
						 struct file *file,
						 unsigned long addr,
						 unsigned long len,
						 unsigned long pgoff,
						 unsigned long flags)
{
	struct pidfd_mem_grant *grant;
	unsigned long want, got;

#ifdef PIDFD_MEM_HAVE_MM_GET_UNMAPPED_AREA
#define pidfd_mem_get_area(a, l) \
	mm_get_unmapped_area(current->mm, file, a, l, pgoff, flags)
#else
#define pidfd_mem_get_area(a, l) \
	current->mm->get_unmapped_area(file, a, l, pgoff, flags)
#endif
	if ((flags & MAP_FIXED) || len < PMD_SIZE || len > TASK_SIZE - PMD_SIZE)
		return pidfd_mem_get_area(addr, len);
	grant = pidfd_mem_grant_get(ctx, (u64)pgoff << PAGE_SHIFT);
	if (!grant)
		return pidfd_mem_get_area(addr, len);
	want = (grant->address + ((u64)pgoff << PAGE_SHIFT) - grant->offset) &
	       ~PMD_MASK;
	pidfd_mem_grant_put(grant);

	got = pidfd_mem_get_area(0, len + PMD_SIZE);
	if (IS_ERR_VALUE(got))
		return pidfd_mem_get_area(addr, len);
	return got + ((want - got) & ~PMD_MASK);
#undef pidfd_mem_get_area
}

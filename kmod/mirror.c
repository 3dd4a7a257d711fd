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
#include <linux/pfn_t.h>
#include <linux/sched/mm.h>
#include <linux/uio.h>

#include "internal.h"

/* Pages looked up and mapped by one read fault (at most, and aligned). */
static unsigned int fault_around_pages = 64;
module_param(fault_around_pages, uint, 0644);
MODULE_PARM_DESC(fault_around_pages,
		 "pages mapped around a read fault in a mirror (1..64, power of 2)");

#define PIDFD_MEM_FAULT_MAX 64

/* What a mirror fault asks for. */
enum pidfd_mem_fault {
	PIDFD_MEM_FAULT_READ,	/* map the page and its neighbours read-only */
	PIDFD_MEM_FAULT_WRITE,	/* map the page writable */
	PIDFD_MEM_FAULT_MKWRITE, /* make a read-only mirror PTE writable */
	PIDFD_MEM_FAULT_PMD,	/* map T's huge page whole, read-only */
};

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

/*
 * The window of mirror pages [*start, *end) that a fault at @addr maps. A
 * huge fault maps a whole PMD or nothing: false when the PMD around @addr is
 * not whole inside the VMA and the grant, or T's side of it is not 2 MiB
 * aligned.
 */
static bool pidfd_mem_mirror_window(struct vm_fault *vmf,
				    struct pidfd_mem_grant *grant, u64 off,
				    enum pidfd_mem_fault kind,
				    unsigned long *start, unsigned long *end)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr = vmf->address & PAGE_MASK;
	unsigned long n = clamp_val(fault_around_pages, 1, PIDFD_MEM_FAULT_MAX);
	u64 before = off - grant->offset;		/* grant bytes below addr */
	u64 after = grant->offset + grant->size - off;	/* and from addr on */
	unsigned long lo, hi, span;

	if (kind == PIDFD_MEM_FAULT_PMD) {
		lo = addr & PMD_MASK;
		hi = lo + PMD_SIZE;
		*start = lo;
		*end = hi;
		return lo >= vma->vm_start && hi <= vma->vm_end &&
		       addr - lo <= before && hi - addr <= after &&
		       IS_ALIGNED(grant->address + before - (addr - lo),
				  PMD_SIZE);
	}
	if (kind != PIDFD_MEM_FAULT_READ || n == 1 || !is_power_of_2(n)) {
		*start = addr;
		*end = addr + PAGE_SIZE;
		return true;
	}
	span = n << PAGE_SHIFT;
	lo = max3(ALIGN_DOWN(addr, span), vma->vm_start, addr & PMD_MASK);
	hi = min3(ALIGN_DOWN(addr, span) + span, vma->vm_end,
		  (addr & PMD_MASK) + PMD_SIZE);
	/* Stay inside the grant. */
	if (addr - lo > before)
		lo = addr - before;
	if (hi - addr > after)
		hi = addr + after;
	*start = lo;
	*end = hi;
	return true;
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

/*
 * Install what the lookup found, under ctx->lock (the caller checked that no
 * invalidation ran since). @pfns holds T's pages for the mirror pages from
 * @start; @idx is the page that faulted.
 */
static vm_fault_t pidfd_mem_mirror_install(struct vm_fault *vmf,
					   enum pidfd_mem_fault kind,
					   unsigned long *pfns,
					   unsigned long start,
					   unsigned long end,
					   unsigned long idx)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long pfn = pfns[idx] & ~HMM_PFN_FLAGS;
	struct pidfd_mem_fill fill = {
		.mm = vma->vm_mm,
		.pfns = pfns,
		.start = start,
		.write = kind == PIDFD_MEM_FAULT_WRITE ? idx : ULONG_MAX,
		.ro = vma->vm_page_prot,
		.rw = vm_get_page_prot(vma->vm_flags),
	};

	switch (kind) {
	case PIDFD_MEM_FAULT_MKWRITE:
		/*
		 * T's page is writable and the same one the PTE maps: the core
		 * makes the PTE writable in place (finish_mkwrite_fault, which
		 * checks the PTE is unchanged). An invalidation after this
		 * point zaps the writable PTE before T can free the page.
		 */
		return pfn == pte_pfn(vmf->orig_pte) ? 0 : VM_FAULT_NOPAGE;
	case PIDFD_MEM_FAULT_PMD:
#ifdef PIDFD_MEM_HAVE_HUGE_PFNMAP
		/* Read-only: a write splits it and faults one page (C2). */
		return vmf_insert_pfn_pmd(vmf, pfn_to_pfn_t(pfn), false);
#else
		return VM_FAULT_FALLBACK;
#endif
	default:
		/*
		 * One page table walk and one PTL for the whole window. The
		 * page table exists (made before), so this allocates nothing.
		 */
		if (apply_to_page_range(vma->vm_mm, start, end - start,
					pidfd_mem_fill_pte, &fill))
			return VM_FAULT_SIGBUS;
		return VM_FAULT_NOPAGE;
	}
}

static vm_fault_t pidfd_mem_mirror_handle(struct vm_fault *vmf,
					  enum pidfd_mem_fault kind)
{
	struct vm_area_struct *vma = vmf->vma;
	struct pidfd_mem *ctx = vma->vm_file->private_data;
	struct mm_struct *mm = ctx->mm;
	unsigned long pfns[PIDFD_MEM_FAULT_MAX];
	unsigned long addr = vmf->address & PAGE_MASK;
	u64 off = (u64)vmf->pgoff << PAGE_SHIFT;
	bool write = kind == PIDFD_MEM_FAULT_WRITE ||
		     kind == PIDFD_MEM_FAULT_MKWRITE;
	struct pidfd_mem_grant *grant;
	struct hmm_range range = {};
	unsigned long start, end, taddr, idx, npages;
	bool self = vma->vm_mm == mm;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	int err;

	grant = pidfd_mem_grant_get(ctx, off);
	if (!grant)
		return VM_FAULT_SIGBUS;
	if (write && !(grant->prot & PIDFD_MEM_PROT_WRITE))
		goto put_grant;
	if (!pidfd_mem_mirror_window(vmf, grant, off, kind, &start, &end)) {
		ret = VM_FAULT_FALLBACK;
		goto put_grant;
	}
	if (!mmget_not_zero(mm))
		goto put_grant;

	/* T is looked up page by page; a huge fault needs only the one asked. */
	npages = kind == PIDFD_MEM_FAULT_PMD ? 1 : (end - start) >> PAGE_SHIFT;
	idx = kind == PIDFD_MEM_FAULT_PMD ? 0 : (addr - start) >> PAGE_SHIFT;
	taddr = grant->address + (off - grant->offset);

	/*
	 * Make sure the mapper's page table exists now: filling PTEs
	 * under ctx->lock must not allocate, since reclaim may call our
	 * invalidate callback, which takes ctx->lock.
	 */
	if ((kind == PIDFD_MEM_FAULT_READ || kind == PIDFD_MEM_FAULT_WRITE) &&
	    pmd_none(*vmf->pmd) &&
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
		/* pfn_mkwrite cannot retry: the store faults again at once. */
		if (kind == PIDFD_MEM_FAULT_MKWRITE) {
			ret = VM_FAULT_NOPAGE;
			goto put_mm;
		}
		/* The PTE path waits for T's lock. */
		if (kind == PIDFD_MEM_FAULT_PMD) {
			ret = VM_FAULT_FALLBACK;
			goto put_mm;
		}
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
		range.start = taddr - (idx << PAGE_SHIFT);
		range.end = range.start + (npages << PAGE_SHIFT);
		range.default_flags = 0;
		err = hmm_range_fault(&range);
		/* T changed the page between the walks: start again. */
		if (!err && (!(pfns[idx] & HMM_PFN_VALID) ||
			     (write && !(pfns[idx] & HMM_PFN_WRITE))))
			err = -EBUSY;
	} while (err == -EBUSY);
	if (!self)
		mmap_read_unlock(mm);
	if (err) {
		ret = err == -ENOMEM ? VM_FAULT_OOM : VM_FAULT_SIGBUS;
		goto put_mm;
	}
	/* A huge fault needs T's page to be a huge page, whole and aligned. */
	if (kind == PIDFD_MEM_FAULT_PMD) {
		idx = (addr - start) >> PAGE_SHIFT;
		if (hmm_pfn_to_map_order(pfns[0]) < PMD_SHIFT - PAGE_SHIFT ||
		    !IS_ALIGNED((pfns[0] & ~HMM_PFN_FLAGS) - idx,
				1UL << (PMD_SHIFT - PAGE_SHIFT))) {
			ret = VM_FAULT_FALLBACK;
			goto put_mm;
		}
		/* From here pfns[0] is the first pfn of the PMD. */
		pfns[0] = (pfns[0] & ~HMM_PFN_FLAGS) - idx;
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
	ret = pidfd_mem_mirror_install(vmf, kind, pfns, start, end,
				       kind == PIDFD_MEM_FAULT_PMD ? 0 : idx);
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
	return pidfd_mem_mirror_handle(vmf, vmf->flags & FAULT_FLAG_WRITE ?
					    PIDFD_MEM_FAULT_WRITE :
					    PIDFD_MEM_FAULT_READ);
}

/*
 * First write to a page mapped read-only by a read fault: T's write fault
 * first (C2), then the PTE is made writable where it is. Dropping it instead
 * would livelock a CPU that does a read-modify-write as a load and a store
 * (the load would fault the page back read-only every time).
 */
static vm_fault_t pidfd_mem_mirror_pfn_mkwrite(struct vm_fault *vmf)
{
	return pidfd_mem_mirror_handle(vmf, PIDFD_MEM_FAULT_MKWRITE);
}

#ifdef PIDFD_MEM_HAVE_HUGE_PFNMAP
/*
 * Map T's huge page whole (contract section 9) when T maps it with a PMD at
 * the same 2 MiB phase as the mirror. Only read faults of whole PMDs under
 * the mapper's mmap_lock (the rule for a mapper that is T): everything else
 * falls back to the PTE path, which splits a huge mirror entry on write.
 */
static vm_fault_t pidfd_mem_mirror_huge_fault(struct vm_fault *vmf,
					      unsigned int order)
{
	if (order != PMD_ORDER ||
	    (vmf->flags & (FAULT_FLAG_WRITE | FAULT_FLAG_VMA_LOCK)))
		return VM_FAULT_FALLBACK;
	return pidfd_mem_mirror_handle(vmf, PIDFD_MEM_FAULT_PMD);
}
#endif

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
#ifdef PIDFD_MEM_HAVE_HUGE_PFNMAP
	.huge_fault = pidfd_mem_mirror_huge_fault,
#endif
	.access = pidfd_mem_mirror_access,
};

bool pidfd_mem_is_mirror(struct vm_area_struct *vma)
{
	return vma->vm_ops == &pidfd_mem_mirror_ops;
}

static bool pidfd_mem_noop_invalidate(struct mmu_interval_notifier *mni,
				      const struct mmu_notifier_range *range,
				      unsigned long cur_seq)
{
	return true;
}

static const struct mmu_interval_notifier_ops pidfd_mem_noop_ops = {
	.invalidate = pidfd_mem_noop_invalidate,
};

/* Whether @mm maps a mirror already. Called with its mmap_lock held. */
static bool pidfd_mem_mm_has_mirror(struct mm_struct *mm)
{
	VMA_ITERATOR(vmi, mm, 0);
	struct vm_area_struct *vma;

	for_each_vma(vmi, vma) {
		if (pidfd_mem_is_mirror(vma))
			return true;
	}
	return false;
}

/*
 * Make sure the mapper's mm has interval notifiers registered before its
 * first mirror appears, so that no later OPEN or MAP on this mm registers
 * one: registering runs mm_take_all_locks(), which would take the access
 * inode's i_mmap_rwsem of every mirror here before files' and anon_vmas'
 * locks, the reverse of our zap (DESIGN.md, known limits). Inserting an
 * interval notifier registers them once per mm; with the mmap_lock held for
 * write, as in ->mmap, the _locked form applies. The notifier itself is
 * removed at once. Once the mm maps a mirror this is either done, or the
 * mirrors came by fork into an mm that never registered, where registering
 * now would be the very hazard: both are left alone.
 */
static int pidfd_mem_mirror_prepare_mm(struct mm_struct *mm)
{
	struct mmu_interval_notifier probe = {};
	int ret;

	if (pidfd_mem_mm_has_mirror(mm))
		return 0;

	ret = mmu_interval_notifier_insert_locked(&probe, mm, 0, PAGE_SIZE,
						  &pidfd_mem_noop_ops);
	if (ret)
		return ret;
	mmu_interval_notifier_remove(&probe);
	return 0;
}

/* mmap() of the access fd (A1). */
int pidfd_mem_mirror_mmap(struct pidfd_mem *ctx, struct vm_area_struct *vma)
{
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	int ret;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (off > LLONG_MAX - len)
		return -EINVAL;
	if (pidfd_mem_grant_any_readonly(ctx, off, len)) {
		if (vma->vm_flags & VM_WRITE)
			return -EACCES;
		pidfd_mem_vm_flags_set(vma, 0, VM_MAYWRITE);
	}
	ret = pidfd_mem_mirror_prepare_mm(vma->vm_mm);
	if (ret)
		return ret;
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

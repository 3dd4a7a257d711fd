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
 *
 * Each mirror VMA has a struct pidfd_mem_mirror (vm_private_data) on its
 * ctx's list, through which the zap finds its PTEs; see internal.h for what
 * keeps the mapper's page tables alive meanwhile.
 */
#include <linux/debug_locks.h>
#include <linux/hmm.h>
#include <linux/mman.h>
#include <linux/moduleparam.h>
#include <linux/pfn_t.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
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

/*
 * Tasks that are zapping mirror PTEs right now. Zapping a mirror runs the
 * mapper's own MMU notifiers; when the mapper is itself the target of a grant
 * (A6, or two processes mirroring each other) one of ours is called again from
 * inside the zap, for a range that lies in a mirror VMA. A mirror of a mirror
 * never holds a PTE (A7), so that nested call has nothing to drop: it returns
 * at once instead of recursing without bound.
 */
struct pidfd_mem_zapper {
	struct list_head node;
	struct task_struct *task;
};

static LIST_HEAD(pidfd_mem_zappers);
/* Protects pidfd_mem_zappers. */
static DEFINE_SPINLOCK(pidfd_mem_zappers_lock);

static bool pidfd_mem_zap_enter(struct pidfd_mem_zapper *self)
{
	struct pidfd_mem_zapper *z;
	bool nested = false;

	spin_lock(&pidfd_mem_zappers_lock);
	list_for_each_entry(z, &pidfd_mem_zappers, node) {
		if (z->task == current) {
			nested = true;
			break;
		}
	}
	if (!nested) {
		self->task = current;
		list_add(&self->node, &pidfd_mem_zappers);
	}
	spin_unlock(&pidfd_mem_zappers_lock);
	return !nested;
}

static void pidfd_mem_zap_exit(struct pidfd_mem_zapper *self)
{
	spin_lock(&pidfd_mem_zappers_lock);
	list_del(&self->node);
	spin_unlock(&pidfd_mem_zappers_lock);
}

#ifdef CONFIG_LOCKDEP
/*
 * The core wraps every invalidate_range_start() in one lockdep map. Zapping a
 * mirror from inside a notifier callback starts the mapper's invalidation,
 * which takes that map again: lockdep calls it recursion, although the two are
 * different address spaces (the seed deleted the map in its patch 3), and the
 * mapper's invalidations that wait for zaps (mirrors_lock) would look like an
 * inversion against the zaps' own. Rather than turn lockdep off, our callbacks
 * step out of the held map and back in, so that every real lock inside them
 * (mirrors_lock, page table locks, the mapper's notifiers) stays checked. The
 * map is not exported: find it among the locks this task holds.
 */
static struct lockdep_map *pidfd_mem_notifier_map(void)
{
	int i;

	/*
	 * Once lockdep has reported something it stops recording, and
	 * held_locks may then name locks inside objects freed since: walk it
	 * only while lockdep is live (there is no map to step out of otherwise).
	 */
	if (!READ_ONCE(debug_locks))
		return NULL;
	for (i = current->lockdep_depth - 1; i >= 0; i--) {
		struct lockdep_map *map = current->held_locks[i].instance;

		if (map && map->name &&
		    !strcmp(map->name, "mmu_notifier_invalidate_range_start"))
			return map;
	}
	return NULL;
}
#else
static struct lockdep_map *pidfd_mem_notifier_map(void)
{
	return NULL;
}
#endif

/*
 * Drop @m's PTEs that map mem[offset, offset+len). The range is inside the
 * VMA (internal.h), as zap_vma_ptes() requires.
 */
static void pidfd_mem_mirror_zap_one(struct pidfd_mem_mirror *m, u64 offset,
				     u64 len)
{
	u64 base = (u64)m->pgoff << PAGE_SHIFT;
	u64 lo = max(offset, base);
	u64 hi = min(offset + len, base + (m->end - m->start));

	if (lo >= hi)
		return;
	zap_vma_ptes(m->vma, m->start + (lo - base), hi - lo);
	/*
	 * A split that fails after ->open (6.1) empties the new VMA, then
	 * closes it: meanwhile its range is the old VMA's again, which the
	 * failing split keeps alive (it holds M's mmap_lock).
	 */
	if (unlikely(READ_ONCE(m->vma->vm_start) == READ_ONCE(m->vma->vm_end)) &&
	    m->split_from)
		zap_vma_ptes(m->split_from->vma, m->start + (lo - base),
			     hi - lo);
}

/*
 * Drop every mirror PTE of mem[offset, offset+len), in every mapper. Called
 * from T's invalidations (under whatever T's kernel holds: file and anon_vma
 * locks, page locks) and from UNMAP. It takes no lock of the mappers' but
 * their page table locks: mirrors_lock keeps the mirrors it walks alive, and
 * their page tables too (a mapper marks a mirror dead, waiting for this lock,
 * before it frees them).
 */
void pidfd_mem_mirror_zap(struct pidfd_mem *ctx, u64 offset, u64 len)
{
	struct pidfd_mem_zapper self;
	struct pidfd_mem_mirror *m;
	struct lockdep_map *map;

	if (!pidfd_mem_zap_enter(&self))
		return;
	map = pidfd_mem_notifier_map();
	if (map)
		lock_map_release(map);
	down_read(&ctx->mirrors_lock);
	list_for_each_entry(m, &ctx->mirrors, node) {
		if (m->watched && !m->dead)
			pidfd_mem_mirror_zap_one(m, offset, len);
	}
	up_read(&ctx->mirrors_lock);
	if (map)
		lock_map_acquire(map);
	pidfd_mem_zap_exit(&self);
}

/*
 * The mapper's side: M is about to unmap M[range) (munmap, mremap, mmap over
 * it, exit's unmap_vmas()), after which it may free the page tables there.
 * The mirror drops its PTEs in the range itself first, so that mremap moves
 * none (a zap racing the move could miss a PTE on its way), and once the
 * whole mirror is going, marks it dead, waiting for zaps under way. Nothing
 * else M does frees page tables of a mirror (VM_PFNMAP keeps khugepaged away;
 * VM_SPECIAL keeps mirrors from merging), and every other event is ignored:
 * among them the CLEAR of our own zaps.
 */
static bool pidfd_mem_mirror_invalidate(struct mmu_interval_notifier *mni,
					const struct mmu_notifier_range *range,
					unsigned long cur_seq)
{
	struct pidfd_mem_mirror *m =
		container_of(mni, struct pidfd_mem_mirror, notifier);
	struct pidfd_mem_zapper self;
	struct lockdep_map *map;
	unsigned long start, end;

	/*
	 * MMU_NOTIFY_RELEASE at exit comes before exit_mmap()'s unmap, whose
	 * UNMAP comes here before page tables go; until then zaps go on.
	 */
	if (range->event != MMU_NOTIFY_UNMAP)
		return true;
	/* M holds its mmap_lock (or is exiting): the range is stable. */
	start = max(range->start, m->start);
	end = min(range->end, m->end);
	if (start >= end)
		return true;
	/* The OOM reaper leaves VM_PFNMAP alone: never for a mirror. */
	if (!mmu_notifier_range_blockable(range))
		return false;

	map = pidfd_mem_notifier_map();
	if (map)
		lock_map_release(map);
	if (pidfd_mem_zap_enter(&self)) {
		zap_vma_ptes(m->vma, start, end - start);
		pidfd_mem_zap_exit(&self);
	}
	if (start == m->start && end == m->end) {
		down_write(&m->ctx->mirrors_lock);
		WRITE_ONCE(m->dead, true);
		up_write(&m->ctx->mirrors_lock);
	}
	if (map)
		lock_map_acquire(map);
	return true;
}

static const struct mmu_interval_notifier_ops pidfd_mem_mirror_notifier_ops = {
	.invalidate = pidfd_mem_mirror_invalidate,
};

/* Start watching @m: called with M's mmap_lock held for write. */
static int pidfd_mem_mirror_watch(struct pidfd_mem_mirror *m)
{
	int ret;

	ret = mmu_interval_notifier_insert_locked(&m->notifier, m->mm, m->start,
						  m->end - m->start,
						  &pidfd_mem_mirror_notifier_ops);
	if (ret)
		return ret;
	/*
	 * Inserted during an invalidation of M, the notifier waits on a
	 * deferred list until M has none running, and would miss an unmap
	 * meanwhile: wait until it is in place. M's invalidations never wait
	 * for its mmap_lock.
	 */
	mmu_interval_read_begin(&m->notifier);
	down_write(&m->ctx->mirrors_lock);
	WRITE_ONCE(m->watched, true);
	up_write(&m->ctx->mirrors_lock);
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
	pte_t old;

	if (!(hpfn & HMM_PFN_VALID) || (hpfn & HMM_PFN_ERROR))
		return 0;
	old = ptep_get(pte);
	if (!pte_none(old)) {
		/*
		 * The lookup is what T maps now: no invalidation ran since,
		 * and T cannot change its PTE before our callback, which
		 * waits for ctx->lock. A PTE of another page is one that a
		 * zap missed, and T may have freed that page.
		 */
		VM_WARN_ON_ONCE(pte_present(old) &&
				pte_pfn(old) != (hpfn & ~HMM_PFN_FLAGS));
		return 0;
	}
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
 * A mirror that is not watched yet (inherited by fork: the child's mm has no
 * notifier of ours) is watched before its first PTE. Inserting a notifier
 * needs M's mmap_lock for write: let go of the fault's lock, take it, and
 * let the access fault again.
 */
static vm_fault_t pidfd_mem_mirror_watch_late(struct vm_fault *vmf)
{
	struct mm_struct *mm = vmf->vma->vm_mm;
	unsigned long addr = vmf->address;
	struct vm_area_struct *vma;
	int ret = 0;

	if (!(vmf->flags & FAULT_FLAG_ALLOW_RETRY) ||
	    (vmf->flags & FAULT_FLAG_RETRY_NOWAIT) || !mmget_not_zero(mm))
		return VM_FAULT_SIGBUS;
	pidfd_mem_release_fault_lock(vmf);
	if (mmap_write_lock_killable(mm))
		goto put_mm;
	vma = vma_lookup(mm, addr);
	if (vma && pidfd_mem_is_mirror(vma)) {
		struct pidfd_mem_mirror *m = vma->vm_private_data;

		if (!m->watched)
			ret = pidfd_mem_mirror_watch(m);
	}
	mmap_write_unlock(mm);
put_mm:
	mmput_async(mm);
	if (ret == -ENOMEM)
		return VM_FAULT_OOM;
	/*
	 * -EINTR: a signal is pending. A user access returns to deliver it and
	 * faults again; a kernel access (copy_to_user) would only loop.
	 */
	if (ret && !(vmf->flags & FAULT_FLAG_USER))
		return VM_FAULT_SIGBUS;
	return VM_FAULT_RETRY;
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
	struct pidfd_mem_mirror *mirror = vma->vm_private_data;
	struct pidfd_mem *ctx = mirror->ctx;
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

	/*
	 * The mirror's state changes only under M's mmap_lock held for write,
	 * or once the VMA is unreachable (the core runs ->fault of a VMA
	 * without ->map_pages under the mmap_lock, never the per-VMA lock).
	 */
	if (unlikely(!READ_ONCE(mirror->watched))) {
		if (kind == PIDFD_MEM_FAULT_PMD)
			return VM_FAULT_FALLBACK;
		/* An unwatched mirror has no PTE to make writable. */
		if (kind == PIDFD_MEM_FAULT_MKWRITE)
			return VM_FAULT_SIGBUS;
		return pidfd_mem_mirror_watch_late(vmf);
	}
	/*
	 * Marked dead by an unmap that then failed (mremap moving the pages
	 * back): the VMA lives on, so do its page tables until M tells again.
	 */
	if (unlikely(READ_ONCE(mirror->dead))) {
		down_write(&ctx->mirrors_lock);
		WRITE_ONCE(mirror->dead, false);
		up_write(&ctx->mirrors_lock);
	}

	/* With M's mmap_lock held, no split is half done (internal.h). */
	VM_WARN_ON_ONCE(mirror->start != vma->vm_start ||
			mirror->end != vma->vm_end ||
			mirror->pgoff != vma->vm_pgoff);

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
	/*
	 * UNMAP revoked the grant meanwhile, maybe only to split it: let the
	 * access fault again, and find what grants the offset now (A2, U1).
	 */
	if (grant->revoked) {
		ret = VM_FAULT_NOPAGE;
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

/* A mirror of all of @vma, not listed, not watched. */
static struct pidfd_mem_mirror *pidfd_mem_mirror_new(struct pidfd_mem *ctx,
						     struct vm_area_struct *vma,
						     gfp_t gfp)
{
	struct pidfd_mem_mirror *m = kzalloc(sizeof(*m), gfp);

	if (!m)
		return NULL;
	m->ctx = ctx;
	m->vma = vma;
	m->mm = vma->vm_mm;
	m->start = vma->vm_start;
	m->end = vma->vm_end;
	m->pgoff = vma->vm_pgoff;
	return m;
}

static void pidfd_mem_mirror_add(struct pidfd_mem_mirror *m)
{
	down_write(&m->ctx->mirrors_lock);
	list_add(&m->node, &m->ctx->mirrors);
	up_write(&m->ctx->mirrors_lock);
}

/*
 * A new VMA copied from a mirror's (vm_private_data is still @from's): the
 * new part of a split, the destination of mremap, or a fork child's copy.
 * None of these may fail, so neither may the allocation.
 */
static void pidfd_mem_mirror_open(struct vm_area_struct *vma)
{
	struct pidfd_mem_mirror *from = vma->vm_private_data;
	struct pidfd_mem *ctx = from->ctx;
	struct pidfd_mem_mirror *m;

	m = pidfd_mem_mirror_new(ctx, vma, GFP_KERNEL | __GFP_NOFAIL);
	vma->vm_private_data = m;

	if (m->mm != from->mm) {
		/*
		 * Fork: the child's mm has no notifier of ours, so its copy
		 * must hold no PTE until it is watched (at its first fault).
		 * Newer kernels call us before copying page tables and skip
		 * the copy for VM_WIPEONFORK; 6.1 copies first, so zap it.
		 */
		pidfd_mem_vm_flags_set(vma, VM_WIPEONFORK, 0);
		zap_vma_ptes(vma, m->start, m->end - m->start);
		pidfd_mem_mirror_add(m);
		return;
	}
	/* Same mm: it has our notifiers already, inserting cannot fail. */
	WARN_ON_ONCE(from->watched && pidfd_mem_mirror_watch(m));

	down_write(&ctx->mirrors_lock);
	if (m->start >= from->start && m->end <= from->end) {
		/*
		 * A split: @from keeps the other part. Shrink its range now,
		 * before the core moves the old VMA's bounds, so that it stays
		 * inside them.
		 */
		if (m->start == from->start) {
			from->pgoff += (m->end - m->start) >> PAGE_SHIFT;
			from->start = m->end;
		} else {
			from->end = m->start;
		}
		m->split_from = from;
	}
	list_add(&m->node, &ctx->mirrors);
	up_write(&ctx->mirrors_lock);
}

static void pidfd_mem_mirror_close(struct vm_area_struct *vma)
{
	struct pidfd_mem_mirror *m = vma->vm_private_data;
	struct pidfd_mem_mirror *from = m->split_from;

	down_write(&m->ctx->mirrors_lock);
	list_del(&m->node);
	/*
	 * A split that failed after ->open (6.1's __split_vma() empties the
	 * new VMA first): the old one keeps its whole range, give it back.
	 */
	if (vma->vm_start == vma->vm_end && from) {
		if (m->end == from->start) {
			from->start = m->start;
			from->pgoff = m->pgoff;
		} else if (m->start == from->end) {
			from->end = m->end;
		}
	}
	up_write(&m->ctx->mirrors_lock);
	/* After this no callback of the notifier runs. */
	if (m->watched)
		mmu_interval_notifier_remove(&m->notifier);
	kfree(m);
}

static const struct vm_operations_struct pidfd_mem_mirror_ops = {
	.open = pidfd_mem_mirror_open,
	.close = pidfd_mem_mirror_close,
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

/* mmap() of the access fd (A1). */
int pidfd_mem_mirror_mmap(struct pidfd_mem *ctx, struct vm_area_struct *vma)
{
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	struct pidfd_mem_mirror *m;
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
	m = pidfd_mem_mirror_new(ctx, vma, GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	/* The VMA is not in the mm yet; the first one registers the mm. */
	ret = pidfd_mem_mirror_watch(m);
	if (ret) {
		kfree(m);
		return ret;
	}
	/* VM_SPECIAL: never merged, so a mirror never grows behind our back. */
	pidfd_mem_vm_flags_set(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP, 0);
	vma->vm_private_data = m;
	vma->vm_ops = &pidfd_mem_mirror_ops;
	pidfd_mem_mirror_add(m);
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

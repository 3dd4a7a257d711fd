// SPDX-License-Identifier: GPL-2.0
/*
 * A grant: one window mem[offset, offset+size) over T[address, address+size),
 * kept coherent by an mmu_interval_notifier on T's mm (contract C3, C4).
 *
 * The discipline is the one of mm/hmm.c and lib/test_hmm.c: a fault samples
 * the notifier sequence, looks T's pages up with hmm_range_fault(), then
 * installs PTEs under ctx->lock only if no invalidation ran meanwhile; an
 * invalidation bumps the sequence under ctx->lock, then zaps every mirror PTE
 * of the range in every mapper (pidfd_mem_mirror_zap), all before T's kernel
 * may free or reuse the pages.
 */
#include <linux/maple_tree.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>

#include "internal.h"

#ifdef CONFIG_PER_VMA_LOCK
/*
 * Whether T[start, end) lies inside one mirror VMA of T. A mirror of a mirror
 * never maps anything (A7), so such a range has nothing to zap. Since 6.4 the
 * kernel invalidates such ranges when it splits a mirror of a process that is
 * a target (vma_adjust_trans_huge() on the split), which is skipped here.
 *
 * The caller may hold no lock of T's: on these kernels VMAs are freed after
 * an RCU grace period, so the lookup is done under RCU, as the kernel's own
 * per-VMA-lock fault path does. A stale answer cannot hide real memory: T's
 * page under an invalidation was mapped after its VMA was in the tree.
 */
static bool pidfd_mem_range_in_mirror(struct mm_struct *mm,
				      unsigned long start, unsigned long end)
{
	struct vm_area_struct *vma;
	bool in;

	rcu_read_lock();
	vma = mtree_load(&mm->mm_mt, start);
	in = vma && vma->vm_mm == mm && pidfd_mem_is_mirror(vma) &&
	     READ_ONCE(vma->vm_start) <= start &&
	     end <= READ_ONCE(vma->vm_end);
	rcu_read_unlock();
	return in;
}
#else
/* Before 6.4 splitting a mirror invalidates nothing inside it. */
static bool pidfd_mem_range_in_mirror(struct mm_struct *mm,
				      unsigned long start, unsigned long end)
{
	return false;
}
#endif

static bool pidfd_mem_grant_invalidate(struct mmu_interval_notifier *mni,
				       const struct mmu_notifier_range *range,
				       unsigned long cur_seq)
{
	struct pidfd_mem_grant *grant =
		container_of(mni, struct pidfd_mem_grant, notifier);
	struct pidfd_mem *ctx = grant->ctx;
	u64 start, end;

	/*
	 * Zapping the mappers' page tables sleeps (mirrors_lock). The OOM
	 * reaper's non-blockable call is answered "no": it then leaves this
	 * memory to exit_mmap(), whose blockable call comes here again.
	 */
	if (!mmu_notifier_range_blockable(range))
		return false;

	mutex_lock(&ctx->lock);
	mmu_interval_set_seq(mni, cur_seq);
	mutex_unlock(&ctx->lock);

	start = max_t(u64, range->start, grant->address);
	end = min_t(u64, range->end, grant->address + grant->size);
	if (start < end && !pidfd_mem_range_in_mirror(ctx->mm, start, end))
		pidfd_mem_mirror_zap(ctx,
				     grant->offset + (start - grant->address),
				     end - start);
	return true;
}

static const struct mmu_interval_notifier_ops pidfd_mem_grant_ops = {
	.invalidate = pidfd_mem_grant_invalidate,
};

static void pidfd_mem_grant_release(struct kref *kref)
{
	struct pidfd_mem_grant *grant =
		container_of(kref, struct pidfd_mem_grant, kref);

	if (grant->watched)
		mmu_interval_notifier_remove(&grant->notifier);
	kfree(grant);
}

void pidfd_mem_grant_put(struct pidfd_mem_grant *grant)
{
	kref_put(&grant->kref, pidfd_mem_grant_release);
}

/*
 * Allocates a grant and starts its notifier. Called without ctx->lock. Once
 * T's address space is gone there is nothing to watch: MAP then fails
 * (ESRCH, M1), but the remainders of a grant that UNMAP splits are made
 * unwatched (@dead_ok), since UNMAP does not fail for a dead T (U1) and no
 * fault or copy can reach T any more. Gone means no users: T's teardown may
 * still be to come, and the caller must then drop the remainders' PTEs.
 */
static struct pidfd_mem_grant *pidfd_mem_grant_new(struct pidfd_mem *ctx,
						   u64 address, u64 offset,
						   u64 size, u32 prot,
						   bool dead_ok)
{
	struct pidfd_mem_grant *grant;
	int ret;

	grant = kzalloc(sizeof(*grant), GFP_KERNEL);
	if (!grant)
		return ERR_PTR(-ENOMEM);
	grant->ctx = ctx;
	grant->address = address;
	grant->offset = offset;
	grant->size = size;
	grant->prot = prot;
	grant->node.start = offset;
	grant->node.last = offset + size - 1;
	kref_init(&grant->kref);

	if (!mmget_not_zero(ctx->mm)) {
		if (dead_ok)
			return grant;
		ret = -ESRCH;
		goto free_grant;
	}
	ret = mmu_interval_notifier_insert(&grant->notifier, ctx->mm, address,
					   size, &pidfd_mem_grant_ops);
	mmput(ctx->mm);
	if (ret)
		goto free_grant;
	grant->watched = true;
	return grant;

free_grant:
	kfree(grant);
	return ERR_PTR(ret);
}

/* Called with ctx->lock held. */
struct pidfd_mem_grant *pidfd_mem_grant_find(struct pidfd_mem *ctx, u64 offset)
{
	struct interval_tree_node *node;

	lockdep_assert_held(&ctx->lock);
	node = interval_tree_iter_first(&ctx->grants, offset, offset);
	return node ? container_of(node, struct pidfd_mem_grant, node) : NULL;
}

/* The grant covering @offset, with a reference, or NULL. */
struct pidfd_mem_grant *pidfd_mem_grant_get(struct pidfd_mem *ctx, u64 offset)
{
	struct pidfd_mem_grant *grant;

	mutex_lock(&ctx->lock);
	grant = pidfd_mem_grant_find(ctx, offset);
	if (grant)
		kref_get(&grant->kref);
	mutex_unlock(&ctx->lock);
	return grant;
}

bool pidfd_mem_grant_any_readonly(struct pidfd_mem *ctx, u64 offset, u64 len)
{
	struct interval_tree_node *node;
	bool ro = false;

	mutex_lock(&ctx->lock);
	for (node = interval_tree_iter_first(&ctx->grants, offset,
					     offset + len - 1);
	     node; node = interval_tree_iter_next(node, offset, offset + len - 1)) {
		struct pidfd_mem_grant *g =
			container_of(node, struct pidfd_mem_grant, node);

		if (!(g->prot & PIDFD_MEM_PROT_WRITE)) {
			ro = true;
			break;
		}
	}
	mutex_unlock(&ctx->lock);
	return ro;
}

/* PIDFD_MEM_MAP (M1). Called with ctx->ctl_lock held. */
int pidfd_mem_grant_map(struct pidfd_mem *ctx, u64 address, u64 offset,
			u64 size, u32 prot)
{
	struct pidfd_mem_grant *grant;

	lockdep_assert_held(&ctx->ctl_lock);
	/* Only MAP and UNMAP change the tree, under ctl_lock: no race here. */
	mutex_lock(&ctx->lock);
	if (interval_tree_iter_first(&ctx->grants, offset, offset + size - 1)) {
		mutex_unlock(&ctx->lock);
		return -EEXIST;
	}
	mutex_unlock(&ctx->lock);

	grant = pidfd_mem_grant_new(ctx, address, offset, size, prot, false);
	if (IS_ERR(grant))
		return PTR_ERR(grant);

	mutex_lock(&ctx->lock);
	interval_tree_insert(&grant->node, &ctx->grants);
	mutex_unlock(&ctx->lock);
	return 0;
}

#define PIDFD_MEM_UNMAP_BATCH 16

/*
 * PIDFD_MEM_UNMAP (U1): revoke mem[offset, offset+size), splitting the grants
 * that straddle its edges. Called with ctx->ctl_lock held.
 */
int pidfd_mem_grant_unmap(struct pidfd_mem *ctx, u64 offset, u64 size)
{
	struct pidfd_mem_grant *head = NULL, *tail = NULL, *g;
	struct pidfd_mem_grant *gone[PIDFD_MEM_UNMAP_BATCH];
	struct interval_tree_node *node;
	u64 last = offset + size - 1;
	u64 zap_lo = offset, zap_hi = offset + size;
	int n, i, ret = 0;

	lockdep_assert_held(&ctx->ctl_lock);

	/*
	 * The remainders of straddling grants are made first, outside
	 * ctx->lock (starting a notifier may allocate), so that their notifiers
	 * already watch T when the old grants stop doing so.
	 */
	mutex_lock(&ctx->lock);
	node = interval_tree_iter_first(&ctx->grants, offset, offset);
	g = node ? container_of(node, struct pidfd_mem_grant, node) : NULL;
	if (g)
		kref_get(&g->kref);
	node = interval_tree_iter_first(&ctx->grants, last, last);
	tail = node ? container_of(node, struct pidfd_mem_grant, node) : NULL;
	if (tail)
		kref_get(&tail->kref);
	mutex_unlock(&ctx->lock);

	if (g && g->offset < offset) {
		head = pidfd_mem_grant_new(ctx, g->address, g->offset,
					   offset - g->offset, g->prot, true);
		if (IS_ERR(head)) {
			ret = PTR_ERR(head);
			head = NULL;
		}
	}
	if (g)
		pidfd_mem_grant_put(g);
	g = tail;
	tail = NULL;
	if (!ret && g && g->offset + g->size - 1 > last) {
		u64 cut = last + 1 - g->offset;

		tail = pidfd_mem_grant_new(ctx, g->address + cut, last + 1,
					   g->size - cut, g->prot, true);
		if (IS_ERR(tail)) {
			ret = PTR_ERR(tail);
			tail = NULL;
		}
	}
	if (g)
		pidfd_mem_grant_put(g);
	if (ret)
		goto put_remainders;
	/*
	 * A remainder made once T has no users is not watched, and the old
	 * grant's notifier goes with the old grant. T's teardown may still be
	 * to come (exit_mmap() queued by an mmput_async()): it would find no
	 * notifier of ours to call before it frees the pages that the
	 * remainder's mirror PTEs map. Drop those PTEs here; no fault can
	 * install them again.
	 */
	if (head && !head->watched)
		zap_lo = head->offset;
	if (tail && !tail->watched)
		zap_hi = tail->offset + tail->size;

	/* Revoke in batches: the notifiers are removed outside ctx->lock. */
	do {
		n = 0;
		mutex_lock(&ctx->lock);
		while (n < PIDFD_MEM_UNMAP_BATCH &&
		       (node = interval_tree_iter_first(&ctx->grants, offset, last))) {
			g = container_of(node, struct pidfd_mem_grant, node);
			interval_tree_remove(node, &ctx->grants);
			g->revoked = true;
			gone[n++] = g;
		}
		if (head) {
			interval_tree_insert(&head->node, &ctx->grants);
			head = NULL;
		}
		if (tail) {
			interval_tree_insert(&tail->node, &ctx->grants);
			tail = NULL;
		}
		mutex_unlock(&ctx->lock);

		/* No fault can install a PTE of a revoked grant from here on. */
		if (n)
			pidfd_mem_mirror_zap(ctx, zap_lo, zap_hi - zap_lo);
		for (i = 0; i < n; i++)
			pidfd_mem_grant_put(gone[i]);
	} while (n == PIDFD_MEM_UNMAP_BATCH);
	return 0;

put_remainders:
	if (head)
		pidfd_mem_grant_put(head);
	if (tail)
		pidfd_mem_grant_put(tail);
	return ret;
}

/* Called when the last file goes: no fault or ioctl can run any more. */
void pidfd_mem_grant_destroy_all(struct pidfd_mem *ctx)
{
	struct interval_tree_node *node;

	while ((node = interval_tree_iter_first(&ctx->grants, 0, ULONG_MAX))) {
		struct pidfd_mem_grant *g =
			container_of(node, struct pidfd_mem_grant, node);

		interval_tree_remove(node, &ctx->grants);
		pidfd_mem_grant_put(g);
	}
}

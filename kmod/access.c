// SPDX-License-Identifier: GPL-2.0
/*
 * The access fd (mem) and the state it shares with the control fd.
 *
 * mem is a file on the module's own pseudo filesystem, with an inode of its
 * own; ctx->mirrors lists every mirror VMA in every mapper (fork children
 * included), which is what an invalidation or UNMAP zaps (mirror.c).
 * Reads and writes copy from and to T with T's own protections, as
 * process_vm_readv does (contract A3).
 */
#include <linux/file.h>
#include <linux/fs_context.h>
#include <linux/delay.h>
#include <linux/highmem.h>
#include <linux/module.h>
#include <linux/mount.h>
#include <linux/poll.h>
#include <linux/pseudo_fs.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uio.h>

#include "internal.h"

#define PIDFD_MEM_MAGIC 0x7069646d	/* "pidm" */
#define PIDFD_MEM_RW_STACK 16		/* pages pinned per copy step, at least */
#define PIDFD_MEM_RW_BATCH 512		/* and at most (as process_vm_readv) */

struct vfsmount *pidfd_mem_mnt;

static int pidfd_mem_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, PIDFD_MEM_MAGIC) ? 0 : -ENOMEM;
}

static struct file_system_type pidfd_mem_fs_type = {
	.name = "pidfd_mem",
	.init_fs_context = pidfd_mem_init_fs_context,
	.kill_sb = kill_anon_super,
};

int pidfd_mem_fs_init(void)
{
	pidfd_mem_mnt = kern_mount(&pidfd_mem_fs_type);
	return PTR_ERR_OR_ZERO(pidfd_mem_mnt);
}

void pidfd_mem_fs_exit(void)
{
	kern_unmount(pidfd_mem_mnt);
}

/*
 * The watch: an interval notifier over all of T, whose only job is to tell
 * when T's address space is torn down (exit or exec: L2, L4, A4), which is
 * the one invalidation with the event MMU_NOTIFY_RELEASE. An interval
 * notifier rather than a plain mmu_notifier, because registering a plain
 * one runs mm_take_all_locks() at every OPEN, while interval notifiers
 * register once per mm.
 */
static bool pidfd_mem_watch_invalidate(struct mmu_interval_notifier *mni,
				       const struct mmu_notifier_range *range,
				       unsigned long cur_seq)
{
	struct pidfd_mem *ctx = container_of(mni, struct pidfd_mem, watch);

	if (range->event == MMU_NOTIFY_RELEASE) {
		WRITE_ONCE(ctx->dead, true);
		wake_up_all(&ctx->wq);
	}
	return true;
}

static const struct mmu_interval_notifier_ops pidfd_mem_watch_ops = {
	.invalidate = pidfd_mem_watch_invalidate,
};

/* @mm must have users (the caller holds a get_task_mm() reference). */
struct pidfd_mem *pidfd_mem_create(struct mm_struct *mm)
{
	struct pidfd_mem *ctx;
	int ret;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return ERR_PTR(-ENOMEM);
	kref_init(&ctx->kref);
	mutex_init(&ctx->ctl_lock);
	mutex_init(&ctx->lock);
	init_rwsem(&ctx->mirrors_lock);
	INIT_LIST_HEAD(&ctx->mirrors);
	init_waitqueue_head(&ctx->wq);
	ctx->grants = RB_ROOT_CACHED;

	ctx->inode = alloc_anon_inode(pidfd_mem_mnt->mnt_sb);
	if (IS_ERR(ctx->inode)) {
		ret = PTR_ERR(ctx->inode);
		goto free_ctx;
	}
	/* T has users (ours): its release cannot have run yet. */
	ret = mmu_interval_notifier_insert(&ctx->watch, mm, 0, ULONG_MAX,
					   &pidfd_mem_watch_ops);
	if (ret)
		goto put_inode;
	mmgrab(mm);
	ctx->mm = mm;
	return ctx;

put_inode:
	iput(ctx->inode);
free_ctx:
	kfree(ctx);
	return ERR_PTR(ret);
}

static void pidfd_mem_release_ctx(struct kref *kref)
{
	struct pidfd_mem *ctx = container_of(kref, struct pidfd_mem, kref);

	/* Every mirror VMA holds the access file. */
	WARN_ON(!list_empty(&ctx->mirrors));
	pidfd_mem_grant_destroy_all(ctx);
	mmu_interval_notifier_remove(&ctx->watch);
	mmdrop(ctx->mm);
	iput(ctx->inode);
	kfree(ctx);
}

void pidfd_mem_put(struct pidfd_mem *ctx)
{
	kref_put(&ctx->kref, pidfd_mem_release_ctx);
}

/*
 * Take T's mmap_lock for a copy. Nested under a mapper's mmap_lock (ptrace
 * through a mirror, A8) it is only tried, never awaited, for a bounded time:
 * when T and the mapper mirror each other, waiting could deadlock against
 * writers queued on both, and lockdep rightly calls it recursion.
 */
static int pidfd_mem_rw_lock_mm(struct mm_struct *mm, enum pidfd_mem_rw_lock how)
{
	int tries;

	switch (how) {
	case PIDFD_MEM_RW_LOCKED:
		return 0;
	case PIDFD_MEM_RW_UNLOCKED:
		return mmap_read_lock_killable(mm) ? -EINTR : 0;
	case PIDFD_MEM_RW_NESTED:
		for (tries = 0; tries < 100; tries++) {
			if (mmap_read_trylock(mm))
				return 0;
			if (fatal_signal_pending(current))
				return -EINTR;
			usleep_range(500, 1000);
		}
		return -EAGAIN;
	}
	return -EINVAL;
}

/*
 * Copy between T and @iter at mem offset @pos, with T's own protections.
 * Returns the bytes copied, or an error when not even the first byte could be:
 * -EIO (no grant, hole, no access in T), -EACCES (write in a read-only
 * grant), -ESRCH (T's address space is gone). @how: how T's mmap_lock is
 * taken (see enum pidfd_mem_rw_lock).
 */
ssize_t pidfd_mem_rw(struct pidfd_mem *ctx, u64 pos, struct iov_iter *iter,
		     bool write, enum pidfd_mem_rw_lock how)
{
	bool mm_locked = how == PIDFD_MEM_RW_LOCKED;
	struct page *stack_pages[PIDFD_MEM_RW_STACK], **pages = stack_pages;
	unsigned long batch = PIDFD_MEM_RW_STACK;
	struct mm_struct *mm = ctx->mm;
	ssize_t done = 0;
	int err = 0;

	if (!mm_locked && !mmget_not_zero(mm))
		return -ESRCH;

	/* Large copies pin more pages per step: fewer trips through T's lock. */
	if (iov_iter_count(iter) > PIDFD_MEM_RW_STACK * PAGE_SIZE) {
		unsigned long want = min_t(unsigned long, PIDFD_MEM_RW_BATCH,
					   DIV_ROUND_UP(iov_iter_count(iter), PAGE_SIZE) + 1);
		struct page **p = kmalloc_array(want, sizeof(*p),
						GFP_KERNEL | __GFP_NOWARN);

		if (p) {
			pages = p;
			batch = want;
		}
	}

	while (iov_iter_count(iter) && !err) {
		struct pidfd_mem_grant *g;
		u64 addr, left, gend;
		unsigned int off;
		long npages, got, i;
		u32 prot;

		mutex_lock(&ctx->lock);
		g = pidfd_mem_grant_find(ctx, pos);
		if (g) {
			addr = g->address + (pos - g->offset);
			gend = g->offset + g->size;
			prot = g->prot;
		}
		mutex_unlock(&ctx->lock);
		if (!g) {
			err = -EIO;
			break;
		}
		if (write && !(prot & PIDFD_MEM_PROT_WRITE)) {
			err = -EACCES;
			break;
		}

		left = min_t(u64, iov_iter_count(iter), gend - pos);
		off = offset_in_page(addr);
		npages = min_t(u64, DIV_ROUND_UP(off + left, PAGE_SIZE), batch);

		err = pidfd_mem_rw_lock_mm(mm, how);
		if (err)
			break;
		/*
		 * Pinned (FOLL_PIN), as process_vm_rw() does: a fork of T while
		 * we copy then gives the child its own copy of an anonymous
		 * page instead of sharing the one being written (C2, A3).
		 */
#ifdef PIDFD_MEM_HAVE_GUP_VMAS
		got = pin_user_pages_remote(mm, addr & PAGE_MASK, npages,
					    write ? FOLL_WRITE : 0, pages,
					    NULL, NULL);
#else
		got = pin_user_pages_remote(mm, addr & PAGE_MASK, npages,
					    write ? FOLL_WRITE : 0, pages, NULL);
#endif
		if (!mm_locked)
			mmap_read_unlock(mm);
		if (got <= 0) {
			err = (got == -ENOMEM || got == -EINTR) ? got : -EIO;
			break;
		}

		/* Copy with T's mmap_lock dropped: the user buffer may fault. */
		for (i = 0; i < got; i++) {
			size_t chunk = min_t(u64, PAGE_SIZE - off, left);
			size_t copied = 0;

			if (!err) {
				if (write)
					copied = copy_page_from_iter(pages[i], off,
								     chunk, iter);
				else
					copied = copy_page_to_iter(pages[i], off,
								   chunk, iter);
				done += copied;
				pos += copied;
				left -= copied;
				if (copied < chunk)
					err = -EFAULT;
			}
			unpin_user_pages_dirty_lock(&pages[i], 1,
						    write && copied);
			off = 0;
		}
	}

	if (pages != stack_pages)
		kfree(pages);
	if (!mm_locked)
		mmput(mm);
	return done ? done : err;
}

static ssize_t pidfd_mem_access_read_iter(struct kiocb *iocb,
					  struct iov_iter *to)
{
	struct pidfd_mem *ctx = iocb->ki_filp->private_data;
	ssize_t ret;

	if (iocb->ki_pos < 0)
		return -EINVAL;
	ret = pidfd_mem_rw(ctx, iocb->ki_pos, to, false, PIDFD_MEM_RW_UNLOCKED);
	if (ret > 0)
		iocb->ki_pos += ret;
	return ret;
}

static ssize_t pidfd_mem_access_write_iter(struct kiocb *iocb,
					   struct iov_iter *from)
{
	struct pidfd_mem *ctx = iocb->ki_filp->private_data;
	ssize_t ret;

	if (iocb->ki_pos < 0)
		return -EINVAL;
	ret = pidfd_mem_rw(ctx, iocb->ki_pos, from, true, PIDFD_MEM_RW_UNLOCKED);
	if (ret > 0)
		iocb->ki_pos += ret;
	return ret;
}

static __poll_t pidfd_mem_access_poll(struct file *file,
				      struct poll_table_struct *wait)
{
	struct pidfd_mem *ctx = file->private_data;

	poll_wait(file, &ctx->wq, wait);
	return READ_ONCE(ctx->dead) ? EPOLLHUP : 0;
}

static int pidfd_mem_access_mmap(struct file *file, struct vm_area_struct *vma)
{
	return pidfd_mem_mirror_mmap(file->private_data, vma);
}

static unsigned long pidfd_mem_access_get_unmapped_area(struct file *file,
							unsigned long addr,
							unsigned long len,
							unsigned long pgoff,
							unsigned long flags)
{
	return pidfd_mem_mirror_get_unmapped_area(file->private_data, file,
						  addr, len, pgoff, flags);
}

static long pidfd_mem_access_ioctl(struct file *file, unsigned int cmd,
				   unsigned long arg)
{
	return -ENOTTY;
}

static int pidfd_mem_access_release(struct inode *inode, struct file *file)
{
	pidfd_mem_put(file->private_data);
	return 0;
}

static const struct file_operations pidfd_mem_access_fops = {
	.owner = THIS_MODULE,
	.llseek = no_seek_end_llseek,
	.read_iter = pidfd_mem_access_read_iter,
	.write_iter = pidfd_mem_access_write_iter,
	.poll = pidfd_mem_access_poll,
	.mmap = pidfd_mem_access_mmap,
	.get_unmapped_area = pidfd_mem_access_get_unmapped_area,
	.unlocked_ioctl = pidfd_mem_access_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = pidfd_mem_access_release,
};

bool pidfd_mem_is_access_file(struct file *file)
{
	return file->f_op == &pidfd_mem_access_fops;
}

/* A new access file that holds a reference on @ctx. */
struct file *pidfd_mem_access_file(struct pidfd_mem *ctx)
{
	struct file *file;

	/* The file's f_op->owner reference, put by __fput(). */
	__module_get(THIS_MODULE);
	ihold(ctx->inode);
	file = alloc_file_pseudo(ctx->inode, pidfd_mem_mnt, "pidfd_mem",
				 O_RDWR, &pidfd_mem_access_fops);
	if (IS_ERR(file)) {
		iput(ctx->inode);
		module_put(THIS_MODULE);
		return file;
	}
	file->f_mode |= FMODE_PREAD | FMODE_PWRITE;
#ifdef FMODE_LSEEK
	file->f_mode |= FMODE_LSEEK;
#endif
	kref_get(&ctx->kref);
	file->private_data = ctx;
	return file;
}

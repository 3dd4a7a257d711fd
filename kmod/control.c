// SPDX-License-Identifier: GPL-2.0
/*
 * The control fd (ctl): PIDFD_MEM_MAP, PIDFD_MEM_UNMAP and PIDFD_MEM_LOCK
 * (contract M1, U1, K1, K2). It is a capability: whoever holds it may change
 * the grants until LOCK (P2). Closing it leaves the grants as they are.
 */
#include <linux/anon_inodes.h>
#include <linux/limits.h>
#include <linux/uaccess.h>

#include "internal.h"

static bool pidfd_mem_window_ok(s64 offset, s64 size)
{
	return offset >= 0 && size > 0 && PAGE_ALIGNED(offset) &&
	       PAGE_ALIGNED(size) && offset <= LLONG_MAX - size;
}

static long pidfd_mem_control_map(struct pidfd_mem *ctx,
				  struct pidfd_mem_map __user *uarg)
{
	struct pidfd_mem_map map;
	long ret;
	int i;

	if (copy_from_user(&map, uarg, sizeof(map)))
		return -EFAULT;
	for (i = 0; i < ARRAY_SIZE(map.padding); i++)
		if (map.padding[i])
			return -EINVAL;
	if (map.flags != PIDFD_MEM_PROT_READ &&
	    map.flags != (PIDFD_MEM_PROT_READ | PIDFD_MEM_PROT_WRITE))
		return -EINVAL;
	if (!pidfd_mem_window_ok(map.offset, map.size) ||
	    !PAGE_ALIGNED(map.address) ||
	    map.address > ctx->mm->task_size ||
	    map.size > ctx->mm->task_size - map.address)
		return -EINVAL;

	mutex_lock(&ctx->ctl_lock);
	if (ctx->locked)
		ret = -EPERM;
	else
		ret = pidfd_mem_grant_map(ctx, map.address, map.offset,
					  map.size, map.flags);
	mutex_unlock(&ctx->ctl_lock);
	return ret;
}

static long pidfd_mem_control_unmap(struct pidfd_mem *ctx,
				    struct pidfd_mem_unmap __user *uarg)
{
	struct pidfd_mem_unmap unmap;
	long ret;

	if (copy_from_user(&unmap, uarg, sizeof(unmap)))
		return -EFAULT;
	if (!pidfd_mem_window_ok(unmap.offset, unmap.size))
		return -EINVAL;

	mutex_lock(&ctx->ctl_lock);
	if (ctx->locked)
		ret = -EPERM;
	else
		ret = pidfd_mem_grant_unmap(ctx, unmap.offset, unmap.size);
	mutex_unlock(&ctx->ctl_lock);
	return ret;
}

static long pidfd_mem_control_ioctl(struct file *file, unsigned int cmd,
				    unsigned long arg)
{
	struct pidfd_mem *ctx = file->private_data;

	switch (cmd) {
	case PIDFD_MEM_MAP:
		return pidfd_mem_control_map(ctx, (void __user *)arg);
	case PIDFD_MEM_UNMAP:
		return pidfd_mem_control_unmap(ctx, (void __user *)arg);
	case PIDFD_MEM_LOCK:
		if (arg)
			return -EINVAL;
		mutex_lock(&ctx->ctl_lock);
		ctx->locked = true;
		mutex_unlock(&ctx->ctl_lock);
		return 0;
	default:
		return -ENOTTY;
	}
}

static int pidfd_mem_control_release(struct inode *inode, struct file *file)
{
	pidfd_mem_put(file->private_data);
	return 0;
}

static const struct file_operations pidfd_mem_control_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = pidfd_mem_control_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = pidfd_mem_control_release,
	.llseek = noop_llseek,
};

/* A new control file that holds a reference on @ctx. */
struct file *pidfd_mem_control_file(struct pidfd_mem *ctx)
{
	struct file *file;

	file = anon_inode_getfile("[pidfd_mem_ctl]", &pidfd_mem_control_fops,
				  ctx, O_RDWR);
	if (!IS_ERR(file))
		kref_get(&ctx->kref);
	return file;
}

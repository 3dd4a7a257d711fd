// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/pidfd_mem: PIDFD_MEM_OPEN stands for the pidfd_mem(pidfd, flags)
 * system call, which a module cannot add; REMOTE_PROC_MAP is the legacy
 * whole-address-space mode (contract O1-O3, R1, P1).
 *
 * Opening the device grants nothing: each call checks ptrace-attach rights
 * over T with the kernel's own decision (Yama and LSMs included), reached by
 * opening /proc/<T>/mem in the caller's context, since ptrace_may_access()
 * is not exported. The check runs with the caller's real uid and gid as its
 * fs ids, so that it is the PTRACE_MODE_ATTACH_REALCREDS rule of
 * process_vm_writev().
 */
#include <linux/anon_inodes.h>
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/uaccess.h>

#include "internal.h"

/* The inode every anon_inode file shares; a pidfd's private_data is its pid. */
static struct inode *pidfd_mem_anon_inode;

static struct pid *pidfd_mem_file_pid(struct file *file)
{
#ifdef PID_FS_MAGIC
	/* pidfs (6.9 and later) keeps the pid in the inode. */
	if (file_inode(file)->i_sb->s_magic == PID_FS_MAGIC)
		return file_inode(file)->i_private;
#endif
	if (file_inode(file) == pidfd_mem_anon_inode &&
	    !strcmp(file->f_path.dentry->d_name.name, "[pidfd]"))
		return file->private_data;
	return NULL;
}

/*
 * 0 when the caller may attach to @task and @mm is still its address space;
 * -EAGAIN when @task exec'd meanwhile.
 */
static int pidfd_mem_may_access(struct task_struct *task, struct mm_struct *mm)
{
	const struct cred *old;
	struct cred *cred;
	struct file *file;
	char path[32];
	pid_t nr;
	int ret;

	if (same_thread_group(task, current))
		return 0;
	nr = task_pid_vnr(task);
	if (!nr)
		return -ESRCH;	/* not visible in the caller's pid namespace */
	snprintf(path, sizeof(path), "/proc/%d/mem", nr);

	cred = prepare_creds();
	if (!cred)
		return -ENOMEM;
	cred->fsuid = cred->uid;
	cred->fsgid = cred->gid;
	old = override_creds(cred);
	file = filp_open(path, O_RDONLY, 0);
	revert_creds(old);
	put_cred(cred);

	if (IS_ERR(file)) {
		ret = PTR_ERR(file);
		if (ret == -ENOENT && pid_alive(task))
			pr_warn_once("pidfd_mem: %s not found: is procfs mounted on /proc?\n",
				     path);
		return ret == -ENOENT || ret == -ESRCH ? -ESRCH :
		       ret == -EINTR || ret == -ENOMEM ? ret : -EPERM;
	}
	/* /proc/PID/mem keeps the mm it checked: it must be the one we hold. */
	ret = file->private_data == mm ? 0 : -EAGAIN;
	fput(file);
	return ret;
}

/* A new struct pidfd_mem over the address space of the process @pidfd names. */
static struct pidfd_mem *pidfd_mem_from_pidfd(int pidfd)
{
	struct task_struct *task;
	struct pidfd_mem *ctx;
	struct mm_struct *mm;
	struct file *file;
	struct pid *pid;
	int ret, tries;

	file = fget(pidfd);
	if (!file)
		return ERR_PTR(-EBADF);
	pid = pidfd_mem_file_pid(file);
	if (!pid) {
		fput(file);
		return ERR_PTR(-EINVAL);
	}
	get_pid(pid);
	fput(file);

	task = get_pid_task(pid, PIDTYPE_PID);
	put_pid(pid);
	if (!task)
		return ERR_PTR(-ESRCH);

	for (tries = 0; tries < 3; tries++) {
		mm = get_task_mm(task);
		if (!mm) {
			ret = -ESRCH;
			goto put_task;
		}
		ret = pidfd_mem_may_access(task, mm);
		if (ret != -EAGAIN)
			break;
		mmput(mm);
		mm = NULL;
	}
	if (ret)
		goto put_mm;
	ctx = pidfd_mem_create(mm);
	mmput(mm);
	put_task_struct(task);
	return ctx;

put_mm:
	if (mm)
		mmput(mm);
	if (ret == -EAGAIN)
		ret = -ESRCH;
put_task:
	put_task_struct(task);
	return ERR_PTR(ret);
}

static long pidfd_mem_dev_open(struct pidfd_mem_open __user *uarg)
{
	struct pidfd_mem_open args;
	struct file *ctl, *mem;
	struct pidfd_mem *ctx;
	int ctl_fd, mem_fd;
	long ret;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.flags || args.reserved[0] || args.reserved[1])
		return -EINVAL;

	ctx = pidfd_mem_from_pidfd(args.pidfd);
	if (IS_ERR(ctx))
		return PTR_ERR(ctx);

	ctl_fd = get_unused_fd_flags(O_CLOEXEC);
	if (ctl_fd < 0) {
		ret = ctl_fd;
		goto put_ctx;
	}
	mem_fd = get_unused_fd_flags(O_CLOEXEC);
	if (mem_fd < 0) {
		ret = mem_fd;
		goto put_ctl_fd;
	}
	ctl = pidfd_mem_control_file(ctx);
	if (IS_ERR(ctl)) {
		ret = PTR_ERR(ctl);
		goto put_mem_fd;
	}
	mem = pidfd_mem_access_file(ctx);
	if (IS_ERR(mem)) {
		ret = PTR_ERR(mem);
		goto put_ctl;
	}

	args.ctl_fd = ctl_fd;
	args.mem_fd = mem_fd;
	if (copy_to_user(uarg, &args, sizeof(args))) {
		ret = -EFAULT;
		goto put_mem;
	}
	fd_install(ctl_fd, ctl);
	fd_install(mem_fd, mem);
	pidfd_mem_put(ctx);
	return 0;

put_mem:
	fput(mem);
put_ctl:
	fput(ctl);
put_mem_fd:
	put_unused_fd(mem_fd);
put_ctl_fd:
	put_unused_fd(ctl_fd);
put_ctx:
	pidfd_mem_put(ctx);
	return ret;
}

/* R1: OPEN, one read-write MAP of [0, TASK_SIZE) at offset 0, and LOCK. */
static long pidfd_mem_dev_remote_proc_map(struct remote_proc_map __user *uarg)
{
	struct remote_proc_map args;
	struct pidfd_mem *ctx;
	struct file *mem;
	int mem_fd;
	long ret;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.flags || args.reserved)
		return -EINVAL;

	ctx = pidfd_mem_from_pidfd(args.pidfd);
	if (IS_ERR(ctx))
		return PTR_ERR(ctx);

	mutex_lock(&ctx->ctl_lock);
	ret = pidfd_mem_grant_map(ctx, 0, 0, ctx->mm->task_size & PAGE_MASK,
				  PIDFD_MEM_PROT_READ | PIDFD_MEM_PROT_WRITE);
	ctx->locked = true;
	mutex_unlock(&ctx->ctl_lock);
	if (ret)
		goto put_ctx;

	mem_fd = get_unused_fd_flags(O_CLOEXEC);
	if (mem_fd < 0) {
		ret = mem_fd;
		goto put_ctx;
	}
	mem = pidfd_mem_access_file(ctx);
	if (IS_ERR(mem)) {
		ret = PTR_ERR(mem);
		goto put_mem_fd;
	}
	args.mem_fd = mem_fd;
	if (copy_to_user(uarg, &args, sizeof(args))) {
		ret = -EFAULT;
		goto put_mem;
	}
	fd_install(mem_fd, mem);
	pidfd_mem_put(ctx);
	return 0;

put_mem:
	fput(mem);
put_mem_fd:
	put_unused_fd(mem_fd);
put_ctx:
	pidfd_mem_put(ctx);
	return ret;
}

static long pidfd_mem_dev_ioctl(struct file *file, unsigned int cmd,
				unsigned long arg)
{
	switch (cmd) {
	case PIDFD_MEM_OPEN:
		return pidfd_mem_dev_open((void __user *)arg);
	case REMOTE_PROC_MAP:
		return pidfd_mem_dev_remote_proc_map((void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations pidfd_mem_dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = pidfd_mem_dev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice pidfd_mem_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pidfd_mem",
	.fops = &pidfd_mem_dev_fops,
	.mode = 0666,
};

static const struct file_operations pidfd_mem_probe_fops;

static int __init pidfd_mem_init(void)
{
	struct file *probe;
	int ret;

	probe = anon_inode_getfile("[pidfd_mem_probe]", &pidfd_mem_probe_fops,
				   NULL, O_RDONLY);
	if (IS_ERR(probe))
		return PTR_ERR(probe);
	pidfd_mem_anon_inode = file_inode(probe);
	fput(probe);

	ret = pidfd_mem_fs_init();
	if (ret)
		return ret;
	ret = misc_register(&pidfd_mem_dev);
	if (ret)
		goto exit_fs;
	return 0;

exit_fs:
	pidfd_mem_fs_exit();
	return ret;
}

static void __exit pidfd_mem_exit(void)
{
	misc_deregister(&pidfd_mem_dev);
	pidfd_mem_fs_exit();
}

module_init(pidfd_mem_init);
module_exit(pidfd_mem_exit);
MODULE_DESCRIPTION("pidfd_mem: zero-copy, coherent access to another process's memory");
MODULE_LICENSE("GPL");

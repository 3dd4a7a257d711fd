/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * pidfd_mem: zero-copy, coherent access to another process's memory.
 *
 * This header is the one ABI definition of the project. The kernel module
 * (kmod/) and the Rust library (crates/pidfd-mem, checked by its abi test)
 * both take their numbers and layouts from here. The behaviour behind each
 * call is the contract in shared/spec/pidfd_mem.md.
 */
#ifndef _UAPI_LINUX_PIDFD_MEM_H
#define _UAPI_LINUX_PIDFD_MEM_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* The misc device that stands for the pidfd_mem() system call. */
#define PIDFD_MEM_DEVICE	"/dev/pidfd_mem"

/* Protections of a grant (struct pidfd_mem_map.flags). */
#define PIDFD_MEM_PROT_READ	0x1
#define PIDFD_MEM_PROT_WRITE	0x2

/* PIDFD_MEM_OPEN, on /dev/pidfd_mem: pidfd_mem(pidfd, flags). */
struct pidfd_mem_open {
	__s32 pidfd;		/* in:  pidfd of the target T */
	__u32 flags;		/* in:  must be 0 */
	__s32 ctl_fd;		/* out: control fd */
	__s32 mem_fd;		/* out: access fd */
	__u64 reserved[2];	/* in:  must be 0 */
};

/* PIDFD_MEM_MAP, on the control fd: grant mem[offset, offset+size). */
struct pidfd_mem_map {
	__u64 address;		/* start in T, page aligned */
	__s64 offset;		/* start in mem, page aligned, >= 0 */
	__s64 size;		/* page aligned, > 0 */
	__s32 flags;		/* PIDFD_MEM_PROT_READ [| PIDFD_MEM_PROT_WRITE] */
	__s32 padding[7];	/* must be 0 */
};

/* PIDFD_MEM_UNMAP, on the control fd: revoke mem[offset, offset+size). */
struct pidfd_mem_unmap {
	__s64 offset;
	__s64 size;
};

/* REMOTE_PROC_MAP, on /dev/pidfd_mem: whole address space, offset == address. */
struct remote_proc_map {
	__s32 pidfd;		/* in:  pidfd of the target T */
	__u32 flags;		/* in:  must be 0 */
	__s32 mem_fd;		/* out: access fd */
	__u32 reserved;		/* in:  must be 0 */
};

#define PIDFD_MEM_IOC_MAGIC	0xB6

#define PIDFD_MEM_OPEN		_IOWR(PIDFD_MEM_IOC_MAGIC, 0x01, struct pidfd_mem_open)
#define REMOTE_PROC_MAP		_IOWR(PIDFD_MEM_IOC_MAGIC, 0x02, struct remote_proc_map)
#define PIDFD_MEM_MAP		_IOW(PIDFD_MEM_IOC_MAGIC, 0x10, struct pidfd_mem_map)
#define PIDFD_MEM_UNMAP		_IOW(PIDFD_MEM_IOC_MAGIC, 0x11, struct pidfd_mem_unmap)
#define PIDFD_MEM_LOCK		_IO(PIDFD_MEM_IOC_MAGIC, 0x12)

#endif /* _UAPI_LINUX_PIDFD_MEM_H */

// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Guest smoke test, built by `cargo xtask test` with `gcc -static` on the host and run in the
 * guest: proves that an out-of-tree C program using the uapi header runs there. KTAP output.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/pidfd_mem.h>

int main(void)
{
	printf("KTAP version 1\n1..1\n");
	int fd = open(PIDFD_MEM_DEVICE, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("# open %s: %s\nnot ok 1 smoke_unknown_ioctl_enotty\n", PIDFD_MEM_DEVICE,
		       strerror(errno));
		return 1;
	}
	/* An ioctl number with our magic that the header does not define. */
	int ret = ioctl(fd, _IO(PIDFD_MEM_IOC_MAGIC, 0x7f), 0);
	int err = errno;
	close(fd);
	if (ret != -1 || err != ENOTTY) {
		printf("# unknown ioctl returned %d, errno %d (%s), expected ENOTTY\n", ret, err,
		       strerror(err));
		printf("not ok 1 smoke_unknown_ioctl_enotty\n");
		return 1;
	}
	printf("ok 1 smoke_unknown_ioctl_enotty\n");
	return 0;
}

#!/bin/busybox sh
# /init of the xtask guest (see xtask/README.md). xtask writes /xtask/conf (settings) and
# /xtask/cmd (the command, run by the host's /bin/sh inside `chroot /host`).
# Results go to virtio-serial ports: out, err (the command's output), status, kmsg (dmesg).
# Lines starting with "xtask:" on the console are read by the host. init must never exit.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
. /xtask/conf
dmesg -n 7 # from here on, kernel warnings reach the console (the boot itself is quiet)

finish() { # finish STATUS: report the status, dump dmesg, power off
	echo "xtask: status $1"
	[ -n "$STATUS_PORT" ] && echo "$1" >"$STATUS_PORT"
	[ -n "$KMSG_PORT" ] && dmesg >"$KMSG_PORT"
	sync
	poweroff -f
	sleep 1000 # poweroff -f does not return; never let init exit
}
fail() { echo "xtask: error: $*"; finish "error $*"; }

for m in $MODULES; do
	insmod "$m" || fail "insmod $m failed"
done

# Virtio-serial ports are added asynchronously; find them by name.
i=0
while :; do
	for p in /sys/class/virtio-ports/*; do
		[ -e "$p/name" ] || continue
		dev=/dev/${p##*/}
		[ -c "$dev" ] || continue
		case "$(cat "$p/name")" in
		out) OUT_PORT=$dev ;;
		err) ERR_PORT=$dev ;;
		status) STATUS_PORT=$dev ;;
		kmsg) KMSG_PORT=$dev ;;
		esac
	done
	[ -n "$OUT_PORT" ] && [ -n "$ERR_PORT" ] && [ -n "$STATUS_PORT" ] && [ -n "$KMSG_PORT" ] && break
	i=$((i + 1))
	[ $i -gt 500 ] && fail "virtio-serial ports did not appear"
	sleep 0.01
done

mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=$MSIZE,cache=loose hostroot /host ||
	fail "mounting the host root over 9p failed"
mount -t proc proc /host/proc || fail "mount /host/proc"
mount -t sysfs sysfs /host/sys || fail "mount /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fail "mount /host/dev"
mkdir -p /host/dev/pts /host/dev/shm /host/dev/hugepages
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mount /host/tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "mount /host/run"
grep -qw hugetlbfs /proc/filesystems && mount -t hugetlbfs hugetlbfs /host/dev/hugepages
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
ip link set lo up 2>/dev/null
if [ -n "$WORK" ]; then # a work tree under /tmp or /run: its own 9p export
	mkdir -p "/host$WORK"
	mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=$MSIZE,cache=loose work "/host$WORK" ||
		fail "mounting the work tree $WORK over 9p failed"
fi

if [ -n "$MODULE" ]; then
	insmod "$MODULE" || fail "insmod $MODULE failed"
	MODNAME=$(head -n 1 /proc/modules | cut -d ' ' -f 1) # the module just loaded
	if [ -n "$MODULE_DEV" ]; then
		i=0
		until [ -c "/host$MODULE_DEV" ]; do
			i=$((i + 1))
			[ $i -gt 200 ] && fail "$MODULE_DEV did not appear after insmod"
			sleep 0.01
		done
	fi
fi

# Run the command with a clean environment (the script exports its own), in the background so
# that a guest-side watchdog can stop it and still dump dmesg.
echo "xtask: command start at $(cut -d' ' -f1 /proc/uptime)s"
env -i /bin/busybox chroot /host /bin/sh -c "$(cat /xtask/cmd)" </dev/null >"$OUT_PORT" 2>"$ERR_PORT" &
cmd=$!
(
	sleep "$CMD_TIMEOUT"
	echo "xtask: command timed out after ${CMD_TIMEOUT}s; blocked tasks:"
	echo w >/proc/sysrq-trigger
	: >/xtask/timedout
	kill -KILL $cmd
) &
watchdog=$!
wait $cmd
rc=$?
kill $watchdog 2>/dev/null
echo "xtask: command end at $(cut -d' ' -f1 /proc/uptime)s"
if [ -n "$MODULE" ] && [ ! -e /xtask/timedout ]; then
	# Contract L3: once every fd and mirror is gone the module unloads, and
	# (on kernels with kmemleak) leaves nothing behind.
	if ! rmmod "$MODNAME"; then
		echo "xtask: error: $MODNAME could not be unloaded after the command (L3)" >"$ERR_PORT"
		[ "$rc" -eq 0 ] && rc=1
	fi
	if [ -w /sys/kernel/debug/kmemleak ]; then
		echo scan >/sys/kernel/debug/kmemleak
		echo scan >/sys/kernel/debug/kmemleak
		if grep -q "$MODNAME" /sys/kernel/debug/kmemleak; then
			echo "xtask: error: kmemleak reports leaks from $MODNAME:" >"$ERR_PORT"
			cat /sys/kernel/debug/kmemleak >"$ERR_PORT"
			[ "$rc" -eq 0 ] && rc=1
		fi
	fi
fi
if [ -e /xtask/timedout ]; then
	finish "timeout $CMD_TIMEOUT"
else
	finish "exit $rc"
fi

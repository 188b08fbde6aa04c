#!/bin/sh
# node.sh: turns the lab's qemu guest into a Kubernetes node (ClusterUp in
# cluster.go writes it into the guest share as /host/node.sh and boots the
# default guest with it as the program). busybox sh.
#
#   stage1  (the guest's /init runs it; / is the initramfs): copy the initramfs
#           and /host/root into a tmpfs and make that the root. runc cannot
#           pivot_root out of an initramfs (rootfs), a tmpfs root it can.
#   stage2  (chrooted into the tmpfs): mounts, cgroup2, shared propagation,
#           modules, containerd, image import, kubelet; then waits until the
#           host creates /host/stop.
#
# Progress goes to the console and to /host/status ("UPTIME EVENT" lines);
# logs to /host/logs.

up() { cut -d' ' -f1 /proc/uptime; }
say() {
	echo "NODE $(up)s: $*"
	echo "$(up) $*" >>/host/status
}

stage1() {
	say "stage1"
	mkdir -p /newroot
	mount -t tmpfs -o mode=0755,size=90% noderoot /newroot || return 1
	for d in bin sbin usr lib lib64 etc; do
		[ -e /$d ] && cp -a /$d /newroot/
	done
	cp -a /host/root/. /newroot/ || return 1
	for d in proc sys dev tmp run host root var/lib/kubelet var/lib/containerd var/log; do
		mkdir -p /newroot/$d
	done
	say "root copied to tmpfs"
	# 9p serves its tag once: move the host share instead of mounting it again.
	busybox mount -o move /host /newroot/host || return 1
	cd /newroot || return 1
	busybox mount -o move . / || { echo "NODE: move root failed"; return 1; }
	exec busybox chroot . /bin/sh /host/node.sh stage2
}

# waitfor SECONDS TEST...: poll every 0.2 s.
waitfor() {
	n=$(($1 * 5))
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ $n -le 0 ] && return 1
		sleep 0.2
	done
}

stage2() {
	export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin
	mount -t proc proc /proc
	mount -t sysfs sys /sys
	mount -t devtmpfs dev /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
	mount -t tmpfs -o mode=1777 shm /dev/shm
	mount -t tmpfs -o mode=1777 tmp /tmp
	mount -t tmpfs -o mode=0755 run /run
	mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "cgroup2 mount failed"
	for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || say "controller $c not enabled"
	done
	# Bidirectional mount propagation (the CSI node plugin) needs a shared root.
	mount --make-rshared /
	ln -sf /proc/self/mounts /etc/mtab

	. /etc/node.env
	hostname "$NODE_NAME"
	printf '127.0.0.1 localhost\n%s %s\n' "$NODE_IP" "$NODE_NAME" >/etc/hosts
	echo "nameserver 127.0.0.1" >/etc/resolv.conf
	head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/machine-id
	echo >>/etc/machine-id
	for m in $(cat /etc/node-modules.list); do
		insmod "$m" 2>/dev/null
	done
	echo 1 >/proc/sys/net/ipv4/ip_forward
	# No kube-proxy: the node DNATs the kubernetes Service to the API server.
	smblab node-nat || say "node-nat failed"
	ip route add default via "$DEFAULT_GW" 2>/dev/null
	mkdir -p /host/logs
	say "stage2 ready: cgroups $(cat /sys/fs/cgroup/cgroup.subtree_control)"

	containerd --config /etc/containerd/config.toml >/host/logs/containerd.log 2>&1 &
	cpid=$!
	if ! waitfor 60 test -S /run/containerd/containerd.sock; then
		say "containerd did not start"
		return 1
	fi
	say "containerd up"
	for t in /host/images/*.tar; do
		[ -e "$t" ] || continue
		ctr -n k8s.io images import "$t" >>/host/logs/import.log 2>&1 || say "import $t failed"
	done
	ctr -n k8s.io images ls -q >/host/logs/images.txt 2>&1
	say "images imported: $(tr '\n' ' ' </host/logs/images.txt)"

	kubelet --config=/etc/kubernetes/kubelet.yaml --kubeconfig=/etc/kubernetes/kubeconfig \
		--node-ip="$NODE_IP" --hostname-override="$NODE_NAME" -v="${KUBELET_V:-2}" \
		>/host/logs/kubelet.log 2>&1 &
	kpid=$!
	say "kubelet started"

	i=0
	while [ ! -e /host/stop ]; do
		if ! kill -0 $kpid 2>/dev/null; then
			say "kubelet exited"
			break
		fi
		if [ $((i % 5)) -eq 0 ]; then
			free -k >/host/logs/free.tmp && mv /host/logs/free.tmp /host/logs/free
		fi
		i=$((i + 1))
		sleep 1
	done
	say "stopping"
	kill $kpid 2>/dev/null
	waitfor 10 sh -c "! kill -0 $kpid 2>/dev/null"
	kill $cpid 2>/dev/null
	waitfor 10 sh -c "! kill -0 $cpid 2>/dev/null"
	say "stopped"
	return 0
}

case "${1:-stage1}" in
stage1) stage1 ;;
stage2) stage2 ;;
*)
	echo "usage: node.sh [stage1|stage2]" >&2
	exit 2
	;;
esac

package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// guestModules are loaded in the guest, with their dependencies: virtio
// network and 9p for the host share, cifs and the crypto SMB3 signing needs,
// nf_tables with reject for the DFS fence and tcp_diag for ending the
// kernel's connections to a fenced target.
var guestModules = []string{
	"virtio_pci", "virtio_net", "9pnet_virtio", "9p", "nls_utf8",
	"gcm", "ccm", "cmac", "sha512_ssse3", "ecb", "aesni_intel", "cifs",
	"nf_tables", "nft_reject_inet", "inet_diag", "tcp_diag",
}

// guestBins are the host binaries the node plugin needs in the guest:
// util-linux mount/umount (bind mounts, unmount) and mount.cifs.
var guestBins = []string{"/usr/bin/mount", "/usr/bin/umount", "/usr/sbin/mount.cifs"}

// The guest's /init: mounts, modules, network, the host share, then runs
// /host/.guest-cmd and prints its exit status for the host to read.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/host/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /run /var/lib/kubelet /host /etc
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
ln -sf /proc/self/mounts /etc/mtab
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
echo "root:x:0:" > /etc/group
echo "nobody:x:65534:65534:nobody:/:/bin/sh" >> /etc/passwd
echo "nogroup:x:65534:" >> /etc/group
for m in $(cat /modules.list); do insmod $m 2>/dev/null; done
ip link set lo up
ip link set eth0 up
ip addr add ${GUEST_IP:-10.213.0.10/24} dev eth0
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 hostshare /host || echo "GUEST: 9p mount failed"
cd /host
echo "GUEST: kernel $(uname -r), starting at $(cut -d' ' -f1 /proc/uptime)s"
sh /host/.guest-cmd
echo "GUEST-EXIT: $?"
sync
poweroff -f
`

// newestKernel returns the newest kernel release with both modules and a
// vmlinuz under /boot (the host's own kernel may have neither).
func newestKernel() (string, error) {
	entries, err := os.ReadDir("/lib/modules")
	if err != nil {
		return "", fmt.Errorf("no kernel modules (apt-get install linux-image-amd64): %w", err)
	}
	var rels []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("/boot", "vmlinuz-"+e.Name())); err == nil {
			rels = append(rels, e.Name())
		}
	}
	if len(rels) == 0 {
		return "", errors.New("no /boot/vmlinuz-* with modules (apt-get install linux-image-amd64)")
	}
	slices.SortFunc(rels, compareVersions)
	return rels[len(rels)-1], nil
}

// compareVersions orders kernel releases numerically field by field.
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	fa, fb := split(a), split(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		var na, nb int
		_, ea := fmt.Sscan(fa[i], &na)
		_, eb := fmt.Sscan(fb[i], &nb)
		if ea == nil && eb == nil && na != nb {
			return na - nb
		}
		if c := strings.Compare(fa[i], fb[i]); (ea != nil || eb != nil) && c != 0 {
			return c
		}
	}
	return len(fa) - len(fb)
}

// buildInitramfs writes a busybox initramfs for kernel rel to out.
func buildInitramfs(ctx context.Context, rel, work, out string) error {
	root := filepath.Join(work, "initramfs-root")
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "proc", "sys", "dev", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := copyFile("/bin/busybox", filepath.Join(root, "bin/busybox")); err != nil {
		return fmt.Errorf("initramfs needs busybox-static: %w", err)
	}
	mods, err := modulesWithDeps(ctx, rel, guestModules)
	if err != nil {
		return err
	}
	for _, m := range mods {
		if err := copyFile(m, filepath.Join(root, m)); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "modules.list"), []byte(strings.Join(mods, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	files := map[string]bool{}
	for _, b := range guestBins {
		files[b] = true
		libs, err := sharedLibs(ctx, b)
		if err != nil {
			return err
		}
		for _, l := range libs {
			files[l] = true
		}
	}
	for f := range files {
		if err := copyFile(f, filepath.Join(root, f)); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	// The driver runs /sbin/mount.cifs, /bin/mount and /bin/umount; busybox
	// --install does not replace files that exist, so util-linux wins.
	for dst, src := range map[string]string{"sbin/mount.cifs": "/usr/sbin/mount.cifs", "bin/mount": "/usr/bin/mount", "bin/umount": "/usr/bin/umount"} {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(guestInit), 0o755); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+shellQuote(out))
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pack initramfs: %w: %s", err, b)
	}
	return os.RemoveAll(root)
}

// modulesWithDeps lists the .ko files of mods and their dependencies in load
// order (modprobe --show-depends), without duplicates.
func modulesWithDeps(ctx context.Context, rel string, mods []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, m := range mods {
		b, err := exec.CommandContext(ctx, "modprobe", "-S", rel, "--show-depends", m).Output()
		if err != nil {
			return nil, fmt.Errorf("modprobe --show-depends %s for %s: %w", m, rel, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "insmod" && !seen[f[1]] {
				seen[f[1]] = true
				out = append(out, f[1])
			}
		}
	}
	return out, nil
}

// sharedLibs lists the libraries ldd reports for bin, including the loader.
func sharedLibs(ctx context.Context, bin string) ([]string, error) {
	b, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		for f := range strings.FieldsSeq(line) {
			if strings.HasPrefix(f, "/") {
				out = append(out, f)
			}
		}
	}
	return out, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, st.Mode().Perm()|0o200)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// VMOptions says what to run in the guest.
type VMOptions struct {
	Share     string        // host directory, mounted as /host in the guest
	Run       string        // program relative to Share
	Args      []string      // its arguments
	Timeout   time.Duration // whole guest run; default 30 min
	MemoryMiB int           // default 1024
	Console   io.Writer     // guest console; default os.Stdout
}

// ExitError carries the guest program's exit status.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("guest program exited with status %d", e.Code) }

const exitMarker = "GUEST-EXIT: "

// RunVM boots the Debian kernel under qemu TCG (KVM here is PVM and cannot run
// a stock kernel) with a busybox initramfs, a tap on the lab bridge and the
// share mounted over 9p, runs the program, serves its fault requests and
// returns its exit status as *ExitError when it is not 0.
func (l *Lab) RunVM(ctx context.Context, o VMOptions) error {
	if alive(l.NodePID) {
		// Both attach to tap0 in the bridge namespace; a second one would take the node's away.
		return errors.New("the cluster's node runs in the guest (tap0): run smblab cluster down first")
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Minute
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1024
	}
	if o.Console == nil {
		o.Console = os.Stdout
	}
	share, err := filepath.Abs(o.Share)
	if err != nil {
		return fmt.Errorf("vm share: %w", err)
	}
	if err := writeGuestCmd(share, o.Run, o.Args); err != nil {
		return err
	}
	rel, err := newestKernel()
	if err != nil {
		return err
	}
	work := filepath.Join(l.Dir, "vm")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	initrd := filepath.Join(work, "initramfs.cpio.gz")
	if err := buildInitramfs(ctx, rel, work, initrd); err != nil {
		return err
	}
	ctl := NewControl(filepath.Join(share, ControlDir))
	if err := ctl.reset(); err != nil {
		return err
	}
	if err := l.tap(ctx, true); err != nil {
		return err
	}
	defer func() { _ = l.tap(context.WithoutCancel(ctx), false) }()

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	go ctl.serve(ctx, l)
	return l.qemu(ctx, rel, initrd, share, o)
}

func writeGuestCmd(share, prog string, args []string) error {
	if prog == "" {
		return errors.New("vm: -run is required")
	}
	quoted := []string{"exec", shellQuote("/host/" + prog)}
	for _, a := range args {
		quoted = append(quoted, shellQuote(a))
	}
	script := strings.Join(quoted, " ") + "\n"
	if err := os.WriteFile(filepath.Join(share, ".guest-cmd"), []byte(script), 0o644); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return nil
}

func (l *Lab) tap(ctx context.Context, up bool) error {
	ns := l.BridgeNS()
	if !up {
		return run(ctx, "ip", "-n", ns, "link", "del", "tap0")
	}
	_ = run(ctx, "ip", "-n", ns, "link", "del", "tap0") // left by a crashed run
	for _, s := range [][]string{
		{"-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"-n", ns, "link", "set", "tap0", "master", bridge},
		{"-n", ns, "link", "set", "tap0", "up"},
	} {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) qemu(ctx context.Context, rel, initrd, share string, o VMOptions) error {
	args := []string{"netns", "exec", l.BridgeNS(), "qemu-system-x86_64",
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", strconv.Itoa(o.MemoryMiB),
		"-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio",
		"-kernel", "/boot/vmlinuz-" + rel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=3 panic=-1 GUEST_IP=" + GuestIP + "/24",
		"-virtfs", "local,path=" + share + ",mount_tag=hostshare,security_model=none,id=hs",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0",
	}
	cmd := exec.Command("ip", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer stop()
	code := -1
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(o.Console, line)
		if i := strings.Index(line, exitMarker); i >= 0 {
			if n, err := strconv.Atoi(strings.TrimSpace(line[i+len(exitMarker):])); err == nil {
				code = n
			}
		}
	}
	werr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("guest killed after %s: %w", o.Timeout, ctx.Err())
	case code < 0:
		return fmt.Errorf("guest ended without an exit status (qemu: %w)", werr)
	case code != 0:
		return &ExitError{Code: code}
	}
	return nil
}

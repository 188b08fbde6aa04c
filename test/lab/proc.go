package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// run executes a command and returns its combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// descendants lists pid and every live process below it, parents first.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := statOf(p)
		if !ok || state == 'Z' {
			continue
		}
		children[ppid] = append(children[ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// statOf reads the parent pid and state of pid from /proc/pid/stat.
func statOf(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold spaces; fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+4 >= len(b) {
		return 0, 0, false
	}
	fields := strings.Fields(string(b[i+2:]))
	if len(fields) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	return ppid, fields[0][0], err == nil
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, state, ok := statOf(pid)
	return ok && state != 'Z'
}

// signalTree sends sig to pid and all its descendants.
func signalTree(pid int, sig syscall.Signal) error {
	if !alive(pid) {
		return fmt.Errorf("process %d is not running", pid)
	}
	var errs []error
	for _, p := range descendants(pid) {
		if err := syscall.Kill(p, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// pidsWithArg finds live processes whose command line contains arg, an
// absolute path unique to this lab (its smb.conf), so only our own processes
// (such as a samba-dcerpcd that smbd spawned and that outlives it) match.
func pidsWithArg(arg string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for a := range bytes.SplitSeq(b, []byte{0}) {
			if string(a) == arg || strings.HasSuffix(string(a), "="+arg) {
				if alive(p) {
					out = append(out, p)
				}
				break
			}
		}
	}
	return out
}

// waitGone waits until none of pids is alive.
func waitGone(ctx context.Context, pids []int) error {
	for {
		left := 0
		for _, p := range pids {
			if alive(p) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d processes still alive: %w", left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// listening reports whether pid's network namespace has a TCP socket in
// LISTEN state on ip:port, read from /proc/pid/net/tcp (no network I/O).
func listening(pid int, ip string, port int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "net", "tcp"))
	if err != nil {
		return false
	}
	want := fmt.Sprintf("%s:%04X", hexIPv4(ip), port)
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}

// hexIPv4 renders a dotted quad the way /proc/net/tcp does (little-endian hex).
func hexIPv4(ip string) string {
	var b [4]int
	_, _ = fmt.Sscanf(ip, "%d.%d.%d.%d", &b[0], &b[1], &b[2], &b[3])
	return fmt.Sprintf("%02X%02X%02X%02X", b[3], b[2], b[1], b[0])
}

// ServerCPU is the CPU time (user + system) the smbd processes of server
// name have used so far, with their exited children's, from /proc
// (clock ticks of 10 ms on Debian).
func (l *Lab) ServerCPU(name string) (time.Duration, error) {
	s, err := l.Server(name)
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, p := range descendants(s.PID) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		f := strings.Fields(string(b[i+2:]))
		if len(f) < 15 {
			continue
		}
		for _, x := range f[11:15] { // utime, stime, and those of children that exited (reaped)
			n, _ := strconv.Atoi(x)
			total += time.Duration(n) * 10 * time.Millisecond
		}
	}
	return total, nil
}

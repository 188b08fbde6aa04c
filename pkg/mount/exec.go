package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxOutput caps what a helper may print; mount errors are one line.
const maxOutput = 8 << 10

// capWriter is a goroutine-safe bounded buffer: an unkillable helper may keep
// writing after the caller has returned.
type capWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := maxOutput - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *capWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(w.buf.String())
}

// helper describes one run of a mount helper binary.
type helper struct {
	path  string
	args  []string
	env   []string
	extra []*os.File // inherited as fd 3, 4, ...
}

// run starts h in its own process group and waits for it. When ctx ends first
// it SIGKILLs the whole group; a helper stuck in uninterruptible sleep is left
// to a reaper goroutine after killGrace, and done is closed when it is gone,
// so the caller can refuse to start another on the same target meanwhile.
func run(ctx context.Context, h helper, killGrace time.Duration) (out string, done <-chan struct{}, err error) {
	cmd := exec.Command(h.path, h.args...)
	cmd.Env = h.env
	cmd.ExtraFiles = h.extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var w capWriter
	cmd.Stdout, cmd.Stderr = &w, &w
	finished := make(chan struct{})
	if err := cmd.Start(); err != nil {
		close(finished)
		return "", finished, fmt.Errorf("start %s: %w", h.path, err)
	}
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- cmd.Wait()
		close(finished)
	}()
	select {
	case err := <-waitErr:
		if err != nil {
			return w.String(), finished, &HelperError{Path: h.path, Output: w.String(), Err: err}
		}
		return w.String(), finished, nil
	case <-ctx.Done():
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case werr := <-waitErr:
		return w.String(), finished, fmt.Errorf("%w: %s killed (%w): %w", ErrTimeout, h.path, werr, ctx.Err())
	case <-time.After(killGrace):
	}
	return w.String(), finished, fmt.Errorf("%w: %s killed: %w", ErrTimeout, h.path, ctx.Err())
}

// HelperError is a helper that ran and failed.
type HelperError struct {
	Path   string
	Output string
	Err    error
}

func (e *HelperError) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.Path, e.Err, e.Output)
}

func (e *HelperError) Unwrap() error { return e.Err }

// Errno extracts the errno mount.cifs reports as "mount error(N)", or 0.
func (e *HelperError) Errno() syscall.Errno {
	const marker = "mount error("
	i := strings.Index(e.Output, marker)
	if i < 0 {
		return 0
	}
	var n int
	if _, err := fmt.Sscanf(e.Output[i+len(marker):], "%d)", &n); err != nil || n <= 0 || n > 4095 {
		return 0
	}
	return syscall.Errno(n)
}

// ErrTimeout is a helper killed because its context ended.
var ErrTimeout = errors.New("mount helper timed out")

// ErrBusy is an earlier helper on the same path that could not be killed yet
// (stuck in the kernel); nothing new starts there until it is gone.
var ErrBusy = errors.New("an earlier mount operation on this path is still stuck in the kernel")

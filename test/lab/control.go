package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ControlDir is the directory, relative to the VM share, of the fault channel.
const ControlDir = "ctl"

// Control is a file-based request/acknowledge channel over the 9p share: the
// guest writes "SEQ ACTION TARGET" to req, the host applies the fault and
// writes "SEQ ok" or "SEQ error: ..." to ack. Files, not the network, so a
// partition of the guest does not cut the channel that heals it.
type Control struct{ dir string }

// NewControl returns the channel rooted at dir (host or guest side).
func NewControl(dir string) *Control { return &Control{dir: dir} }

func (c *Control) reset() error {
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("control channel: %w", err)
	}
	if err := os.MkdirAll(c.dir, 0o777); err != nil {
		return fmt.Errorf("control channel: %w", err)
	}
	return nil
}

func (c *Control) serve(ctx context.Context, l *Lab) {
	last := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		b, err := os.ReadFile(filepath.Join(c.dir, "req"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			continue
		}
		seq, err := strconv.Atoi(f[0])
		if err != nil || seq <= last {
			continue
		}
		last = seq
		reply := fmt.Sprintf("%d ok", seq)
		if err := l.Fault(ctx, f[1], f[2]); err != nil {
			reply = fmt.Sprintf("%d error: %v", seq, err)
		}
		_ = writeAtomic(filepath.Join(c.dir, "ack"), reply)
	}
}

// Do asks the host to apply action to target and waits for its answer. Only
// one caller may use a Control at a time.
func (c *Control) Do(ctx context.Context, action, target string) error {
	seq := 1
	if b, err := os.ReadFile(filepath.Join(c.dir, "ack")); err == nil {
		if n, err := strconv.Atoi(strings.Fields(string(b) + " 0")[0]); err == nil {
			seq = n + 1
		}
	}
	if err := writeAtomic(filepath.Join(c.dir, "req"), fmt.Sprintf("%d %s %s", seq, action, target)); err != nil {
		return err
	}
	prefix := strconv.Itoa(seq) + " "
	for {
		b, err := os.ReadFile(filepath.Join(c.dir, "ack"))
		if err == nil && strings.HasPrefix(string(b), prefix) {
			reply := strings.TrimPrefix(string(b), prefix)
			if reply == "ok" {
				return nil
			}
			return errors.New(reply)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fault %s %s: no answer from host: %w", action, target, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o666); err != nil {
		return fmt.Errorf("control channel: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("control channel: %w", err)
	}
	return nil
}

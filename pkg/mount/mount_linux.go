// Package mount performs the node's kernel mounts: cifs mounts through
// mount.cifs with the password on a pipe (never in argv, environment values
// or files), bind mounts and unmounts through util-linux, each in its own
// process group that is SIGKILLed when its context ends, and mount-table
// lookups from /proc/self/mountinfo that never touch the mounted filesystem.
package mount

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mountutils "k8s.io/mount-utils"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// Options configure a Mounter. Zero values get defaults.
type Options struct {
	MountCIFS      string        // mount.cifs helper, default "/sbin/mount.cifs"
	Mount          string        // util-linux mount, default "/bin/mount"
	Umount         string        // util-linux umount, default "/bin/umount"
	MountInfo      string        // default "/proc/self/mountinfo"
	KillGrace      time.Duration // wait after SIGKILL before giving up on a helper, default 2 s
	UnmountTimeout time.Duration // budget of the clean unmount before a lazy one, default 5 s
}

// Mounter runs mount helpers. It is safe for concurrent use.
type Mounter struct {
	opts  Options
	mu    sync.Mutex
	stuck map[string]<-chan struct{} // target -> closed when its unkillable helper exits
}

// maxPasswordLen is mount.cifs's MOUNT_PASSWD_SIZE.
const maxPasswordLen = 512

// New builds a Mounter; it starts nothing.
func New(o Options) *Mounter {
	if o.MountCIFS == "" {
		o.MountCIFS = "/sbin/mount.cifs"
	}
	if o.Mount == "" {
		o.Mount = "/bin/mount"
	}
	if o.Umount == "" {
		o.Umount = "/bin/umount"
	}
	if o.MountInfo == "" {
		o.MountInfo = "/proc/self/mountinfo"
	}
	if o.KillGrace == 0 {
		o.KillGrace = 2 * time.Second
	}
	if o.UnmountTimeout == 0 {
		o.UnmountTimeout = 5 * time.Second
	}
	return &Mounter{opts: o, stuck: map[string]<-chan struct{}{}}
}

// Check reports whether the helpers exist and are executable.
func (m *Mounter) Check() error {
	var errs []error
	for _, p := range []string{m.opts.MountCIFS, m.opts.Mount, m.opts.Umount} {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("mount helper: %w", err))
			continue
		}
		if st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("mount helper %s is not executable", p))
		}
	}
	if _, err := os.Stat(m.opts.MountInfo); err != nil {
		errs = append(errs, fmt.Errorf("mount table: %w", err))
	}
	return errors.Join(errs...)
}

// MountCIFS mounts source (//server/share[/dir]) on target with options
// (already merged and validated) and creds. The password goes to mount.cifs
// through PASSWD_FD, a pipe that is closed when the helper has read it.
func (m *Mounter) MountCIFS(ctx context.Context, source, target string, options []string, creds auth.Credentials) error {
	if err := checkCreds(creds); err != nil {
		return err
	}
	opts := append([]string(nil), options...)
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	var extra []*os.File
	if creds.Username == "" {
		opts = append(opts, "guest")
	} else {
		opts = append(opts, "username="+creds.Username)
		if creds.Domain != "" {
			opts = append(opts, "domain="+creds.Domain)
		}
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("password pipe: %w", err)
		}
		defer r.Close()
		// mount.cifs keeps a trailing newline as part of the password.
		_, werr := w.WriteString(creds.Password)
		if cerr := w.Close(); werr != nil || cerr != nil {
			return fmt.Errorf("password pipe: %w", errors.Join(werr, cerr))
		}
		extra = append(extra, r)
		env = append(env, "PASSWD_FD=3")
	}
	args := []string{source, target, "-o", strings.Join(opts, ",")}
	return m.mountHelper(ctx, target, helper{path: m.opts.MountCIFS, args: args, env: env, extra: extra})
}

func checkCreds(c auth.Credentials) error {
	for name, v := range map[string]string{"username": c.Username, "domain": c.Domain} {
		if strings.ContainsAny(v, ",=\n\r\x00") {
			return fmt.Errorf("%w: secret key %s contains a character cifs cannot carry (, = or a newline)", ErrInvalidOption, name)
		}
	}
	if strings.ContainsAny(c.Password, "\n\x00") {
		return fmt.Errorf("%w: secret key password contains a newline or NUL, which mount.cifs cannot read", ErrInvalidOption)
	}
	if len(c.Password) > maxPasswordLen {
		return fmt.Errorf("%w: secret key password is longer than %d bytes", ErrInvalidOption, maxPasswordLen)
	}
	return nil
}

// BindMount bind-mounts source on target, read-only when readOnly.
func (m *Mounter) BindMount(ctx context.Context, source, target string, readOnly bool) error {
	args := []string{"--no-canonicalize", "--bind"}
	if readOnly {
		args = append(args, "-o", "ro")
	}
	args = append(args, source, target)
	return m.mountHelper(ctx, target, helper{path: m.opts.Mount, args: args, env: []string{"LANG=C"}})
}

// mountHelper runs a helper that creates a mount on target. If the helper
// has to be killed, a mount it may have completed meanwhile is detached, so
// a timed-out call leaves nothing behind to poison the next one.
func (m *Mounter) mountHelper(ctx context.Context, target string, h helper) error {
	m.mu.Lock()
	if ch, ok := m.stuck[target]; ok {
		select {
		case <-ch:
			delete(m.stuck, target)
		default:
			m.mu.Unlock()
			return fmt.Errorf("%w: %s", ErrBusy, target)
		}
	}
	m.mu.Unlock()
	before, _ := m.mountCount(target)
	_, done, err := run(ctx, h, m.opts.KillGrace)
	if errors.Is(err, ErrTimeout) {
		select {
		case <-done:
		default:
			m.mu.Lock()
			m.stuck[target] = done
			m.mu.Unlock()
		}
		if after, _ := m.mountCount(target); after > before {
			_, _, _ = run(context.WithoutCancel(ctx), helper{path: m.opts.Umount, args: []string{"--no-canonicalize", "-l", target}}, m.opts.KillGrace)
		}
	}
	return err
}

// Unmount unmounts target: first cleanly (flushing dirty data while the
// server lives) within UnmountTimeout, then lazily (detach now, let the
// kernel finish when the server answers or gives up), so a dead server never
// keeps a mount point busy. A path that is not a mount point is a success.
func (m *Mounter) Unmount(ctx context.Context, target string) error {
	target = filepath.Clean(target)
	for range 4 { // mounts can be stacked on one path
		mounted, err := m.IsMountPoint(target)
		if err != nil || !mounted {
			return err
		}
		err = m.umount(ctx, target, false)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("unmount %s: %w", target, ctx.Err())
		}
		// A umount killed while the kernel tore down a dead cifs session has
		// usually detached the mount already; only detach what is still there.
		if mounted, merr := m.IsMountPoint(target); merr == nil && !mounted {
			return nil
		}
		if lerr := m.umount(ctx, target, true); lerr != nil {
			if mounted, merr := m.IsMountPoint(target); merr == nil && !mounted {
				return nil
			}
			return fmt.Errorf("unmount %s: clean: %w; lazy: %w", target, err, lerr)
		}
	}
	if mounted, err := m.IsMountPoint(target); err != nil || mounted {
		return fmt.Errorf("unmount %s: still mounted after 4 attempts: %w", target, err)
	}
	return nil
}

// Detach lazily unmounts target (umount -l). Use it when the server is known
// dead: a clean unmount would only wait for a tree disconnect nobody will
// answer.
func (m *Mounter) Detach(ctx context.Context, target string) error {
	target = filepath.Clean(target)
	for range 4 {
		mounted, err := m.IsMountPoint(target)
		if err != nil || !mounted {
			return err
		}
		if err := m.umount(ctx, target, true); err != nil {
			if mounted, merr := m.IsMountPoint(target); merr == nil && !mounted {
				return nil
			}
			return fmt.Errorf("detach %s: %w", target, err)
		}
	}
	return fmt.Errorf("detach %s: still mounted after 4 attempts", target)
}

// umount runs umount (-l when lazy) on target and returns once a mount has
// left target, not when the helper exits. The kernel takes the mount out of
// the table first and tears its superblock down afterwards, in the helper's
// own context, on its way back from the syscall. For a cifs mount whose
// server just died that teardown can block for tens of seconds (measured:
// 30 s for umount -l in the guest), and it cannot be interrupted. The helper
// runs within UnmountTimeout and is reaped in the background.
func (m *Mounter) umount(ctx context.Context, target string, lazy bool) error {
	before, err := m.mountCount(target)
	if err != nil {
		return err
	}
	args := []string{"--no-canonicalize", target}
	if lazy {
		args = []string{"--no-canonicalize", "-l", target}
	}
	// Not cancelled with ctx: the RPC returning must not kill a teardown.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.UnmountTimeout)
	res := make(chan error, 1)
	// The helper is reaped in the background, bounded by UnmountTimeout.
	go func() {
		defer cancel()
		_, _, err := run(hctx, helper{path: m.opts.Umount, args: args}, m.opts.KillGrace)
		res <- err
	}()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case err := <-res:
			return err
		case <-poll.C:
			if n, err := m.mountCount(target); err == nil && n < before {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("umount %s: %w", target, ctx.Err())
		}
	}
}

// Info is one mount-table entry with its paths unescaped.
type Info struct {
	MountPoint string
	Root       string // path of the mount's root within its filesystem
	Source     string
	FsType     string
	Major      int
	Minor      int
	Options    []string // per-mount options (ro, nosuid, ...)
	Super      []string // filesystem options (cifs: addr=, vers=, soft, ...)
}

// ServerAddr is the ip:port a cifs mount is connected to now (its addr=
// and port= options; for a DFS mount, the target in use), or "".
func (i Info) ServerAddr() string {
	addr, port := "", "445"
	for _, o := range i.Super {
		if v, ok := strings.CutPrefix(o, "addr="); ok {
			addr = v
		}
		if v, ok := strings.CutPrefix(o, "port="); ok {
			port = v
		}
	}
	if addr == "" {
		return ""
	}
	return net.JoinHostPort(addr, port)
}

// ReadOnly reports whether the mount is read-only.
func (i Info) ReadOnly() bool {
	for _, o := range i.Options {
		if o == "ro" {
			return true
		}
	}
	return false
}

// List returns the mount table; it reads /proc only.
func (m *Mounter) List() ([]Info, error) {
	raw, err := mountutils.ParseMountInfo(m.opts.MountInfo)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	out := make([]Info, 0, len(raw))
	for _, r := range raw {
		out = append(out, Info{
			MountPoint: unescape(r.MountPoint), Root: unescape(r.Root), Source: unescape(r.Source),
			FsType: r.FsType, Major: r.Major, Minor: r.Minor, Options: r.MountOptions, Super: r.SuperOptions,
		})
	}
	return out, nil
}

// Find returns the topmost mount on path, if any.
func (m *Mounter) Find(path string) (Info, bool, error) {
	all, err := m.List()
	if err != nil {
		return Info{}, false, err
	}
	path = filepath.Clean(path)
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].MountPoint == path {
			return all[i], true, nil
		}
	}
	return Info{}, false, nil
}

// IsMountPoint reports whether something is mounted on path, without a
// stat of path (which blocks on a dead hard mount).
func (m *Mounter) IsMountPoint(path string) (bool, error) {
	_, ok, err := m.Find(path)
	return ok, err
}

func (m *Mounter) mountCount(path string) (int, error) {
	all, err := m.List()
	n := 0
	for _, i := range all {
		if i.MountPoint == filepath.Clean(path) {
			n++
		}
	}
	return n, err
}

// unescape undoes the octal escapes (\040 for space, ...) of /proc mount tables.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return s[0] <= '3'
}

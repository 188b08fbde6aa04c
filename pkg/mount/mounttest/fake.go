// Package mounttest has a fake mounter for unit tests: it records mounts
// in a table instead of calling the kernel.
package mounttest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/mount"
)

// Call records one MountCIFS call.
type Call struct {
	Source, Target string
	Options        []string
	Creds          auth.Credentials
}

// Fake keeps a mount table in memory. Hooks, when set, run before the
// operation and may block on ctx or return an error.
type Fake struct {
	mu       sync.Mutex
	table    []mount.Info
	nextDev  int
	Calls    []Call
	Detaches int

	MountHook   func(ctx context.Context, source, target string) error
	UnmountHook func(ctx context.Context, target string) error
	CheckErr    error
}

// New returns a fake with an empty mount table.
func New() *Fake { return &Fake{nextDev: 100} }

// MountCIFS records a cifs mount on target.
func (f *Fake) MountCIFS(ctx context.Context, source, target string, options []string, creds auth.Credentials) error {
	if f.MountHook != nil {
		if err := f.MountHook(ctx, source, target); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, Call{Source: source, Target: target, Options: append([]string(nil), options...), Creds: creds})
	f.nextDev++
	f.table = append(f.table, mount.Info{MountPoint: filepath.Clean(target), Root: "/", Source: source, FsType: "cifs",
		Major: 0, Minor: f.nextDev, Options: []string{"rw"}, Super: options})
	return nil
}

// BindMount records a bind mount of source on target.
func (f *Fake) BindMount(ctx context.Context, source, target string, readOnly bool) error {
	if f.MountHook != nil {
		if err := f.MountHook(ctx, source, target); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	src, ok := f.find(source)
	if !ok {
		return fmt.Errorf("bind mount: %s is not mounted: %w", source, errors.ErrUnsupported)
	}
	m := src
	m.MountPoint = filepath.Clean(target)
	m.Options = []string{"rw"}
	if readOnly {
		m.Options = []string{"ro"}
	}
	f.table = append(f.table, m)
	return nil
}

// Unmount removes the topmost mount on target; none is fine.
func (f *Fake) Unmount(ctx context.Context, target string) error {
	if f.UnmountHook != nil {
		if err := f.UnmountHook(ctx, target); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	target = filepath.Clean(target)
	for i := len(f.table) - 1; i >= 0; i-- {
		if f.table[i].MountPoint == target {
			f.table = append(f.table[:i], f.table[i+1:]...)
		}
	}
	return nil
}

// Detach is Unmount for the fake; Detaches counts the calls.
func (f *Fake) Detach(ctx context.Context, target string) error {
	f.mu.Lock()
	f.Detaches++
	f.mu.Unlock()
	return f.Unmount(ctx, target)
}

// Find returns the topmost mount on path.
func (f *Fake) Find(path string) (mount.Info, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.find(path)
	return i, ok, nil
}

func (f *Fake) find(path string) (mount.Info, bool) {
	path = filepath.Clean(path)
	for i := len(f.table) - 1; i >= 0; i-- {
		if f.table[i].MountPoint == path {
			return f.table[i], true
		}
	}
	return mount.Info{}, false
}

// List returns a copy of the table.
func (f *Fake) List() ([]mount.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mount.Info(nil), f.table...), nil
}

// Check returns CheckErr.
func (f *Fake) Check() error { return f.CheckErr }

// Mounted reports whether path is in the table.
func (f *Fake) Mounted(path string) bool {
	_, ok, _ := f.Find(path)
	return ok
}

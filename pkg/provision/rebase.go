package provision

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// Rebase returns fsys with every path under from (slash-separated,
// relative to a share root; "" is the root) moved under to: the same
// directories seen through another share, as a DFS link's target serves
// the link's tree. A path outside from is refused.
func Rebase(fsys FS, from, to string) FS {
	if from == to {
		return fsys
	}
	return rebased{fsys: fsys, from: from, to: to}
}

type rebased struct {
	fsys     FS
	from, to string
}

func (r rebased) path(p string) (string, error) {
	rest, ok := p, r.from == ""
	if !ok {
		if p == r.from {
			rest, ok = "", true
		} else if after, found := strings.CutPrefix(p, r.from+"/"); found {
			rest, ok = after, true
		}
	}
	if !ok {
		return "", fmt.Errorf("%w: %s is outside %s", fs.ErrInvalid, p, r.from)
	}
	out := path.Join(r.to, rest)
	if out == "." {
		out = ""
	}
	return out, nil
}

func (r rebased) Mkdir(ctx context.Context, dir string) error {
	p, err := r.path(dir)
	if err != nil {
		return err
	}
	return r.fsys.Mkdir(ctx, p)
}

func (r rebased) MkdirAll(ctx context.Context, dir string) error {
	p, err := r.path(dir)
	if err != nil {
		return err
	}
	return r.fsys.MkdirAll(ctx, p)
}

func (r rebased) RemoveAll(ctx context.Context, name string) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	return r.fsys.RemoveAll(ctx, p)
}

func (r rebased) Remove(ctx context.Context, name string) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	return r.fsys.Remove(ctx, p)
}

func (r rebased) Rename(ctx context.Context, oldPath, newPath string) error {
	o, err := r.path(oldPath)
	if err != nil {
		return err
	}
	n, err := r.path(newPath)
	if err != nil {
		return err
	}
	return r.fsys.Rename(ctx, o, n)
}

func (r rebased) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	p, err := r.path(name)
	if err != nil {
		return nil, err
	}
	return r.fsys.Stat(ctx, p)
}

func (r rebased) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	p, err := r.path(dir)
	if err != nil {
		return nil, err
	}
	return r.fsys.ReadDir(ctx, p)
}

func (r rebased) ReadFile(ctx context.Context, name string) ([]byte, error) {
	p, err := r.path(name)
	if err != nil {
		return nil, err
	}
	return r.fsys.ReadFile(ctx, p)
}

func (r rebased) WriteFile(ctx context.Context, name string, data []byte) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	return r.fsys.WriteFile(ctx, p, data)
}

// Reused passes on whether the underlying session was reused (pkg/smb).
func (r rebased) Reused() bool {
	u, ok := r.fsys.(interface{ Reused() bool })
	return ok && u.Reused()
}

package smb

import (
	"context"
	"net"
	"path"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// Dirs looks at directories over the pool's sessions, for directory
// watches (pkg/watch.Lister). Addresses are host:port; the pool's port is
// used.
type Dirs struct{ Pool *Pool }

// List returns the names in dir (slash-separated, relative to the share).
func (d Dirs) List(ctx context.Context, addr, share, dir string, creds auth.Credentials) ([]string, error) {
	sh, release, err := d.Pool.Share(ctx, hostOf(addr), share, creds)
	if err != nil {
		return nil, err
	}
	defer release()
	fis, err := sh.ReadDir(ctx, path.Clean("/" + dir)[1:])
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(fis))
	for _, fi := range fis {
		names = append(names, fi.Name())
	}
	return names, nil
}

// Exists reports whether p exists.
func (d Dirs) Exists(ctx context.Context, addr, share, p string, creds auth.Credentials) (bool, error) {
	sh, release, err := d.Pool.Share(ctx, hostOf(addr), share, creds)
	if err != nil {
		return false, err
	}
	defer release()
	_, err = sh.Stat(ctx, path.Clean("/" + p)[1:])
	switch {
	case err == nil:
		return true, nil
	case IsNotExist(err):
		return false, nil
	}
	return false, err
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

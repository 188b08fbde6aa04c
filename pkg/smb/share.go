package smb

import (
	"context"
	"errors"
	"io/fs"
	"os"
)

// Share is a pooled tree connect. Paths are relative to the share root and
// slash-separated. Every call is bounded by its ctx; a call that fails at the
// transport level (or times out) retires the session so the next RPC redials.
type Share struct {
	pool   *Pool
	e      *entry
	reused bool
}

// Reused reports whether the session was pooled before this handle, so a
// transport failure may just mean the server restarted since: worth one
// retry on a fresh session.
func (s *Share) Reused() bool { return s.reused }

func (s *Share) done(what, path string, err error) error {
	if err == nil {
		return nil
	}
	if isConnError(err) {
		s.pool.markBroken(s.e)
	}
	return classify(what+" "+path, err)
}

// MkdirAll creates dir and its parents.
func (s *Share) MkdirAll(ctx context.Context, dir string) error {
	return s.done("mkdir", dir, s.e.share.WithContext(ctx).MkdirAll(dir, 0o777))
}

// Mkdir creates one directory; os.ErrExist if it exists, os.ErrNotExist if
// its parent does not.
func (s *Share) Mkdir(ctx context.Context, dir string) error {
	return s.done("mkdir", dir, s.e.share.WithContext(ctx).Mkdir(dir, 0o777))
}

// RemoveAll deletes path and everything below it; a missing path is success.
func (s *Share) RemoveAll(ctx context.Context, path string) error {
	return s.done("remove", path, s.e.share.WithContext(ctx).RemoveAll(path))
}

// Remove deletes a file or an empty directory.
func (s *Share) Remove(ctx context.Context, path string) error {
	return s.done("remove", path, s.e.share.WithContext(ctx).Remove(path))
}

// Rename renames oldPath to newPath, replacing a file at newPath.
func (s *Share) Rename(ctx context.Context, oldPath, newPath string) error {
	return s.done("rename", oldPath, s.e.share.WithContext(ctx).Rename(oldPath, newPath))
}

// Stat returns the entry at path; os.ErrNotExist when missing.
func (s *Share) Stat(ctx context.Context, path string) (fs.FileInfo, error) {
	fi, err := s.e.share.WithContext(ctx).Stat(path)
	return fi, s.done("stat", path, err)
}

// ReadDir lists dir.
func (s *Share) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	fis, err := s.e.share.WithContext(ctx).ReadDir(dir)
	return fis, s.done("readdir", dir, err)
}

// ReadFile reads a small file.
func (s *Share) ReadFile(ctx context.Context, path string) ([]byte, error) {
	b, err := s.e.share.WithContext(ctx).ReadFile(path)
	return b, s.done("read", path, err)
}

// WriteFile creates or truncates path and writes data in one WRITE request
// (callers keep data small, so a crash leaves the old, an empty or the new
// file, never a torn one).
func (s *Share) WriteFile(ctx context.Context, path string, data []byte) error {
	return s.done("write", path, s.e.share.WithContext(ctx).WriteFile(path, data, 0o644))
}

// IsNotExist reports whether err means the path does not exist.
func IsNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, fs.ErrNotExist)
}

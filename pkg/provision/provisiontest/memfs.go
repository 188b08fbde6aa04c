// Package provisiontest has an in-memory provision.FS for unit tests.
package provisiontest

import (
	"context"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// MemFS is an in-memory share. Paths are slash-separated and relative.
// Fail, when set, is consulted before every operation and can inject errors.
type MemFS struct {
	mu    sync.Mutex
	dirs  map[string]bool
	files map[string][]byte
	Fail  func(op, p string) error
	Ops   int
}

// New returns an empty share (only the root exists).
func New() *MemFS {
	return &MemFS{dirs: map[string]bool{"": true}, files: map[string][]byte{}}
}

func clean(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

func (m *MemFS) check(ctx context.Context, op, p string) error {
	m.Ops++
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.Fail != nil {
		return m.Fail(op, p)
	}
	return nil
}

// Mkdir creates one directory: fs.ErrExist if p exists, fs.ErrNotExist if
// its parent does not.
func (m *MemFS) Mkdir(ctx context.Context, p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "mkdir", p); err != nil {
		return err
	}
	if _, isFile := m.files[p]; isFile || m.dirs[p] {
		return &fs.PathError{Op: "mkdir", Path: p, Err: fs.ErrExist}
	}
	parent := path.Dir(p)
	if parent == "." {
		parent = ""
	}
	if !m.dirs[parent] {
		return &fs.PathError{Op: "mkdir", Path: p, Err: fs.ErrNotExist}
	}
	m.dirs[p] = true
	return nil
}

// MkdirAll creates p and its parents.
func (m *MemFS) MkdirAll(ctx context.Context, p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "mkdir", p); err != nil {
		return err
	}
	for q := p; q != "." && q != ""; q = path.Dir(q) {
		if _, ok := m.files[q]; ok {
			return &fs.PathError{Op: "mkdir", Path: q, Err: fs.ErrExist}
		}
	}
	for q := p; q != "." && q != ""; q = path.Dir(q) {
		m.dirs[q] = true
	}
	return nil
}

// RemoveAll removes p and everything below it.
func (m *MemFS) RemoveAll(ctx context.Context, p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "removeall", p); err != nil {
		return err
	}
	for d := range m.dirs {
		if d == p || strings.HasPrefix(d, p+"/") {
			delete(m.dirs, d)
		}
	}
	for f := range m.files {
		if f == p || strings.HasPrefix(f, p+"/") {
			delete(m.files, f)
		}
	}
	return nil
}

// Remove deletes a file or an empty directory.
func (m *MemFS) Remove(ctx context.Context, p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "remove", p); err != nil {
		return err
	}
	if _, ok := m.files[p]; ok {
		delete(m.files, p)
		return nil
	}
	if !m.dirs[p] {
		return &fs.PathError{Op: "remove", Path: p, Err: os.ErrNotExist}
	}
	if len(m.children(p)) > 0 {
		return &fs.PathError{Op: "remove", Path: p, Err: fs.ErrInvalid}
	}
	delete(m.dirs, p)
	return nil
}

// Rename moves a file or a directory tree; a file at newPath is replaced.
func (m *MemFS) Rename(ctx context.Context, oldPath, newPath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	oldPath, newPath = clean(oldPath), clean(newPath)
	if err := m.check(ctx, "rename", oldPath); err != nil {
		return err
	}
	if b, ok := m.files[oldPath]; ok {
		delete(m.files, oldPath)
		m.files[newPath] = b
		return nil
	}
	if !m.dirs[oldPath] {
		return &fs.PathError{Op: "rename", Path: oldPath, Err: os.ErrNotExist}
	}
	if m.dirs[newPath] {
		return &fs.PathError{Op: "rename", Path: newPath, Err: fs.ErrExist}
	}
	for d := range m.dirs {
		if d == oldPath || strings.HasPrefix(d, oldPath+"/") {
			delete(m.dirs, d)
			m.dirs[newPath+strings.TrimPrefix(d, oldPath)] = true
		}
	}
	for f, b := range m.files {
		if strings.HasPrefix(f, oldPath+"/") {
			delete(m.files, f)
			m.files[newPath+strings.TrimPrefix(f, oldPath)] = b
		}
	}
	return nil
}

// Stat describes p.
func (m *MemFS) Stat(ctx context.Context, p string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "stat", p); err != nil {
		return nil, err
	}
	if m.dirs[p] {
		return info{name: path.Base(p), dir: true}, nil
	}
	if b, ok := m.files[p]; ok {
		return info{name: path.Base(p), size: int64(len(b))}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: p, Err: os.ErrNotExist}
}

// ReadDir lists a directory.
func (m *MemFS) ReadDir(ctx context.Context, p string) ([]fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "readdir", p); err != nil {
		return nil, err
	}
	if !m.dirs[p] {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: os.ErrNotExist}
	}
	return m.children(p), nil
}

func (m *MemFS) children(p string) []fs.FileInfo {
	var out []fs.FileInfo
	under := func(q string) bool {
		if p == "" {
			return q != "" && !strings.Contains(q, "/")
		}
		return path.Dir(q) == p
	}
	for d := range m.dirs {
		if under(d) {
			out = append(out, info{name: path.Base(d), dir: true})
		}
	}
	for f, b := range m.files {
		if under(f) {
			out = append(out, info{name: path.Base(f), size: int64(len(b))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// ReadFile returns a file's content.
func (m *MemFS) ReadFile(ctx context.Context, p string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "read", p); err != nil {
		return nil, err
	}
	b, ok := m.files[p]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: p, Err: os.ErrNotExist}
	}
	return append([]byte(nil), b...), nil
}

// WriteFile writes a file; its directory must exist.
func (m *MemFS) WriteFile(ctx context.Context, p string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	if err := m.check(ctx, "write", p); err != nil {
		return err
	}
	if !m.dirs[path.Dir(p)] && path.Dir(p) != "." {
		return &fs.PathError{Op: "write", Path: p, Err: os.ErrNotExist}
	}
	m.files[p] = append([]byte(nil), data...)
	return nil
}

// Exists reports whether p is a file or directory (for assertions).
func (m *MemFS) Exists(p string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p = clean(p)
	_, isFile := m.files[p]
	return isFile || m.dirs[p]
}

// PutFile writes a file directly, bypassing Fail (for test setup).
func (m *MemFS) PutFile(p string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[clean(p)] = data
}

type info struct {
	name string
	size int64
	dir  bool
}

func (i info) Name() string { return i.name }
func (i info) Size() int64  { return i.size }
func (i info) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o777
	}
	return 0o644
}
func (i info) ModTime() time.Time { return time.Time{} }
func (i info) IsDir() bool        { return i.dir }
func (i info) Sys() any           { return nil }

package mount

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrStatTimeout is a statfs that did not return before its context ended;
// it keeps running in the background and at most one runs per path.
var ErrStatTimeout = errors.New("statfs did not return in time")

// Usage is what statfs says about a mounted filesystem.
type Usage struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// StatResult is one completed statfs.
type StatResult struct {
	Usage    Usage
	Err      error // the syscall's error (an unix.Errno wrapped in *os.SyscallError), nil on success
	Started  time.Time
	Finished time.Time
}

// StatfsFunc is the syscall; tests substitute a fake that blocks.
type StatfsFunc func(path string, st *unix.Statfs_t) error

// Statter runs statfs calls that may hang forever (a dead hard mount) in
// goroutines of their own, never more than one per path, and never under a
// lock. Callers wait only as long as their context allows.
type Statter struct {
	statfs   StatfsFunc
	mu       sync.Mutex
	inflight map[string]*statCall
}

type statCall struct {
	done chan struct{}
	res  StatResult
}

// NewStatter builds a Statter around fn (nil: the real unix.Statfs).
func NewStatter(fn StatfsFunc) *Statter {
	if fn == nil {
		fn = unix.Statfs
	}
	return &Statter{statfs: fn, inflight: map[string]*statCall{}}
}

// Statfs returns a fresh statfs of path, joining the call already in flight
// for path if there is one. If ctx ends first it returns ErrStatTimeout and
// the call goes on; callers that join it before it returns get its result.
func (s *Statter) Statfs(ctx context.Context, path string) (StatResult, error) {
	s.mu.Lock()
	c, ok := s.inflight[path]
	if !ok {
		c = &statCall{done: make(chan struct{})}
		s.inflight[path] = c
		go s.do(path, c)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.res, nil
	case <-ctx.Done():
		return StatResult{}, fmt.Errorf("%w: %s: %w", ErrStatTimeout, path, ctx.Err())
	}
}

func (s *Statter) do(path string, c *statCall) {
	var st unix.Statfs_t
	start := time.Now()
	err := s.statfs(path, &st)
	res := StatResult{Started: start, Finished: time.Now()}
	if err != nil {
		res.Err = &pathError{op: "statfs", path: path, err: err}
	} else {
		res.Usage = usageOf(&st)
	}
	s.mu.Lock()
	c.res = res
	delete(s.inflight, path)
	s.mu.Unlock()
	close(c.done)
}

// InFlight reports whether a statfs of path is running.
func (s *Statter) InFlight(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inflight[path]
	return ok
}

func usageOf(st *unix.Statfs_t) Usage {
	bs := int64(st.Bsize) //nolint:unconvert // Bsize is int64 on amd64 only
	u := Usage{
		TotalBytes:     int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		UsedBytes:      (int64(st.Blocks) - int64(st.Bfree)) * bs,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
	}
	u.UsedInodes = u.TotalInodes - u.FreeInodes
	return u
}

// pathError keeps the errno reachable with errors.Is/As.
type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

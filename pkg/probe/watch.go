package probe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// Kinds of WatchEvent.
const (
	WatchStarted     = "watching"     // the watch stands (again, after a loss: see Note)
	WatchAdded       = "added"        // a name appeared
	WatchRemoved     = "removed"      // a name went away
	WatchModified    = "modified"     // a file was written
	WatchRenamedFrom = "renamed-from" // the old name of a rename; renamed-to follows
	WatchRenamedTo   = "renamed-to"
	WatchOverflow    = "overflow" // the server dropped changes: the directory must be listed again
	WatchLost        = "lost"     // the connection failed; the watch is set up again after WatchOptions.Retry
	WatchGone        = "gone"     // the watched directory itself was removed: the watch ends
)

// ErrWatchedDirGone ends a Watch whose directory was removed or never
// existed.
var ErrWatchedDirGone = errors.New("the watched directory is gone")

// WatchEvent is one line of `csi-smb probe --watch`.
type WatchEvent struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`           // Watch*
	Name string    `json:"name,omitempty"` // below the watched directory, slash-separated
	Note string    `json:"note,omitempty"` // what a watching, overflow, lost or gone line means
}

// WatchOptions tune a Watch. Zero values get defaults.
type WatchOptions struct {
	// Recursive watches the whole subtree, not only the directory's names.
	Recursive bool
	// Timeout bounds a session setup, a directory open and an ECHO;
	// default 5 s.
	Timeout time.Duration
	// KeepAlive is the interval of the checks that tell a dead server or a
	// removed directory from a quiet one (a pending notify proves nothing,
	// and a directory removed on the server's own disk ends no notify): the
	// directory opened again by its path and closed; default 5 s.
	KeepAlive time.Duration
	// Retry is the pause before setting the watch up again after a loss;
	// default 2 s.
	Retry time.Duration
}

func (o WatchOptions) withDefaults() WatchOptions {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 5 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	return o
}

// WatchConn is what a watch needs of a connection (pkg/smb's TreeConn).
type WatchConn interface {
	OpenDir(ctx context.Context, dir string) (wire.FileID, error)
	NotifyChanges(ctx context.Context, fid wire.FileID, maxOut, filter uint32, tree bool) ([]wire.NotifyEvent, error)
	CloseFile(ctx context.Context, fid wire.FileID) error
	Close() error
}

// WatchDialFunc opens a WatchConn to share on the server at addr.
type WatchDialFunc func(ctx context.Context, addr, share string, creds auth.Credentials) (WatchConn, error)

// WatchTarget is the directory a watch follows: a path the probe found,
// for a DFS path the first target that has it.
func (r Report) WatchTarget() (ShareReport, bool) {
	if r.Share != nil {
		return *r.Share, r.Share.Status == ShareOK
	}
	if r.DFS != nil {
		for _, t := range r.DFS.Targets {
			if t.Share.Status == ShareOK {
				return t.Share, true
			}
		}
	}
	return ShareReport{}, false
}

// watchFilter is what a watch reports: names added, removed and renamed,
// and files written.
const watchFilter = wire.NotifyFileName | wire.NotifyDirName | wire.NotifyLastWrite

// Watch streams the CHANGE_NOTIFY events of the directory target to emit
// until ctx ends (it returns ctx's error) or the directory is gone
// (ErrWatchedDirGone), or the server refuses access (smb.ErrAccessDenied
// or smb.ErrAuth). A lost connection is reported, retried and, once the
// watch stands again, reported with a note that changes in between were
// not seen: nothing is lost silently.
func Watch(ctx context.Context, target ShareReport, creds auth.Credentials, opts WatchOptions, deps Deps, emit func(WatchEvent)) error {
	o := opts.withDefaults()
	dial := deps.DialTree
	if dial == nil {
		d := smb.ProbeDialer{Dial: deps.Dial}
		dial = func(ctx context.Context, addr, share string, creds auth.Credentials) (WatchConn, error) {
			return d.DialTree(ctx, addr, share, creds)
		}
	}
	now := deps.now()
	say := func(kind, name, note string) {
		emit(WatchEvent{Time: now().UTC(), Kind: kind, Name: name, Note: note})
	}
	for again := false; ; again = true {
		err := watchOnce(ctx, dial, target, creds, o, again, say)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, os.ErrNotExist), errors.Is(err, smb.ErrWatchedDirGone):
			say(WatchGone, "", fmt.Sprintf("the directory %q is not on \\\\%s\\%s: %v", target.Path, hostOf(target.Address), target.Share, err))
			return fmt.Errorf("%w: %w", ErrWatchedDirGone, err)
		case errors.Is(err, smb.ErrAccessDenied), errors.Is(err, smb.ErrAuth):
			say(WatchLost, "", err.Error())
			return err
		}
		say(WatchLost, "", fmt.Sprintf("%v; watching again in %v", err, o.Retry))
		t := time.NewTimer(o.Retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// watchOnce sets the watch up on a new connection and follows it until
// the connection, the directory or ctx ends.
func watchOnce(ctx context.Context, dial WatchDialFunc, target ShareReport, creds auth.Credentials, o WatchOptions, again bool, say func(kind, name, note string)) error {
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	conn, err := dial(dctx, target.Address, target.Share, creds)
	cancel()
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	octx, cancel := context.WithTimeout(ctx, o.Timeout)
	fid, err := conn.OpenDir(octx, target.Path)
	cancel()
	if err != nil {
		return err
	}
	note := ""
	if again {
		note = "again: changes while the watch was down were not seen; list the directory to see where it stands"
	}
	say(WatchStarted, target.Path, note)

	// The keepalive ends a watch on a server that stopped answering or a
	// directory that is gone: closing the connection ends the notify.
	kctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var keepErr error
	wg.Go(func() { keepErr = keepAlive(kctx, conn, target.Path, o) })
	defer func() { stop(); wg.Wait() }()
	for {
		evs, err := conn.NotifyChanges(ctx, fid, wire.MaxNotifyOutput, watchFilter, o.Recursive)
		switch {
		case errors.Is(err, smb.ErrNotifyOverflow):
			say(WatchOverflow, "", "the server dropped changes (STATUS_NOTIFY_ENUM_DIR); list the directory to see where it stands")
			continue
		case err != nil:
			if ctx.Err() == nil {
				stop()
				wg.Wait()
				if keepErr != nil {
					err = keepErr
				}
			}
			return err
		}
		for _, e := range evs {
			say(actionKind(e.Action), e.Name, "")
		}
	}
}

// keepAlive opens dir again by its path every o.KeepAlive, and closes it,
// until ctx ends. An open that fails, or goes unanswered for o.Timeout,
// closes conn and is returned (os.ErrNotExist: the directory is gone).
func keepAlive(ctx context.Context, conn WatchConn, dir string, o WatchOptions) error {
	t := time.NewTicker(o.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		fid, err := conn.OpenDir(cctx, dir)
		if err == nil {
			err = conn.CloseFile(cctx, fid)
		}
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, os.ErrNotExist):
			_ = conn.Close()
			return err
		case errors.Is(err, context.DeadlineExceeded):
			_ = conn.Close()
			return fmt.Errorf("the server did not answer a check within %v: %w", o.Timeout, err)
		case err != nil:
			_ = conn.Close()
			return fmt.Errorf("check of the directory: %w", err)
		}
	}
}

func actionKind(a uint32) string {
	switch a {
	case wire.ActionAdded:
		return WatchAdded
	case wire.ActionRemoved:
		return WatchRemoved
	case wire.ActionModified:
		return WatchModified
	case wire.ActionRenamedOldName:
		return WatchRenamedFrom
	case wire.ActionRenamedNewName:
		return WatchRenamedTo
	}
	return fmt.Sprintf("action-%#x", a)
}

package provision

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Outcome says what Delete did with the directory, for logs and events.
type Outcome string

// Delete outcomes.
const (
	Deleted  Outcome = "deleted"
	Archived Outcome = "archived"
	Retained Outcome = "retained"
	Shared   Outcome = "kept: other volumes use the directory"
	Gone     Outcome = "already gone"
)

// Delete applies v's onDelete policy. A directory that other volumes'
// records still point at is never removed or renamed; only v's record goes.
// Deleting a volume that is already gone succeeds.
func Delete(ctx context.Context, fsys FS, v volume.Volume, now time.Time) (Outcome, string, error) {
	others, err := otherUsers(ctx, fsys, v)
	if err != nil {
		return "", "", err
	}
	var out Outcome
	var where string
	switch {
	case others > 0:
		out = Shared
	case v.OnDelete == volume.OnDeleteRetain:
		out = Retained
	case v.OnDelete == volume.OnDeleteArchive:
		out, where, err = archive(ctx, fsys, v, now)
	default:
		out, err = remove(ctx, fsys, v)
	}
	if err != nil {
		return "", "", err
	}
	if err := fsys.Remove(ctx, RecordPath(v)); err != nil && !isNotExist(err) {
		return "", "", fmt.Errorf("remove record: %w", err)
	}
	if others == 0 {
		// Best effort: a record folder another create just wrote into is not
		// empty and stays.
		_ = fsys.Remove(ctx, recordDir(v))
	}
	return out, where, nil
}

// otherUsers counts records of other volumes on v's directory.
func otherUsers(ctx context.Context, fsys FS, v volume.Volume) (int, error) {
	fis, err := fsys.ReadDir(ctx, recordDir(v))
	if isNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list records: %w", err)
	}
	own := path.Base(RecordPath(v))
	n := 0
	for _, fi := range fis {
		if name := fi.Name(); strings.HasSuffix(name, ".json") && name != own {
			n++
		}
	}
	return n, nil
}

func remove(ctx context.Context, fsys FS, v volume.Volume) (Outcome, error) {
	ok, err := Exists(ctx, fsys, v)
	if err != nil {
		return "", err
	}
	if !ok {
		return Gone, nil
	}
	if err := fsys.RemoveAll(ctx, v.Dir()); err != nil {
		return "", fmt.Errorf("delete %s: %w", v.Dir(), err)
	}
	return Deleted, nil
}

// archive renames the directory to archived-<name> next to it, adding a
// timestamp when that name is taken (a volume archived before).
func archive(ctx context.Context, fsys FS, v volume.Volume, now time.Time) (Outcome, string, error) {
	ok, err := Exists(ctx, fsys, v)
	if err != nil {
		return "", "", err
	}
	if !ok {
		return Gone, "", nil
	}
	dir := v.Dir()
	target := path.Join(path.Dir(dir), "archived-"+path.Base(dir))
	if _, err := fsys.Stat(ctx, target); err == nil {
		target += "-" + now.UTC().Format("20060102T150405.000Z")
	} else if !isNotExist(err) {
		return "", "", fmt.Errorf("stat %s: %w", target, err)
	}
	if err := fsys.Rename(ctx, dir, target); err != nil {
		return "", "", fmt.Errorf("archive %s to %s: %w", dir, target, err)
	}
	return Archived, target, nil
}

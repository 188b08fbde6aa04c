// Package provision is the controller's volume lifecycle on a share: a
// directory per volume plus a small record per volume in
// <base>/.csi-smb/<digest of the directory>/<uid>.json.
// The record makes CreateVolume idempotent across controller restarts (same
// name and parameters: same volume; other parameters: ErrConflict) and lets
// DeleteVolume see whether other volumes still use a directory.
package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/csi-smb/csi-smb/pkg/volume"
)

// MetaDir is the record directory below each source path.
const MetaDir = ".csi-smb"

// maxRecordSize caps what we read back from the share (untrusted bytes).
const maxRecordSize = 64 << 10

// Domain errors, mapped to gRPC codes by the driver.
var (
	// ErrConflict: the name exists with other parameters or capacity.
	ErrConflict = errors.New("volume exists with different parameters")
	// ErrNotDirectory: something that is not a directory sits where the volume goes.
	ErrNotDirectory = errors.New("volume path exists and is not a directory")
	// ErrCorruptRecord: a record on the share cannot be parsed.
	ErrCorruptRecord = errors.New("corrupt volume record")
)

// FS is what provisioning needs from a share; *smb.Share implements it.
// Paths are relative to the share root, slash-separated.
type FS interface {
	Mkdir(ctx context.Context, dir string) error
	MkdirAll(ctx context.Context, dir string) error
	RemoveAll(ctx context.Context, path string) error
	Remove(ctx context.Context, path string) error
	Rename(ctx context.Context, oldPath, newPath string) error
	Stat(ctx context.Context, path string) (fs.FileInfo, error)
	ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error)
	ReadFile(ctx context.Context, path string) ([]byte, error)
	WriteFile(ctx context.Context, path string, data []byte) error
}

// Record is what the controller remembers about a volume, on the share.
type Record struct {
	Version       int       `json:"version"`
	Name          string    `json:"name"`
	VolumeID      string    `json:"volumeId"`
	CapacityBytes int64     `json:"capacityBytes"`
	Created       time.Time `json:"created"`
}

// Request is a validated CreateVolume.
type Request struct {
	Name          string
	Volume        volume.Volume
	RequiredBytes int64
	LimitBytes    int64
}

// capacity is what we report: SMB directories have no size of their own, so
// the requested size is informational (0 when none was asked for).
func (r Request) capacity() int64 {
	if r.RequiredBytes > 0 {
		return r.RequiredBytes
	}
	return r.LimitBytes
}

// RecordPath is where v's record lives: in a folder per volume directory,
// so DeleteVolume lists only the volumes that share v's directory, however
// many volumes the share holds.
func RecordPath(v volume.Volume) string {
	return path.Join(recordDir(v), v.UID+".json")
}

func recordDir(v volume.Volume) string {
	return path.Join(v.Source.Path, MetaDir, dirKey(v.SubDir))
}

func dirKey(subDir string) string {
	sum := sha256.Sum256([]byte(subDir))
	return hex.EncodeToString(sum[:8])
}

// Create makes the volume's directory and record, or returns the existing
// record of the same request.
func Create(ctx context.Context, fsys FS, req Request, now time.Time) (Record, error) {
	v := req.Volume
	// The record folder is created first: when that succeeds the volume is
	// new and there is no record to read, which saves a round trip on the
	// common path.
	err := ensureDir(ctx, fsys, recordDir(v))
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return Record{}, fmt.Errorf("record directory: %w", err)
	}
	rec, found := Record{}, false
	if err != nil {
		if rec, found, err = ReadRecord(ctx, fsys, v); err != nil {
			return Record{}, err
		}
	}
	if found {
		if err := compatible(rec, req); err != nil {
			return Record{}, err
		}
	}
	if err := mkdir(ctx, fsys, v.Dir()); err != nil {
		return Record{}, err
	}
	if found {
		return rec, nil
	}
	rec = Record{Version: 1, Name: req.Name, VolumeID: v.ID(), CapacityBytes: req.capacity(), Created: now.UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return Record{}, fmt.Errorf("encode record: %w", err)
	}
	if err := fsys.WriteFile(ctx, RecordPath(v), b); err != nil {
		return Record{}, fmt.Errorf("write record: %w", err)
	}
	return rec, nil
}

func compatible(rec Record, req Request) error {
	switch {
	case rec.Name != req.Name:
		return fmt.Errorf("%w: record %s belongs to volume %q", ErrConflict, RecordPath(req.Volume), rec.Name)
	case rec.VolumeID != req.Volume.ID():
		return fmt.Errorf("%w: volume %q exists as %s", ErrConflict, req.Name, rec.VolumeID)
	case req.RequiredBytes > 0 && rec.CapacityBytes < req.RequiredBytes,
		req.LimitBytes > 0 && rec.CapacityBytes > req.LimitBytes:
		return fmt.Errorf("%w: volume %q exists with capacity %d bytes, outside the requested range [%d, %d]",
			ErrConflict, req.Name, rec.CapacityBytes, req.RequiredBytes, req.LimitBytes)
	}
	return nil
}

// mkdir creates dir with one request in the common case (its parent
// exists), falling back to MkdirAll, and accepts an existing directory.
func mkdir(ctx context.Context, fsys FS, dir string) error {
	err := ensureDir(ctx, fsys, dir)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := fsys.Stat(ctx, dir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s", ErrNotDirectory, dir)
	}
	return nil
}

// ensureDir creates dir (parents only when missing); an existing entry is
// reported as fs.ErrExist for the caller to judge.
func ensureDir(ctx context.Context, fsys FS, dir string) error {
	err := fsys.Mkdir(ctx, dir)
	switch {
	case err == nil, errors.Is(err, fs.ErrExist):
		return err
	case isNotExist(err):
		err = fsys.MkdirAll(ctx, dir)
	}
	if err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return nil
}

// ReadRecord reads v's record; found is false when there is none.
func ReadRecord(ctx context.Context, fsys FS, v volume.Volume) (Record, bool, error) {
	b, err := fsys.ReadFile(ctx, RecordPath(v))
	if isNotExist(err) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read record: %w", err)
	}
	if len(b) == 0 {
		return Record{}, false, nil // created but never written: a crash mid-create
	}
	rec, err := decodeRecord(b)
	if err != nil {
		return Record{}, false, fmt.Errorf("%w %s: %w", ErrCorruptRecord, RecordPath(v), err)
	}
	return rec, true, nil
}

func decodeRecord(b []byte) (Record, error) {
	if len(b) > maxRecordSize {
		return Record{}, fmt.Errorf("%d bytes is over the %d byte limit", len(b), maxRecordSize)
	}
	var rec Record
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("decode: %w", err)
	}
	if rec.Version != 1 || rec.Name == "" || rec.CapacityBytes < 0 {
		return Record{}, fmt.Errorf("version %d, name %q, capacity %d: not a valid record", rec.Version, rec.Name, rec.CapacityBytes)
	}
	if _, err := volume.ParseID(rec.VolumeID); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Exists reports whether the volume's directory is present.
func Exists(ctx context.Context, fsys FS, v volume.Volume) (bool, error) {
	fi, err := fsys.Stat(ctx, v.Dir())
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", v.Dir(), err)
	}
	return fi.IsDir(), nil
}

func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, fs.ErrNotExist)
}

package health

import (
	"strings"
	"time"
)

// DirTarget names a volume's directory as a watch sees it: the entry Name
// in the directory Dir (slash-separated, relative to the share root; "" is
// the root) of Share on the SMB server Addr (host:port).
type DirTarget struct {
	Addr, Share, Dir, Name string
}

// Key is the Store key of the volume directory: //addr/share/dir/name.
func (t DirTarget) Key() string {
	return strings.TrimSuffix("//"+t.Addr+"/"+t.Share+"/"+strings.Trim(t.Dir, "/"), "/") + "/" + t.Name
}

// WatchKey is the Store key of the watch on the directory holding it.
func (t DirTarget) WatchKey() string {
	return strings.TrimSuffix("//"+t.Addr+"/"+t.Share+"/"+strings.Trim(t.Dir, "/"), "/")
}

// Reasons of a volume whose directory is gone from its share.
const (
	// ReasonDirMissing: the volume's directory does not exist (removed).
	ReasonDirMissing = "VolumeDirectoryMissing"
	// ReasonDirRenamed: a watch saw the directory renamed within its
	// parent: its data is likely under the new name.
	ReasonDirRenamed = "VolumeDirectoryRenamed"
)

// DirState says whether a volume's directory exists on its share.
type DirState int

// Directory states.
const (
	DirUnknown DirState = iota // not seen yet
	DirPresent
	DirMissing
)

func (s DirState) String() string {
	switch s {
	case DirPresent:
		return "present"
	case DirMissing:
		return "missing"
	}
	return "unknown"
}

// DirVerdict is what a CHANGE_NOTIFY watch knows of one volume directory.
type DirVerdict struct {
	State DirState
	// RenamedTo is the directory's new name when it was renamed within its
	// parent (State is then DirMissing).
	RenamedTo string
	// Watching: a watch stands on the parent, so State is current. False:
	// State is the last one known (the watch is being set up or was lost)
	// and a consumer should not rely on it alone.
	Watching bool
	At       time.Time // when State was last established
}

// WatchState is the state of one directory watch, with running totals a
// metrics consumer turns into counters (they never go down, so coalesced
// updates lose nothing).
type WatchState struct {
	Role     string // who watches: controller or node
	Watching bool
	// Unsupported: the server cannot be watched (it requires SMB3
	// encryption with AES-CCM, which the driver's own requests do not
	// implement); the volumes in the directory are polled. Not a loss.
	Unsupported bool
	Message     string // why not watching
	Since       time.Time
	// Totals since the watch was first acquired.
	Losses, Rescans, Removed, Renamed, Restored uint64
}

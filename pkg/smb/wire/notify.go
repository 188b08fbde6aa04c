package wire

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Commands and statuses of the directory watch (MS-SMB2 2.2.1, MS-ERREF 2.3).
const (
	CmdCreate       = 0x0005
	CmdClose        = 0x0006
	CmdCancel       = 0x000C
	CmdChangeNotify = 0x000F
	// StatusNotifyEnumDir: the server dropped changes (its buffer
	// overflowed); the client must list the directory again.
	StatusNotifyEnumDir = 0x0000010C
	// StatusNotifyCleanup: the handle was closed under a pending notify.
	StatusNotifyCleanup = 0x0000010B
	StatusCancelled     = 0xC0000120
	// StatusDeletePending: the watched directory itself is being deleted.
	StatusDeletePending = 0xC0000056
	StatusFileClosed    = 0xC0000128
	StatusNameNotFound  = 0xC0000034 // STATUS_OBJECT_NAME_NOT_FOUND
	StatusPathNotFound  = 0xC000003A // STATUS_OBJECT_PATH_NOT_FOUND

	createFixed     = 56 // CREATE request without its buffer
	createRespFixed = 88
	closeBody       = 24
	notifyBody      = 32
	notifyRespFixed = 8
	cancelBody      = 4
	// MaxNameBytes bounds a path we open: far above any server's limit.
	MaxNameBytes = 4096
	// MaxNotifyOutput is the largest notify buffer asked for: what fits in
	// one credit and in a probe frame.
	MaxNotifyOutput = MaxProbeFrame - HeaderSize - notifyRespFixed
)

// Completion filter bits of CHANGE_NOTIFY (MS-SMB2 2.2.35).
const (
	NotifyFileName   = 0x00000001
	NotifyDirName    = 0x00000002
	NotifyAttributes = 0x00000004
	NotifySize       = 0x00000008
	NotifyLastWrite  = 0x00000010
)

// Actions of FILE_NOTIFY_INFORMATION (MS-FSCC 2.7.1).
const (
	ActionAdded          = 0x00000001
	ActionRemoved        = 0x00000002
	ActionModified       = 0x00000003
	ActionRenamedOldName = 0x00000004
	ActionRenamedNewName = 0x00000005
)

// FileID is an SMB2_FILEID: persistent and volatile halves.
type FileID [16]byte

// NotifyEvent is one FILE_NOTIFY_INFORMATION record: a name relative to
// the watched directory, slash-separated.
type NotifyEvent struct {
	Action uint32
	Name   string
}

// CreateDirRequest encodes a framed CREATE that opens the existing
// directory dir (slash-separated, relative to the share root; "" is the
// root) for listing and watching, sharing read, write and delete so the
// open never stands in the way of what it watches. No oplock, no lease, no
// create contexts.
func CreateDirRequest(messageID, sessionID uint64, treeID uint32, dir string, credits uint16) ([]byte, error) {
	name, err := encodeName(dir)
	if err != nil {
		return nil, err
	}
	b := requestCredits(CmdCreate, messageID, sessionID, treeID, createFixed+max(len(name), 1), credits)
	body := b[4+HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], createFixed+1)
	binary.LittleEndian.PutUint32(body[4:8], 2)          // ImpersonationLevel: Impersonation
	binary.LittleEndian.PutUint32(body[24:28], 0x100081) // SYNCHRONIZE | FILE_READ_ATTRIBUTES | FILE_LIST_DIRECTORY
	binary.LittleEndian.PutUint32(body[32:36], 7)        // FILE_SHARE_READ | WRITE | DELETE
	binary.LittleEndian.PutUint32(body[36:40], 1)        // FILE_OPEN
	binary.LittleEndian.PutUint32(body[40:44], 1)        // FILE_DIRECTORY_FILE
	binary.LittleEndian.PutUint16(body[44:46], HeaderSize+createFixed)
	binary.LittleEndian.PutUint16(body[46:48], uint16(len(name))) //nolint:gosec // encodeName caps it at MaxNameBytes
	copy(body[createFixed:], name)
	return b, nil
}

// encodeName turns a slash path into the UTF-16LE, backslash-separated
// name CREATE carries.
func encodeName(dir string) ([]byte, error) {
	dir = strings.Trim(dir, "/")
	if strings.ContainsAny(dir, "\\\x00") || strings.Contains(dir, "//") {
		return nil, fmt.Errorf("directory %q: backslash, NUL or empty component", dir)
	}
	u := utf16.Encode([]rune(strings.ReplaceAll(dir, "/", `\`)))
	if 2*len(u) > MaxNameBytes {
		return nil, fmt.Errorf("directory %q: name over %d bytes", dir, MaxNameBytes)
	}
	out := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(out[2*i:], c)
	}
	return out, nil
}

// CreateFileID returns the FileId of a successful CREATE response msg (a
// frame without its prefix, header included).
func CreateFileID(msg []byte) (FileID, error) {
	if len(msg) < HeaderSize+createRespFixed {
		return FileID{}, fmt.Errorf("%w: CREATE response of %d bytes", ErrMalformed, len(msg))
	}
	body := msg[HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != createRespFixed+1 {
		return FileID{}, fmt.Errorf("%w: CREATE response structure size", ErrMalformed)
	}
	var id FileID
	copy(id[:], body[64:80])
	return id, nil
}

// CloseRequest encodes a framed CLOSE of fid.
func CloseRequest(messageID, sessionID uint64, treeID uint32, fid FileID, credits uint16) []byte {
	b := requestCredits(CmdClose, messageID, sessionID, treeID, closeBody, credits)
	body := b[4+HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], closeBody)
	copy(body[8:24], fid[:])
	return b
}

// ChangeNotifyRequest encodes a framed CHANGE_NOTIFY on the directory fid
// for the changes in filter, answered with at most maxOut bytes of
// FILE_NOTIFY_INFORMATION (beyond that the server answers
// STATUS_NOTIFY_ENUM_DIR). tree watches the whole subtree.
func ChangeNotifyRequest(messageID, sessionID uint64, treeID uint32, fid FileID, filter, maxOut uint32, tree bool, credits uint16) ([]byte, error) {
	if maxOut == 0 || maxOut > MaxNotifyOutput {
		return nil, fmt.Errorf("CHANGE_NOTIFY output of %d bytes: want 1 to %d", maxOut, MaxNotifyOutput)
	}
	b := requestCredits(CmdChangeNotify, messageID, sessionID, treeID, notifyBody, credits)
	body := b[4+HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], notifyBody)
	if tree {
		binary.LittleEndian.PutUint16(body[2:4], 1) // SMB2_WATCH_TREE
	}
	binary.LittleEndian.PutUint32(body[4:8], maxOut)
	copy(body[8:24], fid[:])
	binary.LittleEndian.PutUint32(body[24:28], filter)
	return b, nil
}

// CancelRequest encodes a framed CANCEL of the request messageID: with an
// async header naming asyncID when the server answered it with an interim
// response, else with a sync one. A CANCEL charges no credit and uses the
// MessageId of the request it cancels (MS-SMB2 3.2.4.24).
func CancelRequest(messageID, sessionID, asyncID uint64, treeID uint32) []byte {
	b := requestCredits(CmdCancel, messageID, sessionID, treeID, cancelBody, 0)
	h := b[4:]
	binary.LittleEndian.PutUint16(h[6:8], 0)   // CreditCharge
	binary.LittleEndian.PutUint16(h[14:16], 0) // CreditRequest
	if asyncID != 0 {
		binary.LittleEndian.PutUint32(h[16:20], FlagAsync)
		binary.LittleEndian.PutUint64(h[32:40], asyncID)
	}
	binary.LittleEndian.PutUint16(b[4+HeaderSize:], cancelBody)
	return b
}

// ChangeNotifyOutput returns the FILE_NOTIFY_INFORMATION buffer of a
// successful CHANGE_NOTIFY response msg, bounds-checked; empty when the
// server had nothing to say.
func ChangeNotifyOutput(msg []byte) ([]byte, error) {
	if len(msg) < HeaderSize+notifyRespFixed {
		return nil, fmt.Errorf("%w: CHANGE_NOTIFY response of %d bytes", ErrMalformed, len(msg))
	}
	body := msg[HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != notifyRespFixed+1 {
		return nil, fmt.Errorf("%w: CHANGE_NOTIFY response structure size", ErrMalformed)
	}
	off, n := uint64(binary.LittleEndian.Uint16(body[2:4])), uint64(binary.LittleEndian.Uint32(body[4:8]))
	if n == 0 {
		return nil, nil
	}
	if off < HeaderSize+notifyRespFixed || off+n > uint64(len(msg)) {
		return nil, fmt.Errorf("%w: CHANGE_NOTIFY output [%d, +%d) outside a %d-byte response", ErrMalformed, off, n, len(msg))
	}
	return msg[off : off+n], nil
}

// maxNotifyEvents caps the records of one answer: a record is at least 12
// bytes, so a full buffer holds fewer.
const maxNotifyEvents = MaxNotifyOutput / 12

// ParseNotifyInformation decodes a chain of FILE_NOTIFY_INFORMATION
// records. Names come back slash-separated.
func ParseNotifyInformation(b []byte) ([]NotifyEvent, error) {
	var out []NotifyEvent
	for off := 0; off < len(b); {
		if len(out) == maxNotifyEvents {
			return nil, fmt.Errorf("%w: more than %d notify records", ErrMalformed, maxNotifyEvents)
		}
		rec := b[off:]
		if len(rec) < 12 {
			return nil, fmt.Errorf("%w: notify record at %d: %d bytes", ErrMalformed, off, len(rec))
		}
		next := int(binary.LittleEndian.Uint32(rec[0:4]))
		action := binary.LittleEndian.Uint32(rec[4:8])
		n := uint64(binary.LittleEndian.Uint32(rec[8:12]))
		if n%2 != 0 || 12+n > uint64(len(rec)) || (next != 0 && (next < 12+int(n) || next%4 != 0 || next > len(rec))) {
			return nil, fmt.Errorf("%w: notify record at %d: name of %d bytes, next at %d, %d bytes left", ErrMalformed, off, n, next, len(rec))
		}
		u := make([]uint16, n/2)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(rec[12+2*i:])
		}
		out = append(out, NotifyEvent{Action: action, Name: strings.ReplaceAll(string(utf16.Decode(u)), `\`, "/")})
		if next == 0 {
			break
		}
		off += next
	}
	return out, nil
}

// EncodeNotifyInformation encodes events as a FILE_NOTIFY_INFORMATION
// chain, each record aligned on 4 bytes: what a server sends (tests and
// fuzzing use it).
func EncodeNotifyInformation(events []NotifyEvent) []byte {
	var b []byte
	for i, e := range events {
		u := utf16.Encode([]rune(strings.ReplaceAll(e.Name, "/", `\`)))
		size := 12 + 2*len(u)
		padded := (size + 3) &^ 3
		rec := make([]byte, padded)
		if i < len(events)-1 {
			binary.LittleEndian.PutUint32(rec[0:4], uint32(padded)) //nolint:gosec // a name of a few KiB
		}
		binary.LittleEndian.PutUint32(rec[4:8], e.Action)
		binary.LittleEndian.PutUint32(rec[8:12], uint32(2*len(u))) //nolint:gosec // as above
		for j, c := range u {
			binary.LittleEndian.PutUint16(rec[12+2*j:], c)
		}
		if i == len(events)-1 {
			rec = rec[:size]
		}
		b = append(b, rec...)
	}
	return b
}

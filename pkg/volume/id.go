package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// OnDelete is what DeleteVolume does with the volume's directory.
type OnDelete string

// The onDelete policies of the StorageClass parameter of that name.
const (
	OnDeleteDelete  OnDelete = "delete"
	OnDeleteRetain  OnDelete = "retain"
	OnDeleteArchive OnDelete = "archive"
)

// ParseOnDelete accepts the three policies, case-insensitively; "" is delete.
func ParseOnDelete(s string) (OnDelete, error) {
	switch OnDelete(strings.ToLower(s)) {
	case "", OnDeleteDelete:
		return OnDeleteDelete, nil
	case OnDeleteRetain:
		return OnDeleteRetain, nil
	case OnDeleteArchive:
		return OnDeleteArchive, nil
	}
	return "", fieldErr(ParamOnDelete, s, "must be one of delete, retain, archive")
}

// Volume is a provisioned volume: a directory SubDir below Source, what to do
// with it on deletion, and UID, a digest of the CSI volume name that keeps two
// volumes on the same directory apart.
type Volume struct {
	Source   Source
	SubDir   string
	OnDelete OnDelete
	UID      string
}

// Dir is the volume's directory relative to the share root.
func (v Volume) Dir() string { return v.Source.Join(v.SubDir).Path }

// Parent splits the volume's directory into the directory that holds it
// (relative to the share root, "" for the root) and its name; ok is false
// for a volume that is the share root itself.
func (v Volume) Parent() (dir, name string, ok bool) {
	d := v.Dir()
	if d == "" {
		return "", "", false
	}
	i := strings.LastIndexByte(d, '/')
	if i < 0 {
		return "", d, true
	}
	return d[:i], d[i+1:], true
}

// Location is the volume's directory as an SMB source, the thing to mount.
func (v Volume) Location() Source { return v.Source.Join(v.SubDir) }

const (
	idVersion = "v1"
	idFields  = 7
	uidLen    = 16
	// MaxIDLen caps what ParseID reads; IDs this driver makes are far shorter.
	MaxIDLen = 2048
)

// UIDFor derives the UID of the volume with the CSI name name.
func UIDFor(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])[:uidLen]
}

// ID renders v as "v1#server#share#path#subDir#onDelete#uid", with '%' and
// '#' inside fields escaped as %25 and %23. ParseID(v.ID()) == v.
func (v Volume) ID() string {
	fields := []string{idVersion, v.Source.Server, v.Source.Share, v.Source.Path, v.SubDir, string(v.OnDelete), v.UID}
	for i := 1; i < len(fields); i++ {
		fields[i] = escapeField(fields[i])
	}
	return strings.Join(fields, "#")
}

// ParseID parses an ID made by Volume.ID. Anything else, including a
// non-canonical escaping of a valid ID, wraps ErrMalformedID.
func ParseID(id string) (Volume, error) {
	if len(id) > MaxIDLen {
		return Volume{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformedID, MaxIDLen)
	}
	fields := strings.Split(id, "#")
	if len(fields) != idFields || fields[0] != idVersion {
		return Volume{}, fmt.Errorf("%w: %q is not a %s volume id of this driver", ErrMalformedID, id, idVersion)
	}
	for i := 1; i < len(fields); i++ {
		f, ok := unescapeField(fields[i])
		if !ok {
			return Volume{}, fmt.Errorf("%w: bad escape in field %d of %q", ErrMalformedID, i, id)
		}
		fields[i] = f
	}
	v, err := volumeFromFields(fields)
	if err != nil {
		return Volume{}, fmt.Errorf("%w: %q: %w", ErrMalformedID, id, err)
	}
	return v, nil
}

func volumeFromFields(f []string) (Volume, error) {
	src := Source{Server: f[1], Share: f[2]}
	if err := validateServer("server", src.Server); err != nil {
		return Volume{}, err
	}
	if err := validateShare("share", src.Share); err != nil {
		return Volume{}, err
	}
	var err error
	if src.Path, err = CleanRelPath("path", f[3]); err != nil || src.Path != f[3] {
		return Volume{}, fieldErr("path", f[3], "is not canonical")
	}
	subDir, err := CleanRelPath("subDir", f[4])
	if err != nil || subDir != f[4] || subDir == "" {
		return Volume{}, fieldErr("subDir", f[4], "is not a canonical relative path")
	}
	onDelete := OnDelete(f[5])
	if onDelete != OnDeleteDelete && onDelete != OnDeleteRetain && onDelete != OnDeleteArchive {
		return Volume{}, fieldErr("onDelete", f[5], "is not a policy")
	}
	if !isLowerHex(f[6], uidLen) {
		return Volume{}, fieldErr("uid", f[6], "is not %d lowercase hex digits", uidLen)
	}
	return Volume{Source: src, SubDir: subDir, OnDelete: onDelete, UID: f[6]}, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func escapeField(s string) string {
	if !strings.ContainsAny(s, "%#") {
		return s
	}
	return strings.NewReplacer("%", "%25", "#", "%23").Replace(s)
}

// unescapeField accepts exactly the escapes escapeField produces.
func unescapeField(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "%25"):
			b.WriteByte('%')
		case strings.HasPrefix(s[i:], "%23"):
			b.WriteByte('#')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

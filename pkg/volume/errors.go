// Package volume holds the pure, untrusted-input side of a csi-smb volume: the
// StorageClass parameters, the SMB source (//server/share/path), the volume
// context of static volumes, and the versioned volume ID. Nothing here does I/O.
package volume

import (
	"errors"
	"fmt"
)

// ErrInvalid marks input that can never become valid by retrying: a bad
// parameter, source, path or mount option. It maps to InvalidArgument.
var ErrInvalid = errors.New("invalid argument")

// ErrMalformedID marks a volume ID this driver did not produce. Callers decide
// what that means (NotFound for most RPCs, success for DeleteVolume).
var ErrMalformedID = errors.New("malformed volume id")

// FieldError names the field that was rejected and why.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// Unwrap lets errors.Is(err, ErrInvalid) hold for every FieldError.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, value, format string, args ...any) error {
	return &FieldError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

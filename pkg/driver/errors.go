package driver

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Driver-level domain errors.
var (
	errBusy         = errors.New("another operation on this volume is in progress")
	errAborted      = errors.New("aborted")
	errNotFound     = errors.New("volume not found")
	errNotStaged    = errors.New("volume is not staged")
	errIncompatible = errors.New("already mounted with an incompatible source or mode")
	errSingleWriter = errors.New("single-writer volume is already published at another path")
	errRequired     = errors.New("required field missing")
	errUnsupported  = errors.New("not supported")
	errInvalid      = errors.New("invalid argument")
)

// toStatus is the one place domain errors become gRPC codes. Order matters:
// an error can wrap several sentinels (a missing share during CreateVolume
// is both ErrInvalid and ErrShareNotFound); the first match wins.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	var he *mount.HelperError
	switch {
	case errors.Is(err, errRequired), errors.Is(err, volume.ErrInvalid), errors.Is(err, mount.ErrInvalidOption),
		errors.Is(err, errUnsupported), errors.Is(err, errInvalid):
		return codes.InvalidArgument
	case errors.Is(err, errBusy), errors.Is(err, errAborted):
		return codes.Aborted
	case errors.Is(err, errNotFound), errors.Is(err, volume.ErrMalformedID), errors.Is(err, smb.ErrShareNotFound):
		return codes.NotFound
	case errors.Is(err, provision.ErrConflict), errors.Is(err, errIncompatible):
		return codes.AlreadyExists
	case errors.Is(err, errNotStaged), errors.Is(err, errSingleWriter), errors.Is(err, provision.ErrNotDirectory),
		errors.Is(err, provision.ErrCorruptRecord):
		return codes.FailedPrecondition
	case errors.Is(err, smb.ErrAuth), errors.Is(err, smb.ErrAccessDenied):
		return codes.PermissionDenied
	case errors.Is(err, smb.ErrUnreachable), errors.Is(err, mount.ErrTimeout), errors.Is(err, mount.ErrBusy):
		// Our own bounds (a killed mount helper, a dead server) were cleaned
		// up: nothing is in progress, so not DeadlineExceeded.
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.As(err, &he):
		return errnoCode(he.Errno())
	}
	return codes.Internal
}

// errnoCode maps what mount.cifs reports as "mount error(N)".
func errnoCode(e syscall.Errno) codes.Code {
	switch e {
	case syscall.EACCES, syscall.EPERM, syscall.EKEYREJECTED:
		return codes.PermissionDenied
	case syscall.ENOENT, syscall.ENXIO:
		return codes.NotFound
	case syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ECONNREFUSED, syscall.ETIMEDOUT,
		syscall.ENETUNREACH, syscall.ECONNRESET, syscall.EAGAIN:
		return codes.Unavailable
	case syscall.EINVAL:
		return codes.InvalidArgument
	case syscall.EOPNOTSUPP, syscall.ENODEV, syscall.EPROTONOSUPPORT:
		return codes.FailedPrecondition
	}
	return codes.Internal
}

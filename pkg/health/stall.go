package health

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/csi-smb/csi-smb/pkg/mount"
)

// errnoENOTSUPP is the kernel-internal ENOTSUPP (524) that cifs on 5.1-5.12
// returns when a session runs out of credits ("Unknown error 524"); newer
// kernels return EDEADLK for the same condition.
const errnoENOTSUPP = syscall.Errno(524)

// Mount check reasons (CamelCase, for the CSI health API).
const (
	ReasonMountOK      = "MountHealthy"
	ReasonMountStalled = "MountStalled" // statfs hung past its deadline
	ReasonHostDown     = "MountHostDown"
	ReasonNoCredits    = "SessionReconnecting"
	ReasonStale        = "MountStale"
	ReasonIOError      = "MountIOError"
	ReasonNotConnected = "MountNotConnected"
	ReasonAccessDenied = "AccessDenied"
	ReasonMountError   = "MountError"
)

// MountCheck is the classified result of one bounded statfs of a mount.
type MountCheck struct {
	OK      bool
	Reason  string
	Message string
	At      time.Time
}

// ClassifyStat turns a bounded statfs outcome into a MountCheck: err is the
// Statter's error (ErrStatTimeout when the call did not return in time),
// res.Err the syscall's own error.
func ClassifyStat(res mount.StatResult, err error, timeout time.Duration, at time.Time) MountCheck {
	if err == nil && res.Err == nil {
		return MountCheck{OK: true, Reason: ReasonMountOK, Message: "statfs answered", At: at}
	}
	if errors.Is(err, mount.ErrStatTimeout) {
		return MountCheck{Reason: ReasonMountStalled, At: at,
			Message: fmt.Sprintf("statfs did not return within %v", timeout)}
	}
	cause := errors.Join(err, res.Err)
	var errno syscall.Errno
	if !errors.As(cause, &errno) {
		return MountCheck{Reason: ReasonMountError, Message: cause.Error(), At: at}
	}
	reason, what := classifyErrno(errno)
	return MountCheck{Reason: reason, Message: fmt.Sprintf("statfs: %s (%s)", what, errnoName(errno)), At: at}
}

func classifyErrno(e syscall.Errno) (reason, what string) {
	switch e {
	case syscall.EHOSTDOWN:
		return ReasonHostDown, "host is down: the kernel is reconnecting to the SMB server"
	case errnoENOTSUPP, syscall.EDEADLK:
		return ReasonNoCredits, "the SMB session ran out of credits and is being re-established"
	case syscall.ESTALE:
		return ReasonStale, "stale file handle: the share changed under the mount"
	case syscall.EIO:
		return ReasonIOError, "I/O error from the SMB server"
	case syscall.ENOTCONN:
		return ReasonNotConnected, "the mount has no connection"
	case syscall.EACCES:
		return ReasonAccessDenied, "permission denied: credentials or share permissions changed"
	}
	return ReasonMountError, e.Error()
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EHOSTDOWN:
		return "EHOSTDOWN"
	case errnoENOTSUPP:
		return "ENOTSUPP 524"
	case syscall.EDEADLK:
		return "EDEADLK"
	case syscall.ESTALE:
		return "ESTALE"
	case syscall.EIO:
		return "EIO"
	case syscall.ENOTCONN:
		return "ENOTCONN"
	case syscall.EACCES:
		return "EACCES"
	}
	return fmt.Sprintf("errno %d", int(e))
}

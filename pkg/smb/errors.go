// Package smb is the driver's userspace SMB2 client: pooled, context-bounded
// sessions (github.com/cloudsoda/go-smb2) for the controller's directory work,
// so provisioning needs neither a kernel mount nor privileges.
package smb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	smb2 "github.com/cloudsoda/go-smb2"
)

// Domain errors. The driver maps them to gRPC codes in one place.
var (
	// ErrUnreachable: the server did not answer (refused, timed out, reset).
	ErrUnreachable = errors.New("smb server unreachable")
	// ErrAuth: the server rejected the credentials.
	ErrAuth = errors.New("smb logon failed")
	// ErrShareNotFound: the server has no such share.
	ErrShareNotFound = errors.New("smb share not found")
	// ErrAccessDenied: the session may not do this.
	ErrAccessDenied = errors.New("smb access denied")
	// ErrEncrypted: the server encrypts the session with a cipher the
	// driver does not implement for its own requests (AES-CCM): DFS
	// referrals and CHANGE_NOTIFY are not sent, since such a server
	// drops the connection on an unencrypted request.
	ErrEncrypted = errors.New("the server requires SMB3 encryption with a cipher the driver's own requests (DFS referrals, change notify) do not implement (AES-CCM)")
)

// NT status codes we classify (MS-ERREF 2.3).
const (
	statusLogonFailure       = 0xC000006D
	statusNoSuchUser         = 0xC0000064
	statusWrongPassword      = 0xC000006A
	statusAccountRestriction = 0xC000006E
	statusPasswordExpired    = 0xC0000071
	statusAccountDisabled    = 0xC0000072
	statusAccountLockedOut   = 0xC0000234
	statusBadNetworkName     = 0xC00000CC
	statusAccessDenied       = 0xC0000022
	statusNetworkNameDeleted = 0xC00000C9
	statusUserSessionDeleted = 0xC0000203
)

// classify wraps err from go-smb2 with a domain error where one applies.
// what says what was being done, for the message.
// ErrSilent: the server's host accepted the TCP connection but SMB never
// answered: its smbd is frozen or hung while the host's TCP stack still
// works, so requests sent to it may sit in its socket buffers and be
// applied when it resumes.
var ErrSilent = errors.New("TCP connected but SMB silent")

func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	var re *smb2.ResponseError
	if errors.As(err, &re) {
		switch re.Code {
		case statusLogonFailure, statusNoSuchUser, statusWrongPassword, statusAccountRestriction,
			statusPasswordExpired, statusAccountDisabled, statusAccountLockedOut:
			return fmt.Errorf("%s: %w: %w", what, ErrAuth, err)
		case statusBadNetworkName:
			return fmt.Errorf("%s: %w: %w", what, ErrShareNotFound, err)
		case statusAccessDenied:
			return fmt.Errorf("%s: %w: %w", what, ErrAccessDenied, err)
		case statusNetworkNameDeleted, statusUserSessionDeleted:
			return fmt.Errorf("%s: %w: %w", what, ErrUnreachable, err)
		}
	}
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%s: %w: %w", what, ErrAccessDenied, err)
	}
	if isConnError(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isConnError reports errors after which the connection must not be reused.
func isConnError(err error) bool {
	var te *smb2.TransportError
	var ne net.Error
	return errors.As(err, &te) || errors.As(err, &ne) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable)
}

package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Limits of a credentials file: mount.cifs's own (cifs-utils: 256-byte
// user and domain names, 512-byte passwords), and a few lines' worth of
// file.
const (
	MaxCredentialsFile = 16 << 10
	maxUser            = 256
	maxPassword        = 512
	maxDomain          = 256
)

// ErrCredentialsFile wraps every reason a credentials file is refused.
// Messages name the line and the key, never a value.
var ErrCredentialsFile = errors.New("bad credentials file")

// ReadCredentialsFile reads a mount.cifs credentials file (see
// ParseCredentials), at most MaxCredentialsFile bytes of it.
func ReadCredentialsFile(path string) (Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrCredentialsFile, err)
	}
	defer func() { _ = f.Close() }()
	c, err := ParseCredentials(f)
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseCredentials reads the mount.cifs credentials-file format:
//
//	username=alice
//	password=s3cret
//	domain=CORP
//
// one key=value per line, the value verbatim to the end of the line (a
// CRLF ending is accepted), keys as mount.cifs takes them: username (or
// user), password (or pass), domain (or dom, workgroup). A username of the
// form DOMAIN\user or DOMAIN/user sets the domain too, unless a domain line
// does. Blank lines and lines starting with # are skipped. Anything else is
// refused rather than guessed at: an unknown key, a line without '=', a key
// given twice, a NUL, invalid UTF-8, a value over mount.cifs's limits, a
// password without a username, no username, or more than
// MaxCredentialsFile bytes.
func ParseCredentials(r io.Reader) (Credentials, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxCredentialsFile+1))
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrCredentialsFile, err)
	}
	if len(b) > MaxCredentialsFile {
		return Credentials{}, fmt.Errorf("%w: larger than %d bytes", ErrCredentialsFile, MaxCredentialsFile)
	}
	if bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b) {
		return Credentials{}, fmt.Errorf("%w: not a text file (a NUL byte or invalid UTF-8)", ErrCredentialsFile)
	}
	var c Credentials
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		key, value, ok := strings.Cut(strings.TrimLeft(line, " \t"), "=")
		if !ok {
			return Credentials{}, fmt.Errorf("%w: line %d: no '=' (want key=value)", ErrCredentialsFile, i+1)
		}
		field, limit, err := credentialsKey(strings.TrimSpace(key))
		if err != nil {
			return Credentials{}, fmt.Errorf("%w: line %d: %w", ErrCredentialsFile, i+1, err)
		}
		if seen[field] {
			return Credentials{}, fmt.Errorf("%w: line %d: %s given twice", ErrCredentialsFile, i+1, field)
		}
		seen[field] = true
		if len(value) > limit {
			return Credentials{}, fmt.Errorf("%w: line %d: %s longer than %d bytes", ErrCredentialsFile, i+1, field, limit)
		}
		switch field {
		case "username":
			c.Username = value
		case "password":
			c.Password = value
		case "domain":
			c.Domain = value
		}
	}
	if i := strings.IndexAny(c.Username, `\/`); i >= 0 && !seen["domain"] {
		c.Domain, c.Username = c.Username[:i], c.Username[i+1:]
	}
	switch {
	case c.Username == "" && seen["password"]:
		return Credentials{}, fmt.Errorf("%w: a password but no username", ErrCredentialsFile)
	case c.Username == "":
		return Credentials{}, fmt.Errorf("%w: no username (for an anonymous session, give no credentials at all)", ErrCredentialsFile)
	case strings.ContainsAny(c.Username, `\/`):
		return Credentials{}, fmt.Errorf("%w: username has a domain part and a domain line as well", ErrCredentialsFile)
	}
	return c, nil
}

// credentialsKey maps a key to its field and the field's length limit.
func credentialsKey(k string) (field string, limit int, err error) {
	switch strings.ToLower(k) {
	case "username", "user":
		return "username", maxUser, nil
	case "password", "pass":
		return "password", maxPassword, nil
	case "domain", "dom", "workgroup":
		return "domain", maxDomain, nil
	}
	if printableKey(k) {
		return "", 0, fmt.Errorf("unknown key %q (want username, password or domain)", k)
	}
	return "", 0, errors.New("unknown key (want username, password or domain)")
}

// printableKey: a key short and plain enough to be quoted in an error. A
// longer or odder one may be a misplaced secret: it is not repeated.
func printableKey(k string) bool {
	if k == "" || len(k) > 16 {
		return false
	}
	for _, r := range k {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

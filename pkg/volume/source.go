package volume

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Limits on untrusted names. SMB allows 255 UTF-16 units per component; a
// share name is at most 80 characters (MS-SRVS NetShareAdd) and a DNS name 253.
const (
	maxServerLen    = 253
	maxShareLen     = 80
	maxComponentLen = 255
	maxPathLen      = 1024
	maxComponents   = 32
)

// Source is an SMB location: \\Server\Share plus an optional directory below
// the share root, kept slash-separated and without leading or trailing slash.
type Source struct {
	Server string
	Share  string
	Path   string
}

// ParseSource parses "//server/share[/path]" (backslashes are accepted too).
// field names the parameter in error messages.
func ParseSource(field, s string) (Source, error) {
	if s == "" {
		return Source{}, fieldErr(field, "", "is required, e.g. //server/share or //server/share/dir")
	}
	if len(s) > maxPathLen {
		return Source{}, fieldErr(field, s[:32]+"...", "is longer than %d bytes", maxPathLen)
	}
	norm := strings.ReplaceAll(s, `\`, "/")
	if !strings.HasPrefix(norm, "//") {
		return Source{}, fieldErr(field, s, "must start with //server/share")
	}
	parts := strings.SplitN(strings.TrimPrefix(norm, "//"), "/", 3)
	if len(parts) < 2 || parts[1] == "" {
		return Source{}, fieldErr(field, s, "has no share name: expected //server/share[/path]")
	}
	src := Source{Server: parts[0], Share: parts[1]}
	if err := validateServer(field, src.Server); err != nil {
		return Source{}, err
	}
	if err := validateShare(field, src.Share); err != nil {
		return Source{}, err
	}
	if len(parts) == 3 {
		p, err := CleanRelPath(field, strings.TrimSuffix(parts[2], "/"))
		if err != nil {
			return Source{}, err
		}
		src.Path = p
	}
	return src, nil
}

// String renders the source in the form the kernel and the users know:
// //server/share[/path].
func (s Source) String() string {
	out := "//" + s.Server + "/" + s.Share
	if s.Path != "" {
		out += "/" + s.Path
	}
	return out
}

// Join returns the location of dir (relative, slash-separated) below s.
func (s Source) Join(dir string) Source {
	switch {
	case dir == "":
	case s.Path == "":
		s.Path = dir
	default:
		s.Path = s.Path + "/" + dir
	}
	return s
}

// Address is the host:port the SMB client dials.
func (s Source) Address() string {
	return s.Server + ":445"
}

func validateServer(field, server string) error {
	if server == "" {
		return fieldErr(field, "", "has no server name: expected //server/share")
	}
	if len(server) > maxServerLen {
		return fieldErr(field, server, "server name is longer than %d bytes", maxServerLen)
	}
	if strings.HasPrefix(server, "[") {
		if !strings.HasSuffix(server, "]") {
			return fieldErr(field, server, "IPv6 address is missing its closing ]")
		}
		addr, err := netip.ParseAddr(server[1 : len(server)-1])
		if err != nil || !addr.Is6() {
			return fieldErr(field, server, "is not a valid IPv6 address")
		}
		return nil
	}
	if strings.Contains(server, ":") {
		return fieldErr(field, server, "server must not carry a port; SMB uses 445")
	}
	if _, err := netip.ParseAddr(server); err == nil {
		return nil
	}
	for label := range strings.SplitSeq(server, ".") {
		if !validLabel(label) {
			return fieldErr(field, server, "is not a valid host name, IPv4 or [IPv6] address")
		}
	}
	return nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := range len(l) {
		c := l[i]
		ok := c == '-' || c == '_' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

func validateShare(field, share string) error {
	if len(share) > maxShareLen {
		return fieldErr(field, share, "share name is longer than %d bytes", maxShareLen)
	}
	if strings.EqualFold(share, "IPC$") {
		return fieldErr(field, share, "IPC$ is not a file share")
	}
	if share == "." || share == ".." {
		return fieldErr(field, share, "share name must not be %q", share)
	}
	if r := badRune(share); r != "" {
		return fieldErr(field, share, "share name contains %s", r)
	}
	return nil
}

// CleanRelPath validates a relative, slash-separated path below a share and
// returns it without a trailing slash. It rejects absolute paths, "." and ".."
// components, empty components and characters SMB cannot carry.
func CleanRelPath(field, p string) (string, error) {
	if p == "" {
		return "", nil
	}
	if len(p) > maxPathLen {
		return "", fieldErr(field, p[:32]+"...", "is longer than %d bytes", maxPathLen)
	}
	if strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) {
		return "", fieldErr(field, p, "must be a relative path, not absolute")
	}
	if strings.Contains(p, `\`) {
		return "", fieldErr(field, p, `must use / as separator, not \`)
	}
	p = strings.TrimSuffix(p, "/")
	comps := strings.Split(p, "/")
	if len(comps) > maxComponents {
		return "", fieldErr(field, p, "has more than %d components", maxComponents)
	}
	for _, c := range comps {
		switch {
		case c == "":
			return "", fieldErr(field, p, "has an empty path component")
		case c == "." || c == "..":
			return "", fieldErr(field, p, "must not contain %q components", c)
		case len(c) > maxComponentLen:
			return "", fieldErr(field, p, "has a component longer than %d bytes", maxComponentLen)
		case c == ".csi-smb":
			return "", fieldErr(field, p, "must not use the driver's metadata directory .csi-smb")
		}
		if r := badRune(c); r != "" {
			return "", fieldErr(field, p, "contains %s", r)
		}
		if strings.HasSuffix(c, " ") || strings.HasSuffix(c, ".") {
			return "", fieldErr(field, p, "has a component ending in a space or dot, which SMB servers strip")
		}
	}
	return p, nil
}

// badRune describes the first character SMB file and share names cannot hold
// (MS-FSCC 2.1.5.2), or returns "".
func badRune(s string) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			return "a control character"
		case strings.ContainsRune(`"*:<>?|`, r):
			return "the character " + string(r)
		}
	}
	return ""
}

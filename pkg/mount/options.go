package mount

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidOption is a mount option the driver refuses.
var ErrInvalidOption = errors.New("invalid mount option")

// DefaultCIFSOptions are chosen for fast, honest failure (docs/mount-options.md):
//   - vers=3.1.1: pre-auth integrity and modern ciphers; override with vers=3.0.
//   - soft: a dead server returns EHOSTDOWN after ~10 s per call instead of
//     hanging workload threads in D state forever (hard).
//   - echo_interval=5: the kernel reconnects after 3*5 s (+<=7 s) of silence
//     instead of ~187 s with the default 60.
//   - nosharesock: every mount has its own TCP connection, so one dead
//     session cannot block new mounts (csi-driver-smb #767).
//   - nohandlecache: no cached root-directory handle. That handle's lease
//     ties server state to the session; when the session wedges, a remount
//     (or any other client) opening the root waits for a lease break the
//     dead session never acknowledges (Samba: about 30 s).
var DefaultCIFSOptions = []string{"vers=3.1.1", "soft", "echo_interval=5", "nosharesock", "nohandlecache"}

// credentialKeys carry secrets or identities; they come from the node-stage
// secret only, never from StorageClass mountOptions, which anyone can read.
var credentialKeys = map[string]bool{
	"username": true, "user": true, "password": true, "pass": true, "password2": true,
	"credentials": true, "cred": true, "domain": true, "dom": true, "workgroup": true,
}

// exclusive groups: a user option replaces every default of its group.
var exclusive = [][]string{
	{"soft", "hard"},
	{"ro", "rw"},
	{"serverino", "noserverino"},
	{"sharesock", "nosharesock"},
	{"handlecache", "nohandlecache"},
	{"guest", "sec"},
}

type option struct{ key, value string }

func (o option) String() string {
	if o.value == "" {
		return o.key
	}
	return o.key + "=" + o.value
}

// parseOptions splits entries that may themselves hold commas, validates the
// syntax and refuses credentials.
func parseOptions(entries []string) ([]option, error) {
	var out []option
	for _, e := range entries {
		for raw := range strings.SplitSeq(e, ",") {
			raw = strings.TrimSpace(raw)
			if raw == "" {
				continue
			}
			key, value, _ := strings.Cut(raw, "=")
			if !validKey(key) {
				return nil, fmt.Errorf("%w: %q: option names are letters, digits, _ . and -", ErrInvalidOption, raw)
			}
			if credentialKeys[strings.ToLower(key)] {
				return nil, fmt.Errorf("%w: %q: credentials belong in the node-stage secret (username, password, domain), not in mountOptions",
					ErrInvalidOption, key)
			}
			for _, r := range value {
				if r < 0x20 || r == 0x7f {
					return nil, fmt.Errorf("%w: %q contains a control character", ErrInvalidOption, key)
				}
			}
			out = append(out, option{key: key, value: value})
		}
	}
	return out, nil
}

func validKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, r := range k {
		ok := r == '_' || r == '.' || r == '-' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')
		if !ok {
			return false
		}
	}
	return k[0] != '-'
}

func groupOf(key string) []string {
	for _, g := range exclusive {
		for _, k := range g {
			if k == key {
				return g
			}
		}
	}
	return []string{key}
}

// MergeOptions returns defaults overridden by user (user wins per key and per
// exclusive group, e.g. "hard" drops the default "soft"), defaults first.
func MergeOptions(defaults, user []string) ([]string, error) {
	d, err := parseOptions(defaults)
	if err != nil {
		return nil, err
	}
	u, err := parseOptions(user)
	if err != nil {
		return nil, err
	}
	overridden := map[string]bool{}
	for _, o := range u {
		for _, k := range groupOf(o.key) {
			overridden[k] = true
		}
	}
	var out []string
	for _, o := range d {
		if !overridden[o.key] {
			out = append(out, o.String())
		}
	}
	seen := map[string]int{}
	for _, o := range u {
		if i, ok := seen[o.key]; ok {
			out[i] = o.String() // a later duplicate wins
			continue
		}
		seen[o.key] = len(out)
		out = append(out, o.String())
	}
	return out, nil
}

// HasOption reports whether opts (merged) sets key.
func HasOption(opts []string, key string) bool {
	for _, o := range opts {
		if k, _, _ := strings.Cut(o, "="); k == key {
			return true
		}
	}
	return false
}

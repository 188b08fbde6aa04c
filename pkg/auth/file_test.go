package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Credentials
	}{
		{"mount.cifs", "username=alice\npassword=s3cret\ndomain=CORP\n", Credentials{Username: "alice", Password: "s3cret", Domain: "CORP"}},
		{"aliases, CRLF, no final newline", "user=alice\r\npass=s3cret\r\ndom=CORP", Credentials{Username: "alice", Password: "s3cret", Domain: "CORP"}},
		{"value verbatim", "username=alice\npassword= a=b #c \n", Credentials{Username: "alice", Password: " a=b #c "}},
		{"comments, blanks, indented keys", "# the lab\n\n  username=alice\n\tpassword=p\n", Credentials{Username: "alice", Password: "p"}},
		{"empty password", "username=guest\npassword=\n", Credentials{Username: "guest"}},
		{"domain in the user", "username=CORP\\alice\npassword=p\n", Credentials{Username: "alice", Password: "p", Domain: "CORP"}},
		{"domain/user", "username=CORP/alice\n", Credentials{Username: "alice", Domain: "CORP"}},
		{"workgroup, key case", "USERNAME=alice\nWorkgroup=WG\n", Credentials{Username: "alice", Domain: "WG"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCredentials(strings.NewReader(tc.in))
			if err != nil || got != tc.want {
				t.Fatalf("ParseCredentials = %#v (password %q), %v; want %#v", got, got.Password, err, tc.want)
			}
		})
	}
}

func TestParseCredentialsRefusesGarbage(t *testing.T) {
	const secret = "Hunter2-Secret"
	for _, tc := range []struct {
		name, in, says string
	}{
		{"empty", "", "no username"},
		{"only comments", "# nothing\n\n", "no username"},
		{"password only", "password=" + secret + "\n", "a password but no username"},
		{"no equals", "username=alice\n" + secret + "\n", "line 2: no '='"},
		{"unknown key", "username=alice\npasswd=" + secret + "\n", `line 2: unknown key "passwd"`},
		{"odd key not quoted", "username=alice\n" + secret + " x=1\n", "line 2: unknown key (want"},
		{"twice", "username=alice\nusername=bob\n", "line 2: username given twice"},
		{"alias twice", "user=alice\nusername=bob\n", "username given twice"},
		{"NUL", "username=alice\npassword=a\x00b\n", "not a text file"},
		{"binary", "username=alice\npassword=\xff\xfe\n", "not a text file"},
		{"long password", "username=alice\npassword=" + strings.Repeat("x", maxPassword+1) + "\n", "password longer than 512 bytes"},
		{"long user", "username=" + strings.Repeat("u", maxUser+1) + "\n", "username longer than 256 bytes"},
		{"huge", "username=alice\n" + strings.Repeat("#\n", MaxCredentialsFile), "larger than"},
		{"two domains", "username=CORP\\alice\ndomain=OTHER\n", "domain part and a domain line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCredentials(strings.NewReader(tc.in))
			if !errors.Is(err, ErrCredentialsFile) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("ParseCredentials = %#v, %v; want ErrCredentialsFile saying %q", c, err, tc.says)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error repeats a secret: %v", err)
			}
		})
	}
}

func TestReadCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(path, []byte("username=alice\npassword=p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := ReadCredentialsFile(path); err != nil || c.Username != "alice" || c.Password != "p" {
		t.Fatalf("ReadCredentialsFile = %#v, %v", c, err)
	}
	if _, err := ReadCredentialsFile(path + ".missing"); !errors.Is(err, ErrCredentialsFile) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("username=alice\nbogus\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCredentialsFile(path); !errors.Is(err, ErrCredentialsFile) || !strings.HasPrefix(err.Error(), path+": ") {
		t.Fatalf("garbage: %v, want the path and ErrCredentialsFile", err)
	}
}

// FuzzParseCredentials: any file is accepted or refused, never a panic; an
// accepted one has a username and values within mount.cifs's limits, free
// of line breaks; and no error ever repeats a password: messages quote
// keys only.
func FuzzParseCredentials(f *testing.F) {
	f.Add("username=alice\npassword=s3cret\ndomain=CORP\n")
	f.Add("user=CORP\\alice\r\npass=x=y\r\n# c\n")
	f.Add("username=alice\npasswd=Leaky-Secret-1\n")
	f.Add("\x00\xff")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseCredentials(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrCredentialsFile) {
				t.Fatalf("error %v does not wrap ErrCredentialsFile", err)
			}
			keys := map[string]bool{}
			for _, line := range strings.Split(in, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					keys[strings.TrimSpace(k)] = true
					if k := strings.ToLower(strings.TrimSpace(k)); (k == "password" || k == "pass") && len(v) >= 8 {
						defer func() {
							if strings.Contains(err.Error(), v) && !keys[v] {
								t.Fatalf("error %q repeats a password", err)
							}
						}()
					}
				}
			}
			return
		}
		if c.Username == "" || len(c.Username) > maxUser || len(c.Password) > maxPassword || len(c.Domain) > maxDomain {
			t.Fatalf("accepted %#v (password %d bytes)", c, len(c.Password))
		}
		if strings.ContainsAny(c.Username+c.Password+c.Domain, "\n\x00") || strings.ContainsAny(c.Username, `\/`) {
			t.Fatalf("accepted a value with a line break, a NUL or a domain part: %#v", c)
		}
	})
}

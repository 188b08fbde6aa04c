package volume

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSource(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Source
		wantErr string // substring naming the problem; "" means valid
	}{
		{name: "share", in: "//srv/share", want: Source{Server: "srv", Share: "share"}},
		{name: "share with path", in: "//srv.example.com/share/a/b", want: Source{Server: "srv.example.com", Share: "share", Path: "a/b"}},
		{name: "trailing slash", in: "//10.0.0.1/share/a/", want: Source{Server: "10.0.0.1", Share: "share", Path: "a"}},
		{name: "backslashes", in: `\\srv\share\dir`, want: Source{Server: "srv", Share: "share", Path: "dir"}},
		{name: "ipv6", in: "//[fd00::1]/share", want: Source{Server: "[fd00::1]", Share: "share"}},
		{name: "hash and percent in path", in: "//srv/share/a#b%c", want: Source{Server: "srv", Share: "share", Path: "a#b%c"}},
		{name: "empty", in: "", wantErr: "is required"},
		{name: "no slashes", in: "srv/share", wantErr: "must start with //"},
		{name: "no share", in: "//srv", wantErr: "has no share"},
		{name: "empty share", in: "//srv/", wantErr: "has no share"},
		{name: "empty server", in: "///share", wantErr: "has no server"},
		{name: "port", in: "//srv:4455/share", wantErr: "port"},
		{name: "bad host", in: "//bad_host!/share", wantErr: "not a valid host"},
		{name: "bad ipv6", in: "//[zz::1]/share", wantErr: "IPv6"},
		{name: "dotdot", in: "//srv/share/a/../b", wantErr: `".."`},
		{name: "dot", in: "//srv/share/./b", wantErr: `"."`},
		{name: "double slash", in: "//srv/share/a//b", wantErr: "empty path component"},
		{name: "ipc", in: "//srv/IPC$", wantErr: "IPC$"},
		{name: "star", in: "//srv/sh*re", wantErr: "character *"},
		{name: "control", in: "//srv/share/a\x01", wantErr: "control character"},
		{name: "metadata dir", in: "//srv/share/.csi-smb", wantErr: ".csi-smb"},
		{name: "trailing dot", in: "//srv/share/a.", wantErr: "space or dot"},
		{name: "too long", in: "//srv/share/" + strings.Repeat("a", 2000), wantErr: "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSource(ParamSource, tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseSource(%q) error = %v, want ErrInvalid", tc.in, err)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), ParamSource) {
					t.Fatalf("ParseSource(%q) error %q should name %q and the field", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSource(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseSource(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			again, err := ParseSource(ParamSource, got.String())
			if err != nil || again != got {
				t.Fatalf("String() does not round-trip: %q -> %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseCreateParams(t *testing.T) {
	meta := map[string]string{MetaPVCName: "data", MetaPVCNamespace: "team-a", MetaPVName: "pvc-123"}
	with := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range meta {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name       string
		params     map[string]string
		volName    string
		wantSubDir string
		wantPolicy OnDelete
		wantErr    string
	}{
		{name: "defaults", params: map[string]string{"source": "//s/sh"}, volName: "pvc-9", wantSubDir: "pvc-9", wantPolicy: OnDeleteDelete},
		{name: "pv name from metadata", params: with(map[string]string{"source": "//s/sh"}), volName: "ignored", wantSubDir: "pvc-123", wantPolicy: OnDeleteDelete},
		{name: "templates", params: with(map[string]string{"source": "//s/sh", "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", "onDelete": "Archive"}), volName: "v", wantSubDir: "team-a/data", wantPolicy: OnDeleteArchive},
		{name: "literal subdir", params: map[string]string{"source": "//s/sh/base", "subDir": "fixed/dir", "onDelete": "retain"}, volName: "v", wantSubDir: "fixed/dir", wantPolicy: OnDeleteRetain},
		{name: "unknown key", params: map[string]string{"source": "//s/sh", "mountOptions": "x"}, wantErr: "parameters \"mountOptions\""},
		{name: "reserved keys pass", params: map[string]string{"source": "//s/sh", "csi.storage.k8s.io/fstype": "x"}, volName: "v", wantSubDir: "v", wantPolicy: OnDeleteDelete},
		{name: "missing source", params: map[string]string{}, wantErr: "source: is required"},
		{name: "bad onDelete", params: map[string]string{"source": "//s/sh", "onDelete": "shred"}, wantErr: "onDelete \"shred\""},
		{name: "unknown placeholder", params: map[string]string{"source": "//s/sh", "subDir": "${pod.name}"}, wantErr: "unknown placeholder ${pod.name}"},
		{name: "unterminated", params: map[string]string{"source": "//s/sh", "subDir": "${pvc.metadata.name"}, wantErr: "unterminated"},
		{name: "missing metadata", params: map[string]string{"source": "//s/sh", "subDir": "${pvc.metadata.name}"}, volName: "v", wantErr: "--extra-create-metadata"},
		{name: "absolute subdir", params: map[string]string{"source": "//s/sh", "subDir": "/etc"}, volName: "v", wantErr: "relative"},
		{name: "dotdot subdir", params: map[string]string{"source": "//s/sh", "subDir": "a/../../b"}, volName: "v", wantErr: `".."`},
		{name: "slash in pvc name", params: with(map[string]string{"source": "//s/sh", "subDir": "${pvc.metadata.name}", MetaPVCName: "../x"}), volName: "v", wantErr: "cannot be used"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseCreateParams(tc.params)
			var v Volume
			if err == nil {
				v, err = p.Volume(tc.volName)
			}
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want ErrInvalid containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.SubDir != tc.wantSubDir || v.OnDelete != tc.wantPolicy || v.UID != UIDFor(tc.volName) {
				t.Fatalf("got %+v, want subDir %q policy %q", v, tc.wantSubDir, tc.wantPolicy)
			}
		})
	}
}

func TestIDRoundTrip(t *testing.T) {
	vols := []Volume{
		{Source: Source{Server: "srv", Share: "share"}, SubDir: "pvc-1", OnDelete: OnDeleteDelete, UID: UIDFor("pvc-1")},
		{Source: Source{Server: "[fd00::1]", Share: "s%h#", Path: "a#1/b%2"}, SubDir: "x#y/%23", OnDelete: OnDeleteArchive, UID: UIDFor("n")},
	}
	for _, v := range vols {
		id := v.ID()
		got, err := ParseID(id)
		if err != nil {
			t.Fatalf("ParseID(%q): %v", id, err)
		}
		if got != v {
			t.Fatalf("ParseID(%q) = %+v, want %+v", id, got, v)
		}
		if strings.Count(id, "#") != idFields-1 {
			t.Fatalf("ID %q has unescaped separators", id)
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	good := Volume{Source: Source{Server: "srv", Share: "share"}, SubDir: "d", OnDelete: OnDeleteRetain, UID: UIDFor("n")}.ID()
	bad := []string{
		"",
		"fake-vol-id-1",
		strings.Replace(good, "v1#", "v2#", 1),
		good + "#extra",
		strings.Replace(good, "#retain#", "#shred#", 1),
		strings.Replace(good, "#d#", "##", 1),
		strings.Replace(good, "#d#", "#../d#", 1),
		strings.Replace(good, "#d#", "#d%2f#", 1), // escape we never produce
		strings.Replace(good, "#d#", "#d%#", 1),
		strings.Replace(good, "#srv#", "#sr v#", 1),
		strings.Replace(good, "#share#", "#IPC$#", 1),
		good[:len(good)-1] + "G",
		strings.Repeat("v1#", 1000),
	}
	for _, id := range bad {
		if _, err := ParseID(id); !errors.Is(err, ErrMalformedID) {
			t.Errorf("ParseID(%q) error = %v, want ErrMalformedID", id, err)
		}
	}
}

func TestStaticVolume(t *testing.T) {
	v, err := StaticVolume(map[string]string{"source": "//s/sh/base", "subDir": "x", "storage.kubernetes.io/csiProvisionerIdentity": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Location().String() != "//s/sh/base/x" {
		t.Fatalf("location = %s", v.Location())
	}
	for _, ctx := range []map[string]string{
		{},
		{"source": "//s/sh", "subDir": "${pvc.metadata.name}"},
		{"source": "//s/sh", "password": "x"},
	} {
		if _, err := StaticVolume(ctx); !errors.Is(err, ErrInvalid) {
			t.Errorf("StaticVolume(%v) error = %v, want ErrInvalid", ctx, err)
		}
	}
}

package volume

import (
	"errors"
	"testing"
)

// FuzzParseID checks that ParseID never panics, that everything it accepts is
// canonical (re-renders to the same bytes) and that it only fails with
// ErrMalformedID.
func FuzzParseID(f *testing.F) {
	f.Add(Volume{Source: Source{Server: "srv", Share: "share", Path: "a/b"}, SubDir: "pvc-1", OnDelete: OnDeleteDelete, UID: UIDFor("x")}.ID())
	f.Add("v1#s#sh##d%23x#archive#0123456789abcdef")
	f.Add("v1#[::1]#s%25#p#d#retain#0123456789abcdef")
	f.Add("fake-vol-id")
	f.Fuzz(func(t *testing.T, id string) {
		v, err := ParseID(id)
		if err != nil {
			if !errors.Is(err, ErrMalformedID) {
				t.Fatalf("ParseID(%q) returned %v, not ErrMalformedID", id, err)
			}
			return
		}
		if got := v.ID(); got != id {
			t.Fatalf("accepted non-canonical id %q (canonical %q)", id, got)
		}
	})
}

// FuzzParseCreateParams feeds arbitrary source/subDir/onDelete values and the
// volume name through parameter parsing and template expansion, then checks the
// invariants the controller relies on: errors are ErrInvalid, and an accepted
// volume round-trips through its ID and never escapes its base directory.
func FuzzParseCreateParams(f *testing.F) {
	f.Add("//srv/share/base", "${pvc.metadata.namespace}/${pvc.metadata.name}", "archive", "pvc-1", "ns", "data")
	f.Add(`\\srv\share`, "", "", "pvc-2", "", "")
	f.Add("//srv/share", "../x", "delete", "n", "a", "b")
	f.Fuzz(func(t *testing.T, source, subDir, onDelete, name, ns, pvc string) {
		params := map[string]string{ParamSource: source, ParamSubDir: subDir, ParamOnDelete: onDelete,
			MetaPVCNamespace: ns, MetaPVCName: pvc}
		p, err := ParseCreateParams(params)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseCreateParams error %v is not ErrInvalid", err)
			}
			return
		}
		v, err := p.Volume(name)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Volume error %v is not ErrInvalid", err)
			}
			return
		}
		if _, err := CleanRelPath("dir", v.Dir()); err != nil {
			t.Fatalf("accepted a volume whose directory %q escapes: %v", v.Dir(), err)
		}
		back, err := ParseID(v.ID())
		if err != nil || back != v {
			t.Fatalf("ID of accepted volume does not round-trip: %q: %+v %v", v.ID(), back, err)
		}
	})
}

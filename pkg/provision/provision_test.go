package provision_test

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/provision/provisiontest"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func vol(t *testing.T, name string, params map[string]string) volume.Volume {
	t.Helper()
	if params == nil {
		params = map[string]string{"source": "//srv/share/base"}
	}
	p, err := volume.ParseCreateParams(params)
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.Volume(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCreateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	v := vol(t, "pvc-1", nil)
	req := provision.Request{Name: "pvc-1", Volume: v, RequiredBytes: 1 << 30}
	rec, err := provision.Create(ctx, m, req, now)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Exists("base/pvc-1") || !m.Exists(provision.RecordPath(v)) || rec.CapacityBytes != 1<<30 || rec.VolumeID != v.ID() {
		t.Fatalf("after create: rec %+v", rec)
	}
	again, err := provision.Create(ctx, m, req, now.Add(time.Hour))
	if err != nil || again != rec {
		t.Fatalf("second create = %+v, %v; want the first record", again, err)
	}
	// Directory removed behind our back: a retry recreates it.
	_ = m.RemoveAll(ctx, "base/pvc-1")
	if _, err := provision.Create(ctx, m, req, now); err != nil || !m.Exists("base/pvc-1") {
		t.Fatalf("recreate missing directory: %v", err)
	}
}

func TestCreateConflicts(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	v := vol(t, "pvc-1", nil)
	if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v, RequiredBytes: 1 << 30, LimitBytes: 1 << 30}, now); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  provision.Request
	}{
		{"bigger", provision.Request{Name: "pvc-1", Volume: v, RequiredBytes: 2 << 30}},
		{"smaller limit", provision.Request{Name: "pvc-1", Volume: v, LimitBytes: 1 << 20}},
		{"other policy", provision.Request{Name: "pvc-1", Volume: vol(t, "pvc-1", map[string]string{"source": "//srv/share/base", "onDelete": "retain"})}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := provision.Create(ctx, m, tc.req, now); !errors.Is(err, provision.ErrConflict) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
		})
	}
	// A compatible range is the same volume.
	if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v, RequiredBytes: 1 << 20, LimitBytes: 2 << 30}, now); err != nil {
		t.Fatalf("compatible range: %v", err)
	}
}

func TestCreateOverAFile(t *testing.T) {
	m := provisiontest.New()
	m.PutFile("base/pvc-1", []byte("x"))
	_, err := provision.Create(context.Background(), m, provision.Request{Name: "pvc-1", Volume: vol(t, "pvc-1", nil)}, now)
	if !errors.Is(err, provision.ErrNotDirectory) {
		t.Fatalf("err = %v, want ErrNotDirectory", err)
	}
}

func TestCorruptRecord(t *testing.T) {
	v := vol(t, "pvc-1", nil)
	for name, content := range map[string]string{
		"garbage":        "not json",
		"unknown field":  `{"version":1,"name":"pvc-1","volumeId":"` + v.ID() + `","capacityBytes":0,"created":"2026-01-01T00:00:00Z","x":1}`,
		"bad id":         `{"version":1,"name":"pvc-1","volumeId":"nope","capacityBytes":0,"created":"2026-01-01T00:00:00Z"}`,
		"wrong version":  `{"version":9,"name":"pvc-1","volumeId":"` + v.ID() + `","capacityBytes":0,"created":"2026-01-01T00:00:00Z"}`,
		"huge":           string(make([]byte, 70<<10)),
		"negative bytes": `{"version":1,"name":"pvc-1","volumeId":"` + v.ID() + `","capacityBytes":-1,"created":"2026-01-01T00:00:00Z"}`,
	} {
		t.Run(name, func(t *testing.T) {
			m := provisiontest.New()
			_ = m.MkdirAll(context.Background(), path.Dir(provision.RecordPath(v)))
			m.PutFile(provision.RecordPath(v), []byte(content))
			_, err := provision.Create(context.Background(), m, provision.Request{Name: "pvc-1", Volume: v}, now)
			if !errors.Is(err, provision.ErrCorruptRecord) {
				t.Fatalf("err = %v, want ErrCorruptRecord", err)
			}
		})
	}
}

func TestDeletePolicies(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		policy  string
		want    provision.Outcome
		dirLeft string
	}{
		{"delete", provision.Deleted, ""},
		{"retain", provision.Retained, "base/pvc-1"},
		{"archive", provision.Archived, "base/archived-pvc-1"},
	}
	for _, tc := range tests {
		t.Run(tc.policy, func(t *testing.T) {
			m := provisiontest.New()
			v := vol(t, "pvc-1", map[string]string{"source": "//srv/share/base", "onDelete": tc.policy})
			if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v}, now); err != nil {
				t.Fatal(err)
			}
			m.PutFile("base/pvc-1/data", []byte("payload"))
			out, _, err := provision.Delete(ctx, m, v, now)
			if err != nil || out != tc.want {
				t.Fatalf("Delete = %q, %v; want %q", out, err, tc.want)
			}
			if m.Exists(provision.RecordPath(v)) {
				t.Fatal("record left behind")
			}
			if tc.dirLeft != "" && !m.Exists(tc.dirLeft+"/data") {
				t.Fatalf("%s/data should exist", tc.dirLeft)
			}
			if tc.policy != "retain" && m.Exists("base/pvc-1") {
				t.Fatal("original directory still there")
			}
			out, _, err = provision.Delete(ctx, m, v, now)
			if err != nil || (tc.policy != "retain" && out != provision.Gone) {
				t.Fatalf("second Delete = %q, %v", out, err)
			}
		})
	}
}

func TestArchiveTwiceKeepsBoth(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	params := map[string]string{"source": "//srv/share", "subDir": "fixed", "onDelete": "archive"}
	for i, name := range []string{"a", "b"} {
		v := vol(t, name, params)
		if _, err := provision.Create(ctx, m, provision.Request{Name: name, Volume: v}, now); err != nil {
			t.Fatal(err)
		}
		_, where, err := provision.Delete(ctx, m, v, now.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if !m.Exists(where) {
			t.Fatalf("archive %s missing", where)
		}
	}
	if !m.Exists("archived-fixed") || !m.Exists("archived-fixed-20261121T120001.000Z") {
		t.Fatal("second archive overwrote the first")
	}
}

func TestDeleteKeepsSharedDirectory(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	params := map[string]string{"source": "//srv/share", "subDir": "team"}
	a, b := vol(t, "a", params), vol(t, "b", params)
	for _, v := range []volume.Volume{a, b} {
		if _, err := provision.Create(ctx, m, provision.Request{Name: map[string]string{a.UID: "a", b.UID: "b"}[v.UID], Volume: v}, now); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := provision.Delete(ctx, m, a, now)
	if err != nil || out != provision.Shared || !m.Exists("team") {
		t.Fatalf("first delete = %q %v; directory must stay", out, err)
	}
	out, _, err = provision.Delete(ctx, m, b, now)
	if err != nil || out != provision.Deleted || m.Exists("team") {
		t.Fatalf("last delete = %q %v; directory must go", out, err)
	}
}

func TestErrorsPropagate(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("server said no")
	m := provisiontest.New()
	v := vol(t, "pvc-1", nil)
	m.Fail = func(op, p string) error {
		if op == "write" {
			return boom
		}
		return nil
	}
	if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v}, now); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the write error wrapped", err)
	}
	m.Fail = func(op, p string) error {
		if op == "readdir" {
			return &fs.PathError{Op: op, Path: p, Err: boom}
		}
		return nil
	}
	if _, _, err := provision.Delete(ctx, m, v, now); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the readdir error wrapped", err)
	}
}

// TestEmptyRecordIsNoRecord: a record created but never written (the
// controller died between CREATE and WRITE) must not wedge the volume.
func TestEmptyRecordIsNoRecord(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	v := vol(t, "pvc-1", nil)
	_ = m.MkdirAll(ctx, path.Dir(provision.RecordPath(v)))
	m.PutFile(provision.RecordPath(v), nil)
	if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v}, now); err != nil {
		t.Fatalf("empty record: %v", err)
	}
	if rec, ok, err := provision.ReadRecord(ctx, m, v); err != nil || !ok || rec.Name != "pvc-1" {
		t.Fatalf("record not rewritten: %+v %v %v", rec, ok, err)
	}
}

// TestCreateRequestCount pins the number of share operations of a new
// volume and of an idempotent retry; each one is a network round trip.
func TestCreateRequestCount(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	_ = m.MkdirAll(ctx, "base/.csi-smb")
	m.Ops = 0
	v := vol(t, "pvc-1", nil)
	if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v}, now); err != nil {
		t.Fatal(err)
	}
	if m.Ops != 3 {
		t.Fatalf("new volume took %d share operations, want 3 (mkdir record folder, mkdir, write record)", m.Ops)
	}
	m.Ops = 0
	if _, err := provision.Create(ctx, m, provision.Request{Name: "pvc-1", Volume: v}, now); err != nil {
		t.Fatal(err)
	}
	if m.Ops != 4 {
		t.Fatalf("retry took %d share operations, want 4 (mkdir record folder, read record, mkdir, stat)", m.Ops)
	}
}

// TestDeleteListsOnlyItsDirectory: deleting a volume reads the records of
// its own directory, not those of every volume on the share.
func TestDeleteListsOnlyItsDirectory(t *testing.T) {
	ctx := context.Background()
	m := provisiontest.New()
	var last volume.Volume
	for i := range 200 {
		name := "pvc-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		last = vol(t, name, nil)
		if _, err := provision.Create(ctx, m, provision.Request{Name: name, Volume: last}, now); err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	m.Fail = func(op, p string) error {
		if op == "readdir" {
			listed = append(listed, p)
		}
		return nil
	}
	if out, _, err := provision.Delete(ctx, m, last, now); err != nil || out != provision.Deleted {
		t.Fatalf("delete = %q %v", out, err)
	}
	if len(listed) != 1 || listed[0] != path.Dir(provision.RecordPath(last)) {
		t.Fatalf("delete listed %v, want only its own record folder", listed)
	}
	if m.Exists(path.Dir(provision.RecordPath(last))) {
		t.Fatal("empty record folder left behind")
	}
}

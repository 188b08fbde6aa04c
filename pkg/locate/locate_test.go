package locate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/provision/provisiontest"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// TestDFSSourceUsesALiveTarget: a source on a DFS link is worked on
// through the first target that answers, with its paths rebased onto that
// target's share; a plain source is used as it is.
func TestDFSSourceUsesALiveTarget(t *testing.T) {
	shares := map[string]*provisiontest.MemFS{`t2\ha`: provisiontest.New(), `t3\ha`: provisiontest.New(), `srv\share`: provisiontest.New()}
	var opened []string
	open := func(_ context.Context, server, share string, _ auth.Credentials) (provision.FS, func(), error) {
		opened = append(opened, server)
		if server == "t2" {
			return nil, nil, fmt.Errorf("connect: %w", smb.ErrUnreachable)
		}
		return shares[server+`\`+share], func() {}, nil
	}
	resolve := func(_ context.Context, path string, _ auth.Credentials) (dfs.Resolution, error) {
		if path != `\root\dfs\ha\it` {
			return dfs.Resolution{}, dfs.ErrNotDFS
		}
		return dfs.Resolution{Link: `\root\dfs\ha`, Targets: []string{`\t2\ha\it`, `\t3\ha\it`}}, nil
	}
	l := New(open, resolve)
	v := volume.Volume{Source: volume.Source{Server: "root", Share: "dfs", Path: "ha/it"}, SubDir: "pvc-1", OnDelete: volume.OnDeleteDelete, UID: volume.UIDFor("x")}
	err := l.With(context.Background(), v.Source, auth.Credentials{}, func(fsys provision.FS) error {
		return fsys.MkdirAll(context.Background(), v.Dir())
	})
	if err != nil || !slices.Equal(opened, []string{"t2", "t3"}) {
		t.Fatalf("With = %v after opening %v, want t2 (down) then t3", err, opened)
	}
	if fi, err := shares[`t3\ha`].Stat(context.Background(), "it/pvc-1"); err != nil || !fi.IsDir() {
		t.Fatalf("directory on the live target: %v", err)
	}
	err = l.With(context.Background(), v.Source, auth.Credentials{}, func(fsys provision.FS) error {
		_, err := fsys.Stat(context.Background(), "elsewhere/x")
		return err
	})
	if err == nil {
		t.Fatal("a path outside the source was let through the rebase")
	}
	opened = nil
	plain := volume.Source{Server: "srv", Share: "share", Path: "d"}
	if err := l.With(context.Background(), plain, auth.Credentials{}, func(provision.FS) error { return nil }); err != nil || !slices.Equal(opened, []string{"srv"}) {
		t.Fatalf("plain source: %v, opened %v", err, opened)
	}
	opened = nil
	down := func(_ context.Context, server, _ string, _ auth.Credentials) (provision.FS, func(), error) {
		opened = append(opened, server)
		return nil, nil, fmt.Errorf("connect: %w", smb.ErrUnreachable)
	}
	if err := New(down, resolve).With(context.Background(), v.Source, auth.Credentials{}, func(provision.FS) error { return nil }); !errors.Is(err, smb.ErrUnreachable) || len(opened) != 2 {
		t.Fatalf("every target down: %v after %v", err, opened)
	}
}

func TestSplitUNC(t *testing.T) {
	for _, tc := range []struct {
		in, server, share, path string
		ok                      bool
	}{
		{`\s\sh`, "s", "sh", "", true},
		{`\s\sh\a\b`, "s", "sh", "a/b", true},
		{`\s`, "", "", "", false},
		{`\\`, "", "", "", false},
	} {
		s, sh, p, ok := splitUNC(tc.in)
		if s != tc.server || sh != tc.share || p != tc.path || ok != tc.ok {
			t.Errorf("splitUNC(%q) = %q %q %q %v", tc.in, s, sh, p, ok)
		}
	}
}

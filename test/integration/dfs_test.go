//go:build integration

package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/test/lab"
)

// TestReferralsFromSamba asks real Samba (n1's msdfs root "dfs", link
// "multi" -> n2\shareA, n3\shareA) for referrals over the driver's own
// FSCTL_DFS_GET_REFERRALS code, with the lab's user and anonymously.
func TestReferralsFromSamba(t *testing.T) {
	for _, tc := range []struct {
		name  string
		creds auth.Credentials
	}{
		{"user", auth.Credentials{Username: lab.User, Password: lab.Password}},
		{"anonymous", auth.Credentials{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := &smb.Referrer{Creds: func(string) auth.Credentials { return tc.creds }}
			link, err := r.Fetch(ctx, `\10.213.0.1\dfs\multi\pvc-1\sub`)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(link.Targets, []string{`\10.213.0.2\shareA`, `\10.213.0.3\shareA`}) || link.Root ||
				!strings.EqualFold(link.Path, `\10.213.0.1\dfs\multi`) || link.TTL <= 0 {
				t.Fatalf("link referral %+v", link)
			}
			t.Logf("link: %+v", link)
			root, err := r.Fetch(ctx, `\10.213.0.1\dfs`)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("root: %+v", root)
			if !root.Root || len(root.Targets) == 0 {
				t.Fatalf("root referral %+v", root)
			}
			if _, err := r.Fetch(ctx, `\10.213.0.1\share\x`); !errors.Is(err, dfs.ErrNotDFS) {
				t.Fatalf("a plain share: %v, want ErrNotDFS", err)
			}
		})
	}
}

// TestControllerOnDFSLink: CreateVolume on a DFS link (dfs\ha, two targets
// on one directory) acts through a target of the link: the directory and
// its record appear in the shared directory; the volume ID keeps the DFS
// source (the node mounts the DFS path); ControllerGetVolume finds the
// directory; DeleteVolume removes it.
func TestControllerOnDFSLink(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	vol := mustCreate(t, c, createReq(name, map[string]string{"source": lab.HASource + "/it"}))
	if got := vol.GetVolumeContext()["source"]; got != lab.HASource+"/it" {
		t.Fatalf("volume context source %q, want the DFS path", got)
	}
	dir := filepath.Join(os.Getenv(envLabDir), lab.HADir, "it", name)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("volume directory on the link's shared directory: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := c.ControllerGetVolume(ctxT(t), &csi.ControllerGetVolumeRequest{VolumeId: vol.GetVolumeId()})
		if err != nil {
			t.Fatal(err)
		}
		abnormal, msg, _ := driver.LegacyCondition(r.GetStatus(), 2)
		if !abnormal && strings.HasPrefix(msg, "VolumeHealthy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DFS volume condition abnormal=%v %q", abnormal, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustDelete(t, c, vol.GetVolumeId())
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory after DeleteVolume: %v", err)
	}
}

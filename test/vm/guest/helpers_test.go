//go:build vmguest

package guest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/test/lab"
)

func secrets() map[string]string {
	return map[string]string{"username": lab.User, "password": lab.Password}
}

func capability(mode csi.VolumeCapability_AccessMode_Mode, group string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags, VolumeMountGroup: group}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var rwx = capability(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "") //nolint:gochecknoglobals // read-only fixture

func tctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// volumeOn creates a volume on server (n1..n3) and deletes it at the end.
func volumeOn(t testing.TB, server string) *csi.Volume {
	t.Helper()
	ip := map[string]string{"n1": "10.213.0.1", "n2": "10.213.0.2", "n3": "10.213.0.3"}[server]
	name := fmt.Sprintf("guest-%s-%d", server, time.Now().UnixNano())
	resp, err := theEnv.ctl.CreateVolume(tctx(t, 30*time.Second), &csi.CreateVolumeRequest{
		Name: name, VolumeCapabilities: []*csi.VolumeCapability{rwx},
		Parameters: map[string]string{"source": "//" + ip + "/share/guest"}, Secrets: secrets(),
	})
	if err != nil {
		t.Fatalf("CreateVolume on %s: %v", server, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := theEnv.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(), Secrets: secrets()}); err != nil {
			t.Errorf("DeleteVolume: %v", err)
		}
	})
	return resp.GetVolume()
}

// paths returns fresh staging and target paths laid out like kubelet's.
func paths(t testing.TB) (staging, target string) {
	t.Helper()
	base := t.TempDir()
	staging = filepath.Join(base, "plugins", "globalmount")
	target = filepath.Join(base, "pods", "uid", "volumes", "mount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	return staging, target
}

func stage(t testing.TB, vol *csi.Volume, staging string, c *csi.VolumeCapability) error {
	t.Helper()
	_, err := theEnv.node.NodeStageVolume(tctx(t, 60*time.Second), &csi.NodeStageVolumeRequest{
		VolumeId: vol.GetVolumeId(), StagingTargetPath: staging, VolumeCapability: c,
		VolumeContext: vol.GetVolumeContext(), Secrets: secrets(),
	})
	return err
}

func publish(t testing.TB, vol *csi.Volume, staging, target string, c *csi.VolumeCapability, ro bool) error {
	t.Helper()
	_, err := theEnv.node.NodePublishVolume(tctx(t, 60*time.Second), &csi.NodePublishVolumeRequest{
		VolumeId: vol.GetVolumeId(), StagingTargetPath: staging, TargetPath: target, VolumeCapability: c,
		VolumeContext: vol.GetVolumeContext(), Readonly: ro,
	})
	return err
}

func unpublish(ctx context.Context, vol *csi.Volume, target string) error {
	_, err := theEnv.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target})
	return err
}

func unstage(ctx context.Context, vol *csi.Volume, staging string) error {
	_, err := theEnv.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: staging})
	return err
}

// stagedAndPublished stages and publishes vol and undoes both at the end.
func stagedAndPublished(t testing.TB, vol *csi.Volume) (staging, target string) {
	t.Helper()
	return stagedAndPublishedWith(t, vol, rwx)
}

func stagedAndPublishedWith(t testing.TB, vol *csi.Volume, c *csi.VolumeCapability) (staging, target string) {
	t.Helper()
	staging, target = paths(t)
	if err := stage(t, vol, staging, c); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	if err := publish(t, vol, staging, target, c, false); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := unpublish(ctx, vol, target); err != nil {
			t.Errorf("cleanup unpublish: %v", err)
		}
		if err := unstage(ctx, vol, staging); err != nil {
			t.Errorf("cleanup unstage: %v", err)
		}
	})
	return staging, target
}

func stats(t testing.TB, vol *csi.Volume, path string) (*csi.NodeGetVolumeStatsResponse, time.Duration, error) {
	t.Helper()
	start := time.Now()
	resp, err := theEnv.node.NodeGetVolumeStats(tctx(t, 30*time.Second), &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: path})
	return resp, time.Since(start), err
}

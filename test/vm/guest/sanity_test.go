//go:build vmguest

package guest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/csi-smb/csi-smb/test/lab"
)

// TestSanity runs the CSI community's conformance suite (csi-test v5.6.0)
// against the real driver: real SMB2 sessions to Samba for the controller,
// real kernel cifs mounts for the node.
//
// Specs that skip, and why (the suite skips them itself because the driver
// does not advertise the capability; none is skipped by this file):
//   - snapshots (CreateSnapshot, ListSnapshots, DeleteSnapshot, GetSnapshot):
//     no CREATE_DELETE_SNAPSHOT/LIST_SNAPSHOTS; SMB directories have no
//     snapshot primitive.
//   - volume content source (clone, from snapshot): no CLONE_VOLUME.
//   - ControllerPublish/Unpublish and attach limits: no
//     PUBLISH_UNPUBLISH_VOLUME; SMB needs no attach step.
//   - ControllerExpandVolume, NodeExpandVolume: no EXPAND_VOLUME; a directory
//     has no size to expand.
//   - GetCapacity: no GET_CAPACITY; a share's free space is not a capacity
//     the scheduler can reserve.
//   - ControllerModifyVolume / VolumeAttributesClass: no MODIFY_VOLUME.
//   - GroupController (volume group snapshots): not provided.
//
// ListVolumes, ControllerGetVolume and the v1.13 health RPCs
// (NodeGetVolumeHealth, NodeGetStorageHealth, ControllerGetVolumeHealth,
// ControllerListVolumeHealth) are advertised and run.
func TestSanity(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.yaml")
	creds := "  username: " + lab.User + "\n  password: \"" + lab.Password + "\"\n"
	var yaml string
	for _, k := range []string{"CreateVolumeSecret", "DeleteVolumeSecret", "NodeStageVolumeSecret",
		"ControllerValidateVolumeCapabilitiesSecret", "NodePublishVolumeSecret", "ControllerPublishVolumeSecret"} {
		yaml += k + ":\n" + creds
	}
	if err := os.WriteFile(secrets, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + socket
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.SecretsFile = secrets
	cfg.TestVolumeParameters = map[string]string{"source": "//10.213.0.2/share/sanity"}
	cfg.TestVolumeAccessType = "mount"
	cfg.IdempotentCount = 2
	sanity.Test(t, cfg)
}

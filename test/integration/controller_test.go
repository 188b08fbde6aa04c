//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/volume"
	"github.com/csi-smb/csi-smb/test/lab"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func exists(t *testing.T, rel string) bool {
	t.Helper()
	_, err := os.Stat(serverDisk(t, rel))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func mustCreate(t *testing.T, c csi.ControllerClient, req *csi.CreateVolumeRequest) *csi.Volume {
	t.Helper()
	resp, err := c.CreateVolume(ctxT(t), req)
	if err != nil {
		t.Fatalf("CreateVolume(%s): %v", req.GetName(), err)
	}
	return resp.GetVolume()
}

func mustDelete(t *testing.T, c csi.ControllerClient, id string) {
	t.Helper()
	if _, err := c.DeleteVolume(ctxT(t), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets()}); err != nil {
		t.Fatalf("DeleteVolume(%s): %v", id, err)
	}
}

func recordOf(t *testing.T, id string) string {
	t.Helper()
	v, err := volume.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return provision.RecordPath(v)
}

func TestCreateDeleteOnRealSamba(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	vol := mustCreate(t, c, createReq(name, nil))
	if vol.GetCapacityBytes() != 1<<30 || vol.GetVolumeContext()["source"] != "//"+server+"/share/it" || vol.GetVolumeContext()["subDir"] != name {
		t.Fatalf("unexpected volume %+v", vol)
	}
	if !exists(t, "it/"+name) || !exists(t, recordOf(t, vol.GetVolumeId())) {
		t.Fatalf("directory or record missing on the server after CreateVolume")
	}
	again := mustCreate(t, c, createReq(name, nil))
	if again.GetVolumeId() != vol.GetVolumeId() {
		t.Fatalf("same request gave another volume: %s vs %s", again.GetVolumeId(), vol.GetVolumeId())
	}
	mustDelete(t, c, vol.GetVolumeId())
	if exists(t, "it/"+name) || exists(t, recordOf(t, vol.GetVolumeId())) {
		t.Fatal("directory or record left on the server after DeleteVolume with onDelete=delete")
	}
	mustDelete(t, c, vol.GetVolumeId()) // already gone: still success
}

func TestIdempotencyConflicts(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	vol := mustCreate(t, c, createReq(name, nil))
	t.Cleanup(func() { mustDelete(t, c, vol.GetVolumeId()) })

	bigger := createReq(name, nil)
	bigger.CapacityRange = &csi.CapacityRange{RequiredBytes: 2 << 30, LimitBytes: 2 << 30}
	_, err := c.CreateVolume(ctxT(t), bigger)
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("same name, other capacity: %v, want AlreadyExists", err)
	}
	retain := createReq(name, map[string]string{"source": "//" + server + "/share/it", "onDelete": "retain"})
	_, err = c.CreateVolume(ctxT(t), retain)
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("same name, other onDelete: %v, want AlreadyExists", err)
	}
}

func TestRetainAndArchive(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	kept := mustCreate(t, c, createReq(name+"-r", map[string]string{"source": "//" + server + "/share/it", "onDelete": "retain"}))
	mustDelete(t, c, kept.GetVolumeId())
	if !exists(t, "it/"+name+"-r") || exists(t, recordOf(t, kept.GetVolumeId())) {
		t.Fatal("retain: directory must stay and the record must go")
	}

	params := map[string]string{"source": "//" + server + "/share/it", "subDir": name + "-a", "onDelete": "archive"}
	first := mustCreate(t, c, createReq(name+"-a1", params))
	mustDelete(t, c, first.GetVolumeId())
	if exists(t, "it/"+name+"-a") || !exists(t, "it/archived-"+name+"-a") {
		t.Fatal("archive: directory must be renamed to archived-<name>")
	}
	second := mustCreate(t, c, createReq(name+"-a2", params))
	mustDelete(t, c, second.GetVolumeId())
	entries, err := os.ReadDir(serverDisk(t, "it"))
	if err != nil {
		t.Fatal(err)
	}
	archived := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "archived-"+name+"-a") {
			archived++
		}
	}
	if archived != 2 {
		t.Fatalf("second archive of the same directory must not overwrite the first: %d archives", archived)
	}
}

func TestSharedDirectoryIsKeptUntilLastVolume(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	params := map[string]string{"source": "//" + server + "/share/it", "subDir": name + "-shared"}
	a := mustCreate(t, c, createReq(name+"-1", params))
	b := mustCreate(t, c, createReq(name+"-2", params))
	mustDelete(t, c, a.GetVolumeId())
	if !exists(t, "it/"+name+"-shared") {
		t.Fatal("directory deleted while another volume still uses it")
	}
	mustDelete(t, c, b.GetVolumeId())
	if exists(t, "it/"+name+"-shared") {
		t.Fatal("directory kept after its last volume was deleted")
	}
}

func TestTemplates(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	req := createReq(name, map[string]string{
		"source": "//" + server + "/share/it", "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}",
		volume.MetaPVCNamespace: "team-" + name, volume.MetaPVCName: "data", volume.MetaPVName: name,
	})
	vol := mustCreate(t, c, req)
	if !exists(t, filepath.Join("it", "team-"+name, "data")) {
		t.Fatal("templated subDir not created")
	}
	mustDelete(t, c, vol.GetVolumeId())
}

func TestBadInput(t *testing.T) {
	c := controller(t)
	name := uniqueName(t)
	wrongPass := createReq(name, nil)
	wrongPass.Secrets = map[string]string{"username": lab.User, "password": "not-the-Password-42"}
	tests := []struct {
		name string
		req  *csi.CreateVolumeRequest
		code codes.Code
		msg  string
	}{
		{"wrong password", wrongPass, codes.PermissionDenied, "logon"},
		{"unknown parameter", createReq(name, map[string]string{"source": "//" + server + "/share", "sizeLimit": "1"}), codes.InvalidArgument, "sizeLimit"},
		{"missing share", createReq(name, map[string]string{"source": "//" + server + "/nosuchshare"}), codes.InvalidArgument, "nosuchshare"},
		{"dotdot", createReq(name, map[string]string{"source": "//" + server + "/share/../etc"}), codes.InvalidArgument, "source"},
		{"block", func() *csi.CreateVolumeRequest {
			r := createReq(name, nil)
			r.VolumeCapabilities = []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}}
			return r
		}(), codes.InvalidArgument, "block"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateVolume(ctxT(t), tc.req)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.code, tc.msg)
			}
			if strings.Contains(err.Error(), "not-the-Password-42") || strings.Contains(err.Error(), lab.Password) {
				t.Fatalf("error leaks a password: %v", err)
			}
		})
	}
	if exists(t, "it/"+name) {
		t.Fatal("a rejected request left a directory behind")
	}
}

func TestUnreachableServerIsBounded(t *testing.T) {
	c := controller(t)
	req := createReq(uniqueName(t), map[string]string{"source": "//10.213.0.99/share"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.CreateVolume(ctx, req)
	if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Fatalf("err = %v, want DeadlineExceeded or Unavailable", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("CreateVolume against a dead address took %v with a 3s deadline", took)
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	c := controller(t)
	vol := mustCreate(t, c, createReq(uniqueName(t), nil))
	caps := []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
	resp, err := c.ValidateVolumeCapabilities(ctxT(t), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.GetVolumeId(), VolumeCapabilities: caps, Secrets: secrets()})
	if err != nil || resp.GetConfirmed() == nil {
		t.Fatalf("RWX on an existing volume: %v %v", resp, err)
	}
	mustDelete(t, c, vol.GetVolumeId())
	_, err = c.ValidateVolumeCapabilities(ctxT(t), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.GetVolumeId(), VolumeCapabilities: caps, Secrets: secrets()})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("deleted volume: %v, want NotFound", err)
	}
}

func TestConcurrentCreates(t *testing.T) {
	c := controller(t)
	base := uniqueName(t)
	var wg sync.WaitGroup
	ids := make([]string, 32)
	errs := make([]error, 32)
	for i := range 32 {
		wg.Go(func() {
			resp, err := c.CreateVolume(ctxT(t), createReq(base+"-"+string(rune('a'+i%26))+strings.Repeat("x", i/26), nil))
			ids[i], errs[i] = resp.GetVolume().GetVolumeId(), err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	for _, id := range ids {
		mustDelete(t, c, id)
	}
}

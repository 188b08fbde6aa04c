package driver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/kube"
)

// TestRestartedPluginKnowsItsPods: the pods and PVC of a published volume
// survive a restart of the node plugin in its state directory, so the
// adopted volume's Events still reach them; records of paths unpublished
// while it was down, and files that are not valid records, are deleted.
func TestRestartedPluginKnowsItsPods(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	h := newHarness(t)
	h.d.opts.StateDir = state
	vol := h.volume(t)
	id := vol.GetVolumeId()
	kubeletDir := t.TempDir()
	st := filepath.Join(kubeletDir, "pv-1", "globalmount")
	if err := os.MkdirAll(st, 0o750); err != nil {
		t.Fatal(err)
	}
	volData := `{"driverName":"` + DefaultDriverName + `","volumeHandle":"` + id + `"}`
	if err := os.WriteFile(filepath.Join(filepath.Dir(st), "vol_data.json"), []byte(volData), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := h.d.NodeStageVolume(ctx, stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	podCtx := func(name string) map[string]string {
		c := map[string]string{kube.ContextPodName: name, kube.ContextPodNamespace: "ns", kube.ContextPodUID: "uid-" + name,
			kube.ContextPVCName: "data", kube.ContextPVCNamespace: "ns"}
		for k, v := range vol.GetVolumeContext() {
			c[k] = v
		}
		return c
	}
	targets := []string{filepath.Join(kubeletDir, "pod-a", "mount"), filepath.Join(kubeletDir, "pod-b", "mount")}
	for i, target := range targets {
		if _, err := h.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: st,
			TargetPath: target, VolumeCapability: rwx, VolumeContext: podCtx("pod-" + string(rune('a'+i)))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: targets[1]}); err != nil {
		t.Fatal(err)
	}
	// Published while... then unpublished by hand while the plugin was down: the record stays behind.
	gone := filepath.Join(kubeletDir, "pod-c", "mount")
	h.d.recordPublish(id, gone, false, []kube.Object{{Kind: "Pod", Namespace: "ns", Name: "pod-c"}})
	for name, content := range map[string]string{
		"0123456789abcdef0123456789abcdef" + recordSuffix: `{"v":1,"volumeID":"x","target":"/elsewhere"}`, // not its own name
		recordName("/bad") + "x" + recordSuffix:           `{"v":1`,
		".tmp-" + recordName("/half") + "-1":              `{"v":1,"volu`,
	} {
		if err := os.WriteFile(filepath.Join(state, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The restart: a new plugin over the same mounts.
	r := newHarness(t)
	r.d.opts.StateDir = state
	if err := r.mounter.MountCIFS(ctx, "//srv/share/x", st, nil, auth.Credentials{}); err != nil {
		t.Fatal(err)
	}
	if err := r.mounter.BindMount(ctx, st, targets[0], false); err != nil {
		t.Fatal(err)
	}
	r.d.adoptStaged()
	if _, ok := r.store.Volume(id); !ok {
		t.Fatalf("volume %s not adopted", id)
	}
	var got []string
	for _, o := range r.d.node.objects(id) {
		got = append(got, o.Kind+"/"+o.Namespace+"/"+o.Name)
	}
	slices.Sort(got)
	if want := []string{"PersistentVolumeClaim/ns/data", "Pod/ns/pod-a"}; !slices.Equal(got, want) {
		t.Fatalf("objects of the adopted volume: %v, want %v", got, want)
	}
	if !r.d.node.knowsPath(id, targets[0]) {
		t.Error("the adopted volume's publish path is not known")
	}
	left, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if want := []string{recordName(targets[0])}; !slices.Equal(names, want) {
		t.Errorf("state dir holds %v, want only the record of %s (%v)", names, targets[0], want)
	}
}

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"valid", `{"v":1,"volumeID":"v1#a","target":"/k/pods/u/mount","objects":[{"Kind":"Pod","Namespace":"ns","Name":"p"}]}`, true},
		{"no objects", `{"v":1,"volumeID":"v1#a","target":"/k/mount"}`, true},
		{"old version", `{"v":0,"volumeID":"v1#a","target":"/k/mount"}`, false},
		{"no volume", `{"v":1,"target":"/k/mount"}`, false},
		{"relative target", `{"v":1,"volumeID":"a","target":"k/mount"}`, false},
		{"unclean target", `{"v":1,"volumeID":"a","target":"/k/../mount"}`, false},
		{"other kind", `{"v":1,"volumeID":"a","target":"/k","objects":[{"Kind":"Secret","Namespace":"ns","Name":"s"}]}`, false},
		{"no namespace", `{"v":1,"volumeID":"a","target":"/k","objects":[{"Kind":"Pod","Name":"p"}]}`, false},
		{"not json", `{"v":1,`, false},
		{"too large", `{"v":1,"volumeID":"a","target":"/k","x":"` + strings.Repeat("x", maxRecord) + `"}`, false},
	} {
		if _, err := parseRecord([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// FuzzParseRecord: a record file is bytes from disk; whatever they are,
// parsing neither panics nor accepts what the checks refuse.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"v":1,"volumeID":"v1#a","target":"/k/pods/u/mount","objects":[{"Kind":"Pod","Namespace":"ns","Name":"p"}]}`))
	f.Add([]byte(`{"v":1,"volumeID":"a","target":"/k/../x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(b)
		if err != nil {
			return
		}
		if r.VolumeID == "" || !filepath.IsAbs(r.Target) || filepath.Clean(r.Target) != r.Target || len(b) > maxRecord {
			t.Fatalf("accepted %+v from %q", r, b)
		}
		for _, o := range r.Objects {
			if o.Name == "" || o.Namespace == "" || (o.Kind != "Pod" && o.Kind != "PersistentVolumeClaim") {
				t.Fatalf("accepted object %+v", o)
			}
		}
	})
}

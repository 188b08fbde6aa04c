package main

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func class() *storagev1.StorageClass {
	retain := v1.PersistentVolumeReclaimRetain
	return &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "smb"},
		Provisioner: "smb.csi-smb.io",
		Parameters: map[string]string{
			"source":              "//10.213.0.2/data",
			provisionerSecretName: "creds-${pvc.namespace}", provisionerSecretNS: "kube-system",
			stageSecretName: "stage", stageSecretNS: "${pvc.namespace}",
		},
		MountOptions:  []string{"dir_mode=0777"},
		ReclaimPolicy: &retain,
	}
}

func claim() *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "apps"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func TestBuildRequest(t *testing.T) {
	r, err := buildRequest(class(), "pvc-1", claim(), true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"source": "//10.213.0.2/data", pvcNameKey: "data", pvcNamespaceKey: "apps", pvNameKey: "pvc-1"}
	if len(r.create.Parameters) != len(want) {
		t.Errorf("parameters %v, want %v (csi.storage.k8s.io/ secret keys are not passed on)", r.create.Parameters, want)
	}
	for k, v := range want {
		if r.create.Parameters[k] != v {
			t.Errorf("parameter %s = %q, want %q", k, r.create.Parameters[k], v)
		}
	}
	if r.create.Name != "pvc-1" || r.create.CapacityRange.GetRequiredBytes() != 1<<30 {
		t.Errorf("request %v", r.create)
	}
	if c := r.create.VolumeCapabilities; len(c) != 1 || c[0].GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER ||
		len(c[0].GetMount().GetMountFlags()) != 1 {
		t.Errorf("capabilities %v", c)
	}
	if r.secret == nil || r.secret.Name != "creds-apps" || r.secret.Namespace != "kube-system" {
		t.Errorf("provisioner secret %v", r.secret)
	}
	if r.stage == nil || r.stage.Name != "stage" || r.stage.Namespace != "apps" {
		t.Errorf("stage secret %v", r.stage)
	}
	pv := buildPV("smb.csi-smb.io", class(), "pvc-1", claim(), r, &csi.Volume{VolumeId: "v1#x", VolumeContext: map[string]string{"source": "//10.213.0.2/data/pvc-1"}})
	if pv.Name != "pvc-1" || pv.Spec.CSI.VolumeHandle != "v1#x" || pv.Spec.CSI.Driver != "smb.csi-smb.io" ||
		pv.Spec.CSI.NodeStageSecretRef != r.stage || pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain ||
		pv.Spec.StorageClassName != "smb" || pv.Spec.Capacity.Storage().Value() != 1<<30 ||
		pv.Spec.CSI.VolumeAttributes["source"] != "//10.213.0.2/data/pvc-1" {
		t.Errorf("PV %+v", pv.Spec)
	}
}

func TestBuildRequestRejects(t *testing.T) {
	half := class()
	delete(half.Parameters, provisionerSecretNS)
	block := claim()
	mode := v1.PersistentVolumeBlock
	block.Spec.VolumeMode = &mode
	none := claim()
	none.Spec.AccessModes = nil
	for name, c := range map[string]struct {
		sc  *storagev1.StorageClass
		pvc *v1.PersistentVolumeClaim
	}{"secret name without namespace": {half, claim()}, "block": {class(), block}, "no access mode": {class(), none}} {
		if _, err := buildRequest(c.sc, "pvc-1", c.pvc, false); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

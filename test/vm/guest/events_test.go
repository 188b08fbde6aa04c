//go:build vmguest

package guest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/csi-smb/csi-smb/internal/testrun"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
	"github.com/csi-smb/csi-smb/test/lab"
)

// TestEventsReachKubernetes runs against the lab's real kube-apiserver: a
// PVC and a pod that uses it exist there (no kubelet runs, so the pod stays
// Pending); the volume is published with the pod's identity in its volume
// context, as kubelet does with podInfoOnMount. When the server dies, the
// driver writes Warning ServerUnreachable events on the pod and on the PVC
// (what `kubectl describe` shows); when it returns, Normal VolumeHealthy.
// Then its directory is removed on the server: Warning VolumeDirectoryMissing.
func TestEventsReachKubernetes(t *testing.T) {
	cs, err := kube.NewClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := tctx(t, 5*time.Minute)
	ns, pvc, pod := kubeObjects(t, ctx, cs)
	vol := volumeWithClaim(t, pvc)
	staging, target := paths(t)
	if err := stage(t, vol, staging, rwx); err != nil {
		t.Fatal(err)
	}
	podCtx := map[string]string{kube.ContextPodName: pod.Name, kube.ContextPodNamespace: ns, kube.ContextPodUID: string(pod.UID)}
	for k, v := range vol.GetVolumeContext() {
		podCtx[k] = v
	}
	if _, err := theEnv.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol.GetVolumeId(),
		StagingTargetPath: staging, TargetPath: target, VolumeCapability: rwx, VolumeContext: podCtx}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = unpublish(context.Background(), vol, target)
		_ = unstage(context.Background(), vol, staging)
	}()
	waitHealth(t, vol, target, 10*time.Second, "healthy", healthy)
	fault(t, "kill", victim)
	healed := false
	defer func() {
		if !healed {
			fault(t, "start", victim)
		}
	}()
	waitEvents(t, ctx, cs, ns, []types.UID{pod.UID, pvc.UID}, corev1.EventTypeWarning, "ServerUnreachable")
	fault(t, "start", victim)
	healed = true
	waitEvents(t, ctx, cs, ns, []types.UID{pod.UID, pvc.UID}, corev1.EventTypeNormal, "VolumeHealthy")
	fmt.Printf("RESULT events: Warning ServerUnreachable and Normal VolumeHealthy on pod %s/%s and pvc %s/%s\n", ns, pod.Name, ns, pvc.Name)
	// The volume's directory removed on the server under the running pod.
	v, err := volume.ParseID(vol.GetVolumeId())
	if err != nil {
		t.Fatal(err)
	}
	pool := smb.NewPool(smb.Options{})
	testrun.Background(t, pool.Run) // closes its sessions when the test ends
	sh, release, err := pool.Share(ctx, v.Source.Server, v.Source.Share, auth.Credentials{Username: lab.User, Password: lab.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := sh.RemoveAll(ctx, v.Dir()); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, ctx, cs, ns, []types.UID{pod.UID, pvc.UID}, corev1.EventTypeWarning, health.ReasonDirMissing)
	fmt.Printf("RESULT events: Warning %s on the pod and the pvc after the directory was removed\n", health.ReasonDirMissing)
}

func kubeObjects(t *testing.T, ctx context.Context, cs kubernetes.Interface) (string, *corev1.PersistentVolumeClaim, *corev1.Pod) {
	t.Helper()
	ns := fmt.Sprintf("csi-smb-e2e-%d", time.Now().UnixNano()%1e9)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// No controller-manager runs in the lab, so the default service account is made by hand.
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := "smb"
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &sc, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns, pvc, pod
}

// volumeWithClaim creates a volume the way csi-provisioner does with
// --extra-create-metadata, so the volume context names its PVC.
func volumeWithClaim(t *testing.T, pvc *corev1.PersistentVolumeClaim) *csi.Volume {
	t.Helper()
	name := "pvc-" + string(pvc.UID)
	resp, err := theEnv.ctl.CreateVolume(tctx(t, 30*time.Second), &csi.CreateVolumeRequest{
		Name: name, VolumeCapabilities: []*csi.VolumeCapability{rwx}, Secrets: secrets(),
		Parameters: map[string]string{"source": "//10.213.0.3/share/guest", volume.MetaPVCName: pvc.Name,
			volume.MetaPVCNamespace: pvc.Namespace, volume.MetaPVName: name},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = theEnv.ctl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(), Secrets: secrets()})
	})
	if resp.GetVolume().GetVolumeContext()[kube.ContextPVCName] != pvc.Name {
		t.Fatalf("volume context %v does not name the PVC", resp.GetVolume().GetVolumeContext())
	}
	return resp.GetVolume()
}

// waitEvents waits until every object in uids has an event of that type and reason.
func waitEvents(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string, uids []types.UID, typ, reason string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		missing := []string{}
		for _, uid := range uids {
			found := false
			for _, e := range list.Items {
				if e.InvolvedObject.UID == uid && e.Type == typ && e.Reason == reason {
					found = strings.Contains(e.Message, "SMB volume") && e.Source.Component != ""
				}
			}
			if !found {
				missing = append(missing, string(uid))
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s %s event for %v after 60 s (events: %d)", typ, reason, missing, len(list.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/csi-smb/csi-smb/pkg/health"
)

func TestObjectsFromContext(t *testing.T) {
	got := ObjectsFromContext(map[string]string{ContextPodName: "p", ContextPodNamespace: "ns", ContextPodUID: "u1",
		ContextPVCName: "data", ContextPVCNamespace: "ns", "source": "//s/sh"})
	if len(got) != 2 || got[0] != (Object{Kind: "Pod", Namespace: "ns", Name: "p", UID: "u1"}) || got[1].Kind != "PersistentVolumeClaim" {
		t.Fatalf("objects = %+v", got)
	}
	if len(ObjectsFromContext(map[string]string{ContextPodName: "p"})) != 0 {
		t.Fatal("a pod without a namespace is not an object")
	}
}

// TestReporterWritesEvents uses client-go's fake clientset: a unit test of
// the reporter's mapping. The guest suite checks the same against a real
// kube-apiserver.
func TestReporterWritesEvents(t *testing.T) {
	client := fake.NewClientset(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "ns", UID: "pvc-uid"}})
	r := NewReporter(client, "smb.csi-smb.io", "node-1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	objs := []Object{{Kind: "Pod", Namespace: "ns", Name: "p", UID: "pod-uid"}, {Kind: "PersistentVolumeClaim", Namespace: "ns", Name: "data"}}
	r.VolumeHealthChanged("vol-1", health.VolumeVerdict{State: health.StateUnreachable, Reason: "ServerUnreachable", Message: "2 probes failed"}, objs)
	r.VolumeHealthChanged("vol-1", health.VolumeVerdict{State: health.StateHealthy, Reason: "VolumeHealthy", Message: "volume is healthy"}, objs)
	var events []corev1.Event
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		list, err := client.CoreV1().Events("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if events = list.Items; len(events) == 4 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(events) != 4 {
		t.Fatalf("%d events, want 4 (2 objects x 2 changes)", len(events))
	}
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.InvolvedObject.Kind+"/"+string(e.InvolvedObject.UID)+"/"+e.Type+"/"+e.Reason] = true
		if e.Source.Host != "node-1" || e.Source.Component != "smb.csi-smb.io" {
			t.Fatalf("source %+v", e.Source)
		}
		want := "SMB volume vol-1 on node node-1 is inaccessible: 2 probes failed"
		if e.Type == corev1.EventTypeNormal {
			want = "SMB volume vol-1 on node node-1 is healthy: volume is healthy"
		}
		if e.Message != want {
			t.Errorf("%s event message %q, want %q", e.Type, e.Message, want)
		}
	}
	for _, want := range []string{"Pod/pod-uid/Warning/ServerUnreachable", "PersistentVolumeClaim/pvc-uid/Warning/ServerUnreachable",
		"Pod/pod-uid/Normal/VolumeHealthy", "PersistentVolumeClaim/pvc-uid/Normal/VolumeHealthy"} {
		if !seen[want] {
			t.Errorf("missing event %s; have %v", want, seen)
		}
	}
}

// TestFlappingVolumeStillShowsItsState: a volume that has sent many
// warnings of one reason (a long flap: MountReconnecting over and over) still
// gets its next ServerUnreachable through client-go's spam filter, which
// passes 25 events per bucket; by default a bucket is an object and a type.
func TestFlappingVolumeStillShowsItsState(t *testing.T) {
	client := fake.NewClientset()
	r := NewReporter(client, "smb.csi-smb.io", "node-1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	objs := []Object{{Kind: "Pod", Namespace: "ns", Name: "p", UID: "pod-uid"}}
	for i := range 30 {
		r.VolumeHealthChanged("vol-1", health.VolumeVerdict{State: health.StateUnreachable, Reason: "MountReconnecting",
			Message: fmt.Sprintf("reconnecting, try %d", i)}, objs)
	}
	r.VolumeHealthChanged("vol-1", health.VolumeVerdict{State: health.StateUnreachable, Reason: "ServerUnreachable", Message: "2 probes failed"}, objs)
	found := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !found; time.Sleep(20 * time.Millisecond) {
		list, err := client.CoreV1().Events("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Items {
			found = found || e.Reason == "ServerUnreachable"
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("ServerUnreachable after 30 MountReconnecting warnings was dropped by the spam filter")
	}
}

//go:build integration

package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount/mounttest"
	"github.com/csi-smb/csi-smb/pkg/plugin"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/volume"
	"github.com/csi-smb/csi-smb/test/lab"

	"github.com/csi-smb/csi-smb/internal/testrun"
)

// BenchmarkRPCLatencyDeadServer: 100 volumes on a server that is killed;
// NodeGetVolumeHealth and NodeGetVolumeStats latency over gRPC (p50, p99 of
// 2,000 calls each). The driver runs in-process with its production prober
// and monitor against the real, dead smbd; the mounts are the fake mounter's
// (this path never touches them: the RPCs answer from memory).
func BenchmarkRPCLatencyDeadServer(b *testing.B) {
	const n, rounds = 100, 20
	dir := b.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	opts := driver.DefaultOptions()
	opts.Endpoint, opts.NodeID = "unix://"+sock, "bench"
	p, err := plugin.New(opts, plugin.Parts{Dialer: realDialer(), Mounter: mounttest.New(),
		OpenShare: func(context.Context, string, string, auth.Credentials) (provision.FS, func(), error) {
			return nil, nil, fmt.Errorf("no controller work here")
		}})
	if err != nil {
		b.Fatal(err)
	}
	testrun.Background(b, p.Run)
	ctx := context.Background()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	node := csi.NewNodeClient(conn)
	type vol struct{ id, staging string }
	var vols []vol
	for i := range n {
		v := volume.Volume{Source: volume.Source{Server: victimIP, Share: "share"}, SubDir: fmt.Sprintf("bench-%d", i),
			OnDelete: volume.OnDeleteDelete, UID: volume.UIDFor(fmt.Sprint(i))}
		st := filepath.Join(dir, fmt.Sprint(i))
		req := &csi.NodeStageVolumeRequest{VolumeId: v.ID(), StagingTargetPath: st, VolumeContext: v.Context(),
			Secrets:          map[string]string{"username": lab.User, "password": lab.Password},
			VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}, AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}}
		for {
			if _, err = node.NodeStageVolume(ctx, req); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		vols = append(vols, vol{v.ID(), st})
	}
	fault(b, "kill", victim)
	defer fault(b, "start", victim)
	for _, v := range vols {
		for {
			r, err := node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.id})
			if err == nil && len(r.GetVolumeHealth().GetHealthStatuses()) > 0 && r.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var healthLat, statsLat []time.Duration
	b.ResetTimer()
	for range rounds {
		for _, v := range vols {
			t0 := time.Now()
			if _, err := node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
				b.Fatal(err)
			}
			healthLat = append(healthLat, time.Since(t0))
			t0 = time.Now()
			resp, err := node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: v.id, VolumePath: v.staging})
			if err != nil {
				b.Fatal(err)
			}
			statsLat = append(statsLat, time.Since(t0))
			if abnormal, _, _ := driver.LegacyCondition(resp, 2); !abnormal {
				b.Fatal("a volume on a dead server reported normal")
			}
		}
	}
	b.StopTimer()
	q := func(d []time.Duration, p int) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[(len(s)*p+99)/100-1]
	}
	for name, d := range map[string][]time.Duration{"health": healthLat, "stats": statsLat} {
		b.ReportMetric(float64(q(d, 50).Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(q(d, 99).Microseconds())/1000, name+"-p99-ms")
	}
	fmt.Printf("RESULT rpc latency with %d volumes on a dead server (host): health p50 %v p99 %v; stats p50 %v p99 %v\n", n,
		q(healthLat, 50), q(healthLat, 99), q(statsLat, 50), q(statsLat, 99))
}

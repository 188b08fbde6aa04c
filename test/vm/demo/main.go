// Command demo runs inside the lab's qemu guest: it starts the real csi-smb
// binary and walks one volume through its life on real Samba and kernel
// cifs, printing each step and its latency, then breaks the server (kill,
// freeze) and shows what the driver reports until it heals; then a volume on
// a DFS link whose active target freezes under a running reader.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/test/lab"
)

type demo struct {
	node csi.NodeClient
	ctl  csi.ControllerClient
	ctrl *lab.Control
	step int
}

func main() {
	host := flag.String("host", "/host", "the 9p share with bin/csi-smb and the fault channel")
	server := flag.String("server", "n2", "lab server to put the volume on")
	flag.Parse()
	if err := run(*host, *server); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(host, server string) error {
	ip := map[string]string{"n1": "10.213.0.1", "n2": "10.213.0.2", "n3": "10.213.0.3"}[server]
	if ip == "" {
		return fmt.Errorf("unknown server %q", server)
	}
	logf, err := os.Create("/tmp/csi-smb.log")
	if err != nil {
		return err
	}
	drv := exec.Command(filepath.Join(host, "bin", "csi-smb"), "--endpoint=unix:///tmp/csi.sock", "--mode=all",
		"--node-id=demo-node", "--v=2", "--logtostderr")
	drv.Stdout, drv.Stderr = logf, logf
	if err := drv.Start(); err != nil {
		return err
	}
	defer func() { _ = drv.Process.Signal(os.Interrupt); _ = drv.Wait() }()
	conn, err := grpc.NewClient("unix:///tmp/csi.sock", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	d := &demo{node: csi.NewNodeClient(conn), ctl: csi.NewControllerClient(conn), ctrl: lab.NewControl(filepath.Join(host, lab.ControlDir))}
	if err := waitReady(conn); err != nil {
		return err
	}
	fmt.Printf("\ncsi-smb demo: real Samba on %s (%s), kernel cifs in this qemu guest (%s)\n\n", server, ip, kernel())
	fmt.Printf("%-4s %-28s %10s  %s\n", "", "step", "latency", "result")
	return d.lifecycle(ip, server)
}

func (d *demo) lifecycle(ip, server string) error {
	secrets := map[string]string{"username": lab.User, "password": lab.Password}
	capab := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}
	name := fmt.Sprintf("pvc-demo-%d", time.Now().Unix())
	staging := "/var/lib/kubelet/plugins/kubernetes.io/csi/" + driver.DefaultDriverName + "/demo/globalmount"
	target := "/var/lib/kubelet/pods/demo-pod/volumes/kubernetes.io~csi/" + name + "/mount"
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return err
	}
	var vol *csi.Volume
	if err := d.do("CreateVolume", func(ctx context.Context) (string, error) {
		r, err := d.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{capab},
			Parameters: map[string]string{"source": "//" + ip + "/share/demo"}, Secrets: secrets})
		vol = r.GetVolume()
		return "id " + vol.GetVolumeId(), err
	}); err != nil {
		return err
	}
	id := vol.GetVolumeId()
	steps := []struct {
		name string
		fn   func(ctx context.Context) (string, error)
	}{
		{"NodeStageVolume", func(ctx context.Context) (string, error) {
			_, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging,
				VolumeCapability: capab, VolumeContext: vol.GetVolumeContext(), Secrets: secrets})
			return "cifs " + vol.GetVolumeContext()["source"] + "/" + name + " on " + staging, err
		}},
		{"NodePublishVolume", func(ctx context.Context) (string, error) {
			_, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
				TargetPath: target, VolumeCapability: capab})
			return "bind mount on " + target, err
		}},
		{"write 1 MiB", func(context.Context) (string, error) {
			return "hello.bin", os.WriteFile(filepath.Join(target, "hello.bin"), make([]byte, 1<<20), 0o644)
		}},
		{"read it back", func(context.Context) (string, error) {
			b, err := os.ReadFile(filepath.Join(target, "hello.bin"))
			return fmt.Sprintf("%d bytes", len(b)), err
		}},
		{"NodeGetVolumeStats", func(ctx context.Context) (string, error) { return d.stats(ctx, id, target) }},
	}
	for _, s := range steps {
		if err := d.do(s.name, s.fn); err != nil {
			return err
		}
	}
	if err := d.breakAndHeal(id, target, server); err != nil {
		return err
	}
	if err := d.teardown(id, staging, target, secrets, "unmounted", "directory deleted (onDelete=delete)"); err != nil {
		return err
	}
	if err := d.dfs(); err != nil {
		return err
	}
	fmt.Println("\ndemo finished: every step passed")
	return nil
}

// teardown unpublishes, unstages and deletes a volume, one printed step each.
func (d *demo) teardown(id, staging, target string, secrets map[string]string, unstaged, deleted string) error {
	for _, s := range []struct {
		name string
		fn   func(ctx context.Context) (string, error)
	}{
		{"NodeUnpublishVolume", func(ctx context.Context) (string, error) {
			_, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
			return "unmounted, target removed", err
		}},
		{"NodeUnstageVolume", func(ctx context.Context) (string, error) {
			_, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
			return unstaged, err
		}},
		{"DeleteVolume", func(ctx context.Context) (string, error) {
			_, err := d.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets})
			return deleted, err
		}},
	} {
		if err := d.do(s.name, s.fn); err != nil {
			return err
		}
	}
	return nil
}

// breakAndHeal kills, freezes and partitions the server under the
// published volume, and prints what the health RPCs report until it heals.
func (d *demo) breakAndHeal(id, target, server string) error {
	for _, f := range []struct{ what, breakIt, heal string }{
		{"server killed", lab.ActKill, lab.ActStart},
		{"server frozen", lab.ActStop, lab.ActCont},
		{"server partitioned", lab.ActPart, lab.ActUnpart},
	} {
		if err := d.fault("fault: "+f.what, f.breakIt, server); err != nil {
			return err
		}
		if err := d.watch(id, target, true, 30*time.Second); err != nil {
			return err
		}
		if err := d.fault("heal: "+f.heal, f.heal, server); err != nil {
			return err
		}
		if err := d.watch(id, target, false, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// fault applies a lab fault action to server as one printed step.
func (d *demo) fault(step, action, server string) error {
	return d.do(step, func(ctx context.Context) (string, error) {
		return "smblab fault " + action + " " + server, d.ctrl.Do(ctx, action, server)
	})
}

// watch polls NodeGetVolumeHealth until the volume is inaccessible (or
// healthy again) and prints what every health channel says at that moment,
// and the reasons the volume went through on its way back.
func (d *demo) watch(id, target string, wantBroken bool, limit time.Duration) error {
	start := time.Now()
	var via []string
	for time.Since(start) < limit {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := d.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: target})
		cancel()
		if err != nil {
			return fmt.Errorf("NodeGetVolumeHealth: %w", err)
		}
		hs := h.GetVolumeHealth().GetHealthStatuses()
		broken := len(hs) > 0 && hs[0].GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE
		if len(hs) > 0 && (len(via) == 0 || via[len(via)-1] != hs[0].GetReason()) {
			via = append(via, hs[0].GetReason())
		}
		if broken == wantBroken && (wantBroken || len(hs) == 0) {
			took := time.Since(start)
			d.step++
			what := "healthy (no health status)"
			if len(via) > 0 {
				what += ", on the way back: " + strings.Join(via, " → ")
			}
			if len(hs) > 0 {
				what = fmt.Sprintf("%s %s: %s", hs[0].GetStatus(), hs[0].GetReason(), hs[0].GetMessage())
			}
			fmt.Printf("%-4s %-28s %10s  %s\n", fmt.Sprintf("%d.", d.step), "NodeGetVolumeHealth", ms(took), what)
			return d.alsoSay(id, target)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("volume did not become inaccessible=%v within %v", wantBroken, limit)
}

// alsoSay prints the storage health and the legacy condition at this moment.
func (d *demo) alsoSay(id, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sh, err := d.node.NodeGetStorageHealth(ctx, &csi.NodeGetStorageHealthRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetStorageHealth: %w", err)
	}
	storage := "all servers healthy"
	if b := sh.GetBackendHealth(); len(b) > 0 {
		storage = fmt.Sprintf("%s %s: %s", b[0].GetStatus(), b[0].GetReason(), b[0].GetMessage())
	}
	fmt.Printf("%-4s %-28s %10s  %s\n", "", "  NodeGetStorageHealth", "", storage)
	st, err := d.stats(ctx, id, target)
	if err != nil {
		return err
	}
	fmt.Printf("%-4s %-28s %10s  %s\n", "", "  NodeGetVolumeStats", "", st)
	return nil
}

func (d *demo) stats(ctx context.Context, id, target string) (string, error) {
	r, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	if err != nil {
		return "", err
	}
	abnormal, msg, _ := driver.LegacyCondition(r, 2)
	u := r.GetUsage()
	if len(u) == 0 {
		return "", errors.New("no usage")
	}
	return fmt.Sprintf("%d MiB used of %d MiB; legacy condition abnormal=%v: %s", u[0].GetUsed()>>20, u[0].GetTotal()>>20, abnormal, msg), nil
}

func (d *demo) do(name string, fn func(ctx context.Context) (string, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	res, err := fn(ctx)
	took := time.Since(start)
	d.step++
	if err != nil {
		fmt.Printf("%-4s %-28s %10s  FAILED: %v\n", fmt.Sprintf("%d.", d.step), name, ms(took), err)
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Printf("%-4s %-28s %10s  %s\n", fmt.Sprintf("%d.", d.step), name, ms(took), res)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func waitReady(conn *grpc.ClientConn) error {
	id := csi.NewIdentityClient(conn)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r, err := id.Probe(context.Background(), &csi.ProbeRequest{}); err == nil && r.GetReady().GetValue() {
			return nil
		}
	}
	return errors.New("driver not ready after 30s")
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown kernel"
	}
	return "Linux " + string(b[:len(b)-1])
}

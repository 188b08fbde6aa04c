package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/test/lab"
)

// dfs puts a volume on the DFS link dfs\ha (two targets on one directory),
// starts a reader on its publish path, freezes the target the mount uses,
// and shows the reader carrying on through the driver's in-place failover.
func (d *demo) dfs() error {
	secrets := map[string]string{"username": lab.User, "password": lab.Password}
	capab := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}
	name := fmt.Sprintf("pvc-dfs-demo-%d", time.Now().Unix())
	staging := "/var/lib/kubelet/plugins/kubernetes.io/csi/" + driver.DefaultDriverName + "/dfs-demo/globalmount"
	target := "/var/lib/kubelet/pods/dfs-demo-pod/volumes/kubernetes.io~csi/" + name + "/mount"
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return err
	}
	fmt.Printf("\nDFS: a volume on %s, a reader on the publish path, the target in use frozen\n\n", lab.HASource)
	var vol *csi.Volume
	if err := d.do("CreateVolume (DFS link)", func(ctx context.Context) (string, error) {
		r, err := d.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{capab},
			Parameters: map[string]string{"source": lab.HASource + "/demo"}, Secrets: secrets})
		vol = r.GetVolume()
		return "id " + vol.GetVolumeId() + " (made through a target of the link)", err
	}); err != nil {
		return err
	}
	id := vol.GetVolumeId()
	var active string
	for _, s := range []struct {
		name string
		fn   func(ctx context.Context) (string, error)
	}{
		{"NodeStageVolume", func(ctx context.Context) (string, error) {
			_, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging,
				VolumeCapability: capab, VolumeContext: vol.GetVolumeContext(), Secrets: secrets})
			active = connectedTo(staging)
			return "the DFS path itself is mounted; the kernel is connected to " + active, err
		}},
		{"NodePublishVolume", func(ctx context.Context) (string, error) {
			_, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
				TargetPath: target, VolumeCapability: capab})
			if err == nil {
				err = os.WriteFile(filepath.Join(target, "data"), make([]byte, 4096), 0o644)
			}
			return "bind mount on " + target + " (no propagation, as kubelet does)", err
		}},
	} {
		if err := d.do(s.name, s.fn); err != nil {
			return err
		}
	}
	victim := map[string]string{"10.213.0.2:445": "n2", "10.213.0.3:445": "n3"}[active]
	if victim == "" {
		return fmt.Errorf("the mount is connected to %q, not to a target of the link", active)
	}
	r := startReader(filepath.Join(target, "data"))
	time.Sleep(time.Second)
	if err := d.fault("fault: target "+victim+" frozen", lab.ActStop, victim); err != nil {
		return err
	}
	faultAt := time.Now()
	for connectedTo(staging) == active && time.Since(faultAt) < 30*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	d.step++
	fmt.Printf("%-4s %-28s %10s  %s\n", fmt.Sprintf("%d.", d.step), "kernel reconnected", ms(time.Since(faultAt)),
		"same superblock, now on "+connectedTo(staging)+" (the frozen target fenced, its connections ended)")
	time.Sleep(3 * time.Second)
	gap, reads, errs := r.stop(faultAt)
	d.step++
	fmt.Printf("%-4s %-28s %10s  %d reads since the fault, %d errors; longest gap without a read: %s\n",
		fmt.Sprintf("%d.", d.step), "reader", "", reads, errs, ms(gap))
	if err := d.health(id, target); err != nil {
		return err
	}
	if err := d.fault("heal: target "+victim+" resumed", lab.ActCont, victim); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	if err := d.health(id, target); err != nil {
		return err
	}
	if err := d.teardown(id, staging, target, secrets, "unmounted; the fence goes with the last volume on the target", "directory deleted"); err != nil {
		return err
	}
	return nil
}

// health prints the volume's v1.13 health now.
func (d *demo) health(id, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := d.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: target})
	if err != nil {
		return fmt.Errorf("NodeGetVolumeHealth: %w", err)
	}
	what := "healthy"
	if hs := h.GetVolumeHealth().GetHealthStatuses(); len(hs) > 0 {
		what = fmt.Sprintf("%s %s: %s", hs[0].GetStatus(), hs[0].GetReason(), hs[0].GetMessage())
	}
	d.step++
	fmt.Printf("%-4s %-28s %10s  %s\n", fmt.Sprintf("%d.", d.step), "NodeGetVolumeHealth", "", what)
	return nil
}

// connectedTo is the target the mount at staging uses (mountinfo addr=).
func connectedTo(staging string) string {
	infos, err := mount.New(mount.Options{}).List()
	if err != nil {
		return ""
	}
	for _, i := range infos {
		if i.MountPoint == staging {
			return i.ServerAddr()
		}
	}
	return ""
}

// reader reads a file with O_DIRECT (a request to the server each time)
// every 100 ms.
type reader struct {
	mu   sync.Mutex
	ok   []time.Time
	errs int
	done chan struct{}
	wg   sync.WaitGroup
}

func startReader(path string) *reader {
	r := &reader{done: make(chan struct{})}
	buf := make([]byte, 8192)
	off := 4096 - int(uintptrOf(buf)%4096)
	b := buf[off : off+4096]
	r.wg.Go(func() {
		for {
			select {
			case <-r.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
			if err == nil {
				_, err = unix.Read(fd, b)
				_ = unix.Close(fd)
			}
			r.mu.Lock()
			if err != nil {
				r.errs++
			} else {
				r.ok = append(r.ok, time.Now())
			}
			r.mu.Unlock()
		}
	})
	return r
}

// stop ends the reader and returns the longest gap between successful
// reads from a second before since, the reads after since, and the errors.
func (r *reader) stop(since time.Time) (gap time.Duration, reads, errs int) {
	close(r.done)
	r.wg.Wait()
	last := since.Add(-time.Second)
	for _, at := range r.ok {
		if at.Before(last) {
			continue
		}
		gap = max(gap, at.Sub(last))
		last = at
		if at.After(since) {
			reads++
		}
	}
	return gap, reads, r.errs
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

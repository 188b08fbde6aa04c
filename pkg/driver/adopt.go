package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/mount"
)

// kubeletVolData is the part of the kubelet's vol_data.json, written next
// to each staging directory (<kubeletDir>/plugins/kubernetes.io/csi/
// <driver>/<hash>/globalmount), that names the volume staged there.
type kubeletVolData struct {
	DriverName   string `json:"driverName"`
	VolumeHandle string `json:"volumeHandle"`
}

// maxVolData bounds what is read of a vol_data.json.
const maxVolData = 64 << 10

// adoptStaged watches the volumes an earlier run of the node plugin staged
// (a restart under running pods: a DaemonSet rollout, a crash): every cifs
// mount on a kubelet staging directory whose vol_data.json names this
// driver. The kubelet does not stage them again, so without this their
// health would be unknown until a stats or health call named them. It
// reads the mount table and small local files only; it mounts nothing.
func (d *Driver) adoptStaged() {
	infos, err := d.deps.Mounter.List()
	if err != nil {
		klog.ErrorS(err, "cannot read the mount table: volumes staged before this start are watched from their first health call")
		return
	}
	records := d.readRecords()
	mounted := map[string]bool{}
	for _, info := range infos {
		mounted[info.MountPoint] = true
	}
	n := 0
	for _, info := range infos {
		if (info.FsType != "cifs" && info.FsType != "smb3") || filepath.Base(info.MountPoint) != "globalmount" {
			continue
		}
		id, ok := d.stagedHere(info.MountPoint)
		if !ok {
			continue
		}
		if _, known := d.deps.Verdicts.Volume(id); known {
			continue
		}
		if err := d.adopt(id, info); err != nil {
			klog.ErrorS(err, "cannot watch a volume staged before this start", "volumeID", id, "path", info.MountPoint)
			continue
		}
		// What it needs for Events: its publish paths and their pods and PVC.
		d.node.put(id, &staged{staging: info.MountPoint})
		for _, r := range records[id] {
			if mounted[r.Target] {
				d.node.publish(id, r.Target, r.ReadOnly, r.Objects)
			}
		}
		n++
	}
	for _, rs := range records {
		for _, r := range rs {
			if !mounted[r.Target] {
				d.forgetPublish(r.Target) // unpublished while the plugin was down
			}
		}
	}
	if n > 0 {
		klog.InfoS("watching volumes staged before this start", "count", n)
	}
}

// stagedHere is the ID of our volume the kubelet staged at staging.
func (d *Driver) stagedHere(staging string) (string, bool) {
	path := filepath.Join(filepath.Dir(staging), "vol_data.json")
	b, err := readSmallFile(path, maxVolData)
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	var data kubeletVolData
	if err == nil {
		err = json.Unmarshal(b, &data)
	}
	if err != nil {
		klog.V(2).InfoS("unreadable kubelet volume data", "path", path, "err", err)
		return "", false
	}
	if data.DriverName != d.opts.DriverName || data.VolumeHandle == "" {
		return "", false
	}
	return data.VolumeHandle, true
}

// adopt has the monitor watch a volume mounted at info, without a remount.
func (d *Driver) adopt(id string, info mount.Info) error {
	server := info.ServerAddr()
	if server == "" {
		var err error
		if server, err = serverOfMount(id, info.Source); err != nil {
			return err
		}
	}
	klog.InfoS("watching a volume mounted before this plugin started", "volumeID", id, "path", info.MountPoint, "server", server)
	d.deps.Monitor.Add(health.VolumeSpec{ID: id, Staging: info.MountPoint, Server: server})
	return nil
}

// readSmallFile reads path whole, or fails if it holds more than limit
// bytes (what the node reads of files it does not trust: vol_data.json,
// its own publication records).
func readSmallFile(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err == nil && len(b) > limit {
		err = fmt.Errorf("larger than %d bytes", limit)
	}
	return b, err
}

package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/kube"
)

// Publication records keep what a restarted node plugin cannot learn from
// the mount table or the kubelet's files: the pods and the PVC that use each
// published volume, which its health Events go to. One small file per
// publish path in Options.StateDir, written at NodePublishVolume, removed at
// NodeUnpublishVolume, and reconciled at start: a record whose path is no
// longer mounted is deleted. Without a StateDir nothing is written and a
// restarted plugin reports an adopted volume's health to the kubelet only.
type pubRecord struct {
	Version  int           `json:"v"`
	VolumeID string        `json:"volumeID"`
	Target   string        `json:"target"`
	ReadOnly bool          `json:"readOnly"`
	Objects  []kube.Object `json:"objects,omitempty"`
}

const (
	recordVersion = 1
	maxRecord     = 64 << 10 // bytes; more is not ours
	maxRecords    = 10000    // files read at start
	recordSuffix  = ".pub.json"
)

// recordName is the file of target's record: a digest, so a record cannot
// name another path than its own.
func recordName(target string) string {
	sum := sha256.Sum256([]byte(target))
	return hex.EncodeToString(sum[:16]) + recordSuffix
}

// recordPublish writes target's record; a failure costs only the Events
// after a restart, so it is logged, not returned.
func (d *Driver) recordPublish(id, target string, readOnly bool, objects []kube.Object) {
	dir := d.opts.StateDir
	if dir == "" {
		return
	}
	b, err := json.Marshal(pubRecord{Version: recordVersion, VolumeID: id, Target: target, ReadOnly: readOnly, Objects: objects})
	if err == nil {
		err = writeFileAtomic(dir, recordName(target), b)
	}
	if err != nil {
		klog.ErrorS(err, "cannot record a publication: a restarted plugin will not know its pods", "volumeID", id, "target", target)
	}
}

// forgetPublish removes target's record.
func (d *Driver) forgetPublish(target string) {
	if d.opts.StateDir == "" {
		return
	}
	err := os.Remove(filepath.Join(d.opts.StateDir, recordName(target)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		klog.ErrorS(err, "cannot remove a publication record", "target", target)
	}
}

// readRecords returns the valid records of StateDir by volume ID; files that
// are not valid records of their own name are deleted.
func (d *Driver) readRecords() map[string][]pubRecord {
	dir := d.opts.StateDir
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "cannot read the publication records", "dir", dir)
		}
		return nil
	}
	out := map[string][]pubRecord{}
	for i, e := range entries {
		if i >= maxRecords {
			klog.InfoS("too many publication records; the rest are ignored", "dir", dir, "max", maxRecords)
			break
		}
		path := filepath.Join(dir, e.Name())
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), ".tmp-") {
			_ = os.Remove(path) // a write a crash cut short
			continue
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), recordSuffix) {
			continue
		}
		rec, err := readRecord(path)
		if err == nil && recordName(rec.Target) != e.Name() {
			err = errors.New("the record is not of its file's path")
		}
		if err != nil {
			klog.InfoS("deleting an invalid publication record", "path", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		out[rec.VolumeID] = append(out[rec.VolumeID], rec)
	}
	return out
}

// readRecord parses one record file, at most maxRecord bytes.
func readRecord(path string) (pubRecord, error) {
	b, err := readSmallFile(path, maxRecord)
	if err != nil {
		return pubRecord{}, err
	}
	return parseRecord(b)
}

// parseRecord checks a record's bytes: version, a volume ID, a clean
// absolute target, objects of the two kinds events go to.
func parseRecord(b []byte) (pubRecord, error) {
	if len(b) > maxRecord {
		return pubRecord{}, fmt.Errorf("larger than %d bytes", maxRecord)
	}
	var r pubRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return pubRecord{}, err
	}
	switch {
	case r.Version != recordVersion:
		return pubRecord{}, fmt.Errorf("version %d, want %d", r.Version, recordVersion)
	case r.VolumeID == "":
		return pubRecord{}, errors.New("no volume ID")
	case !filepath.IsAbs(r.Target) || filepath.Clean(r.Target) != r.Target:
		return pubRecord{}, fmt.Errorf("target %q is not a clean absolute path", r.Target)
	}
	for _, o := range r.Objects {
		if (o.Kind != "Pod" && o.Kind != "PersistentVolumeClaim") || o.Name == "" || o.Namespace == "" {
			return pubRecord{}, fmt.Errorf("object %+v is not a pod or PVC", o)
		}
	}
	return r, nil
}

// writeFileAtomic writes name in dir (0600) through a temporary file and a
// rename, so a crash leaves the old record or the new one.
func writeFileAtomic(dir, name string, b []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/csi-smb/csi-smb/test/lab"
)

// runCluster: smblab cluster up|down|kubectl (the one-node cluster, lab.ClusterUp).
func runCluster(ctx context.Context, l *lab.Lab, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("cluster up", flag.ExitOnError)
		var o lab.ClusterOptions
		images := fs.String("images", "_out/images", "directory of docker-archive tars and their images.txt (`name:tag file` lines; make image)")
		fs.StringVar(&o.PauseImage, "pause", "", "sandbox image (default: the localhost/pause:* line of images.txt)")
		fs.StringVar(&o.KubeBinDir, "kube-bin", lab.DefaultKubeBinDir, "Kubernetes binaries (hack/build-kube.sh)")
		fs.IntVar(&o.MemoryMiB, "memory", 0, "guest memory in MiB (default 3072)")
		fs.DurationVar(&o.ReadyTimeout, "timeout", 0, "boot to node Ready (default 15m)")
		fs.IntVar(&o.KubeletV, "kubelet-v", 0, "kubelet log level (default 2)")
		_ = fs.Parse(args[1:])
		if fs.NArg() != 0 {
			return errors.New(usage)
		}
		imgs, pause, err := readImages(*images)
		if err != nil {
			return err
		}
		o.Images = imgs
		if o.PauseImage == "" {
			o.PauseImage = pause
		}
		o.Log = os.Stdout
		t, err := l.ClusterUp(ctx, o)
		if err != nil {
			return err
		}
		fmt.Printf("cluster up in %.1fs (control plane %.1fs, share+initramfs %.1fs, boot to node Ready %.1fs): node %s at %s, API server %s\n",
			t.Total.Seconds(), t.ControlPlane.Seconds(), t.Prepare.Seconds(), t.NodeReady.Seconds(), lab.NodeName, lab.GuestIP, lab.KubeServer)
		fmt.Printf("kubeconfig %s (from the client namespace: ip netns exec %s kubectl ...; or smblab cluster kubectl ...)\nnode memory:\n%s",
			l.Kubeconfig(), l.ClientNS(), l.NodeMemory())
		return nil
	case "down":
		if len(args) != 1 {
			return errors.New(usage)
		}
		return l.ClusterDown(ctx)
	case "kubectl":
		kubectl := filepath.Join(lab.DefaultKubeBinDir, "kubectl")
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ClientNS(), kubectl, "--kubeconfig", l.Kubeconfig()}, args[1:]...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	}
	return errors.New(usage)
}

// readImages lists the tars of dir: those images.txt names (`name:tag file`, file relative to dir
// lines), with the pause image's reference, or else every *.tar.
func readImages(dir string) (tars []string, pause string, err error) {
	f, err := os.Open(filepath.Join(dir, "images.txt"))
	if errors.Is(err, os.ErrNotExist) {
		tars, err = filepath.Glob(filepath.Join(dir, "*.tar"))
		return tars, "", err
	}
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fld := strings.Fields(sc.Text())
		if len(fld) != 2 {
			continue
		}
		tar := fld[1]
		if !filepath.IsAbs(tar) {
			tar = filepath.Join(dir, tar) // relative to images.txt
		}
		tars = append(tars, tar)
		if strings.HasPrefix(fld[0], "localhost/pause:") {
			pause = fld[0]
		}
	}
	return tars, pause, sc.Err()
}

// Command csi-smb is the csi-smb CSI driver: controller, node or both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/smb"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	fs := flag.NewFlagSet("csi-smb", flag.ExitOnError)
	var opts driver.Options
	opts.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("csi-smb", version)
		return
	}
	opts.Version = version
	if err := run(opts); err != nil {
		klog.ErrorS(err, "csi-smb failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(opts driver.Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pool := smb.NewPool(smb.Options{})
	deps := driver.Deps{
		Mounter: mount.New(mount.Options{}),
		Statter: mount.NewStatter(nil),
		OpenShare: func(ctx context.Context, server, share string, creds smb.Credentials) (provision.FS, func(), error) {
			return pool.Share(ctx, server, share, creds)
		},
	}
	d, err := driver.New(opts, deps)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pool.Run(gctx) })
	g.Go(func() error { return d.Run(gctx) })
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

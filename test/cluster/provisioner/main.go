// Command provisioner is a TEST-ONLY stand-in for the kubernetes-csi
// external-provisioner (csi-provisioner), for the lab cluster, which can
// pull no image from a registry. It is built on the library csi-provisioner
// is built on (sigs.k8s.io/sig-storage-lib-external-provisioner/v13) and
// does the part of its job the lab needs: for each PVC of a StorageClass
// whose provisioner is the driver's name it calls CreateVolume on the
// driver's CSI socket and creates the PV; it calls DeleteVolume when such
// a PV is released with reclaimPolicy Delete. It takes csi-provisioner's
// flags as the chart passes them, so the chart's provisioner container can
// run it unchanged. It is not the real sidecar (no topology, capacity
// tracking, cloning, snapshots, or secret templates beyond
// ${pvc.name}, ${pvc.namespace} and ${pv.name}): production clusters run
// csi-provisioner.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func main() {
	fs := flag.NewFlagSet("provisioner", flag.ExitOnError)
	csiAddress := fs.String("csi-address", "/csi/csi.sock", "the driver's CSI socket")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig; empty: in-cluster")
	leaderElection := fs.Bool("leader-election", false, "elect a leader among replicas (a Lease)")
	leaderNamespace := fs.String("leader-election-namespace", "", "namespace of the Lease")
	extraMetadata := fs.Bool("extra-create-metadata", false, "pass the PVC and PV names to CreateVolume")
	retryMax := fs.Duration("retry-interval-max", 5*time.Minute, "longest wait between retries of a failed provisioning")
	timeout := fs.Duration("timeout", 15*time.Second, "bound on one CreateVolume or DeleteVolume")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *csiAddress, *kubeconfig, *leaderElection, *leaderNamespace, *extraMetadata, *retryMax, *timeout)
	stop()
	if err != nil {
		klog.ErrorS(err, "provisioner failed")
		klog.Flush()
		os.Exit(1)
	}
}

func run(ctx context.Context, csiAddress, kubeconfig string, leader bool, leaderNS string, extra bool, retryMax, timeout time.Duration) error {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+csiAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("csi %s: %w", csiAddress, err)
	}
	defer func() { _ = conn.Close() }()
	name, err := driverName(ctx, csi.NewIdentityClient(conn))
	if err != nil {
		return err
	}
	klog.InfoS("provisioning for the driver (test-only stand-in for csi-provisioner)", "driver", name, "csi", csiAddress)
	p := &provisioner{driver: name, csi: csi.NewControllerClient(conn), kube: client, extraMetadata: extra, timeout: timeout}
	opts := []func(*controller.ProvisionController) error{
		controller.LeaderElection(leader),
		controller.RetryIntervalMax(retryMax),
		controller.ProvisionTimeout(timeout),
		controller.DeletionTimeout(timeout),
	}
	if leaderNS != "" {
		opts = append(opts, controller.LeaderElectionNamespace(leaderNS))
	}
	controller.NewProvisionController(ctx, client, name, p, opts...).Run(ctx)
	return nil
}

// driverName asks the driver its name (the StorageClasses' provisioner),
// waiting for its socket as the real sidecar does.
func driverName(ctx context.Context, id csi.IdentityClient) (string, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := id.GetPluginInfo(cctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			return info.GetName(), nil
		}
		klog.InfoS("waiting for the driver", "err", err)
		select {
		case <-ctx.Done():
			return "", errors.Join(ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

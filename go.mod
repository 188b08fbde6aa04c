module github.com/csi-smb/csi-smb

go 1.26.0

require (
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.48.0
	k8s.io/mount-utils v0.37.2
)

require (
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/moby/sys/mountinfo v0.7.2 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	k8s.io/klog/v2 v2.140.0 // indirect
	k8s.io/utils v0.0.0-20260707023825-cf1189d6abe3 // indirect
)

SHELL := bash
.SHELLFLAGS := -o pipefail -euc
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DEFAULT_GOAL := build

export PATH := /usr/local/go/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
LAB_DIR ?= /run/csi-smb-lab
FUZZTIME ?= 10s
BENCH ?= .
SOAKS ?= TestSlowAndJittery|TestStarved
BENCHSTAT := go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
OUT := _out
VM := $(OUT)/vm

.PHONY: build deps deps/demo test test/unit test/fuzz test/lab test/integration test/vm demo bench bench/vm verify clean FORCE

## build: the driver binary (static)
build: bin/csi-smb

bin/csi-smb: FORCE
	CGO_ENABLED=0 go build -ldflags "$(LDFLAGS)" -o $@ ./cmd/csi-smb

# The lab cluster's TEST-ONLY stand-in for csi-provisioner (test/cluster/provisioner).
bin/test-provisioner: FORCE
	CGO_ENABLED=0 go build -ldflags "-s -w" -o $@ ./test/cluster/provisioner

bin/smblab: FORCE
	go build -o $@ ./test/lab/cmd/smblab

## deps: install Samba, qemu, a kernel, busybox, etcd, Go and kube-apiserver on Debian (root)
deps:
	hack/install-deps.sh

## deps/demo: what make demo uses (no etcd, no kube-apiserver)
deps/demo:
	hack/install-deps.sh demo

## test: everything: static checks, unit, fuzz, real Samba, kernel cifs in the guest
test: deps verify test/unit test/chart test/alerts test/fuzz test/lab

## test/unit: unit tests, in-process csi-sanity, synctest concurrency tests
test/unit:
	go test -race -shuffle=on -count=1 ./...

## test/fuzz: every fuzz target for FUZZTIME
test/fuzz:
	hack/fuzz.sh $(FUZZTIME)

## test/lab: the lab's own API-server test, then one lab for the integration, fault and guest suites
test/lab: bin/smblab
	go test -tags labkube -count=1 ./test/lab/
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh $(MAKE) --no-print-directory test/integration test/faults test/vm test/cluster

## test/integration: the controller, csi-smb probe (the built binary) against real Samba, as nobody, in the lab's
## client netns
test/integration: bin/smblab
	go test -c -tags integration -o $(OUT)/integration.test ./test/integration
	CGO_ENABLED=0 go build -ldflags "$(LDFLAGS)" -o $(OUT)/csi-smb ./cmd/csi-smb
	chmod 755 $(OUT) $(OUT)/integration.test $(OUT)/csi-smb
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh ip netns exec csismb-c \
	  setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env \
	  env CSI_SMB_LAB_DIR=$(LAB_DIR) CSI_SMB_BIN=$(abspath $(OUT))/csi-smb $(OUT)/integration.test -test.v -test.count=1 2>&1 \
	  | grep -Ev '^[IW][0-9]{4} '

## test/faults: the prober against real Samba: kill, freeze, partition, slow and jittery links, CPU starvation
SOAK ?= 1m
test/faults: bin/smblab
	go test -c -tags integration -o $(OUT)/faults.test ./test/faults
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh ip netns exec csismb-c \
	  env CSI_SMB_LAB_DIR=$(LAB_DIR) CSI_SMB_SOAK=$(SOAK) $(OUT)/faults.test -test.v -test.count=1 -test.timeout 30m

## test/cluster: make image, then on the lab's one-node cluster (smblab cluster up): helm install, CSINode, static
## and dynamic volumes in pods, server killed and frozen as kubectl shows it, node plugin rollout, helm uninstall
.PHONY: test/cluster
test/cluster: image bin/smblab
	go test -c -tags cluster -o $(OUT)/cluster.test ./test/cluster
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh hack/cluster-test.sh $(OUT)/cluster.test -test.v -test.timeout 30m

## test/vm: csi-sanity, secret and dead-server tests in the qemu guest (kernel cifs)
test/vm: bin/smblab vm-share
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh hack/vm-suite.sh $(LAB_DIR) $(VM) bin/guest.test -test.v -test.timeout 35m

.PHONY: vm-share
vm-share:
	mkdir -p $(VM)/bin
	CGO_ENABLED=0 go build -ldflags "$(LDFLAGS)" -o $(VM)/bin/csi-smb ./cmd/csi-smb
	CGO_ENABLED=0 go test -c -tags vmguest -o $(VM)/bin/guest.test ./test/vm/guest
	CGO_ENABLED=0 go build -o $(VM)/bin/demo ./test/vm/demo
	mkdir -p $(VM)/monitoring && cp charts/csi-smb/files/alerts.yaml charts/csi-smb/files/dashboard.json $(VM)/monitoring/

## demo: lab up, then in the guest: provision, mount, write, break, heal, unmount, delete
demo: deps/demo bin/smblab vm-share
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh bin/smblab -dir $(LAB_DIR) vm -share $(VM) -run bin/demo -timeout 10m \
	  | grep -v -e '^\s*$$' -e 'SeaBIOS' -e 'iPXE' -e 'Booting from' -e 'Press Ctrl-B'

## demo/cluster: the lab's one-node cluster, csi-smb installed with helm, a pod whose SMB server is killed and
## started again, as pod.status.volumeHealth and kubectl describe show it
.PHONY: demo/cluster
demo/cluster: deps image bin/smblab
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh hack/demo-cluster.sh

## bench: controller benchmarks against real Samba (BENCHMARKS.md)
bench: deps bin/smblab
	go test -c -tags integration -o $(OUT)/integration.test ./test/integration
	chmod 755 $(OUT) $(OUT)/integration.test
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh ip netns exec csismb-c \
	  setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env \
	  env CSI_SMB_LAB_DIR=$(LAB_DIR) $(OUT)/integration.test -test.run '^$$' -test.bench . -test.benchtime 300x -test.count 10 2>&1 \
	  | grep -Ev '^[IW][0-9]{4} ' > $(OUT)/bench-controller.txt
	$(BENCHSTAT) $(OUT)/bench-controller.txt

## bench/faults: detection times (10 trials per fault), RPC latency on a dead server, and 10-minute false-alarm
## runs on slow and jittery links (BENCH=regexp picks benchmarks, SOAKS='^$' skips the false-alarm runs)
bench/faults: deps bin/smblab
	go test -c -tags integration -o $(OUT)/faults.test ./test/faults
	CSI_SMB_LAB_DIR=$(LAB_DIR) hack/with-lab.sh ip netns exec csismb-c \
	  env CSI_SMB_LAB_DIR=$(LAB_DIR) CSI_SMB_SOAK=10m $(OUT)/faults.test -test.v -test.run '$(SOAKS)' \
	  -test.bench '$(BENCH)' -test.benchtime 1x -test.timeout 60m | tee $(OUT)/bench-faults.txt

## bench/probecost: CPU and memory of probing 1,000 servers at 1 Hz
bench/probecost:
	go test -run '^$$' -bench Prober1000 -benchtime 1x -count 3 ./test/probecost/ | tee $(OUT)/bench-probecost.txt

## bench/vm: in the guest: NodeStageVolume latency, detection vs the kernel, health RPC latency (BENCH=regexp picks)
bench/vm: deps bin/smblab vm-share
	CSI_SMB_LAB_DIR=$(LAB_DIR) VM_TIMEOUT=60m hack/with-lab.sh hack/vm-suite.sh $(LAB_DIR) $(VM) bin/guest.test \
	  -test.run '^$$' -test.bench '$(BENCH)' -test.benchtime 1x -test.count 1 -test.timeout 55m | tee $(OUT)/bench-vm.txt
	$(BENCHSTAT) $(OUT)/bench-vm.txt

## verify: gofmt, go vet with every build tag, go mod tidy, golangci-lint (.golangci.yml), the chart, promtool check rules
verify:
	@test -z "$$(gofmt -l cmd pkg test internal)" || { gofmt -l cmd pkg test internal; echo "run gofmt -w"; exit 1; }
	go vet ./...
	go vet -tags integration ./...
	go vet -tags vmguest ./...
	go vet -tags labkube ./...
	go vet -tags cluster ./...
	go mod tidy -diff
	hack/golangci-lint.sh
	hack/check-deploy.sh
	p=$$(hack/promtool.sh); "$$p" check rules charts/csi-smb/files/alerts.yaml

# --- images (hack/build-image.sh) ---------------------------------------------
## image: driver, pause, busybox and test-provisioner images with buildah, no registry: $(OUT)/images/*.tar,
## listed in images.txt
.PHONY: image
image: bin/csi-smb bin/test-provisioner
	VERSION=$(VERSION) OUT=$(OUT)/images hack/build-image.sh
# --- end images ----------------------------------------------------------------

# --- chart (charts/csi-smb, deploy/, hack/build-helm.sh, hack/check-deploy.sh) ----
## deploy: re-render deploy/csi-smb.yaml from charts/csi-smb (default values, namespace kube-system)
## verify/deploy: helm lint --strict, and deploy/ equals the rendered chart (part of verify)
## test/chart: Go tests over helm template output (test/chart, build tag chart), with helm 4 and helm 3
.PHONY: deploy update/deploy verify/deploy test/chart
deploy update/deploy:
	hack/check-deploy.sh --update

verify/deploy:
	hack/check-deploy.sh

HELM_VERSIONS ?= v4.3.2 v3.21.4
test/chart:
	go vet -tags chart ./test/chart/
	for v in $(HELM_VERSIONS); do \
	  h=$$(HELM_VERSION=$$v hack/build-helm.sh | tail -1); \
	  echo "test/chart: helm $$v"; HELM=$$h go test -tags chart -count=1 ./test/chart/ || exit 1; \
	done

## test/alerts: promtool check rules on the chart's alerts, then their unit tests (test/alerts/alerts_test.yaml);
## promtool from Debian's prometheus package (hack/promtool.sh, cached)
.PHONY: test/alerts
test/alerts:
	p=$$(hack/promtool.sh); "$$p" check rules charts/csi-smb/files/alerts.yaml && "$$p" test rules test/alerts/alerts_test.yaml
# --- end chart -------------------------------------------------------------------

clean:
	rm -rf bin $(OUT)

FORCE:

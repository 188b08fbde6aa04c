#!/usr/bin/env bash
# Installs what the lab and the tests need on a fresh Debian 12 machine (root):
# Samba, cifs-utils, qemu (TCG), a Debian kernel and busybox for the guest,
# etcd for the lab's API server, Go 1.26 if the machine has none (fetched from
# the Go module proxy), and then kube-apiserver (hack/build-kube.sh, cached).
#   install-deps.sh        everything (make test)
#   install-deps.sh demo   what make demo uses: no etcd, no kube-apiserver
set -euo pipefail

PROFILE=${1:-all}
case $PROFILE in all | demo) ;; *) echo "usage: $0 [all|demo]" >&2; exit 2 ;; esac
GO_VERSION=${GO_VERSION:-1.26.8}
export DEBIAN_FRONTEND=noninteractive

pkgs=(samba smbclient cifs-utils qemu-system-x86 linux-image-amd64 busybox-static iproute2 util-linux kmod cpio curl unzip ca-certificates make gcc libc6-dev git)
[[ $PROFILE == demo ]] || pkgs+=(etcd-server)
[[ $PROFILE == demo ]] || pkgs+=(containerd runc containernetworking-plugins)  # the lab cluster's node: smblab cluster up
[[ $PROFILE == demo ]] || pkgs+=(buildah mmdebstrap catatonit skopeo)  # images: make image
need=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "install-deps: apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian samba and etcd-server packages start no daemon here (no systemd); the lab runs its own.

go_ok() {
  command -v go >/dev/null 2>&1 || return 1
  local v
  v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [[ "$(printf '%s\n' "1.26" "$v" | sort -V | head -1)" == "1.26" ]]
}
if ! go_ok && [[ -x /usr/local/go/bin/go ]]; then
  export PATH=/usr/local/go/bin:$PATH
fi
if ! go_ok; then
  echo "install-deps: installing go${GO_VERSION} from the module proxy"
  tmp=$(mktemp -d)
  curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go${GO_VERSION}.linux-amd64.zip"
  unzip -q "$tmp/go.zip" -d "$tmp"
  rm -rf /usr/local/go
  mv "$tmp/golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-amd64" /usr/local/go
  chmod -R a+rX /usr/local/go
  chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* 2>/dev/null || true
  rm -rf "$tmp"
  export PATH=/usr/local/go/bin:$PATH
fi
go version
[[ $PROFILE == demo ]] || "$(dirname "$0")/build-kube.sh"

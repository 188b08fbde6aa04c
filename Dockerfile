# The csi-smb driver image: the static driver binary on Debian 12 with the mount
# helpers it execs (pkg/mount): /sbin/mount.cifs (cifs-utils), /bin/mount and
# /bin/umount (mount), findmnt (util-linux) for debugging on the node.
#
# Build with `make image` (hack/build-image.sh): it passes BASE as a local
# Debian image made with mmdebstrap, so no registry is needed. Elsewhere the
# default BASE is the Debian image of a registry. Build bin/csi-smb first
# (`make build`, CGO_ENABLED=0).
ARG BASE=debian:bookworm-slim
FROM $BASE

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG BASE

LABEL org.opencontainers.image.title="csi-smb" \
      org.opencontainers.image.description="Kubernetes CSI driver for SMB (CIFS) shares" \
      org.opencontainers.image.source="https://github.com/csi-smb/csi-smb" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.created="$CREATED" \
      org.opencontainers.image.base.name="$BASE"

# One layer: install, then drop the apt lists and caches.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cifs-utils mount util-linux \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
 && test -x /sbin/mount.cifs && test -x /bin/mount && test -x /bin/umount

COPY bin/csi-smb /csi-smb

ENTRYPOINT ["/csi-smb"]

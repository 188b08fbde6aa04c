#!/usr/bin/env bash
# Builds the container images with buildah, without any container registry
# (Debian 12, root; `make image`):
#   localhost/debian:<suite>-<YYYYMMDD>  base made with mmdebstrap from this machine's Debian mirror (cached)
#   localhost/csi-smb:<VERSION>          the Dockerfile on that base (apt-get uses the same Debian mirror)
#   localhost/pause:<catatonit version>  FROM scratch: Debian's static catatonit, `/catatonit -P`
#   localhost/busybox:<busybox version>  FROM scratch: Debian's busybox-static and its applet links
#   localhost/csi-smb-test-provisioner:<VERSION>  FROM scratch: bin/test-provisioner, the lab cluster's
#                                        TEST-ONLY stand-in for csi-provisioner (test/cluster/provisioner)
# and exports all but the base as docker archives (what `ctr -n k8s.io images import`
# and `skopeo inspect docker-archive:` read) into _out/images, listed in
# _out/images/images.txt as `name:tag file` lines. bin/csi-smb must be built
# first (`make build`). No image is tagged latest.
#
# Choices:
# - buildah's own storage, apart from /var/lib/containers (so nobody's podman
#   images are touched): graphroot /var/cache/csi-smb/buildah/storage, runroot
#   /run/csi-smb-buildah, in /var/cache/csi-smb/buildah/storage.conf. To look:
#   CONTAINERS_STORAGE_CONF=/var/cache/csi-smb/buildah/storage.conf buildah images
# - storage driver overlay if the kernel mounts overlay there, else vfs; the
#   choice is kept (a store cannot change driver); STORAGE_DRIVER=vfs forces it
#   for a new store.
# - BUILDAH_ISOLATION=chroot: RUN needs no runc, namespaces or network setup.
# - the base tarball is cached in /var/cache/csi-smb/images, keyed by suite,
#   variant, mirror and package options; it is reused for BASE_MAX_AGE_DAYS
#   (7) days and then made anew with the day's date (BASE_REFRESH=1: now).
#   Its RUN apt-get layer is cached by `buildah bud --layers` until then.
# Environment: VERSION, SUITE (bookworm), VARIANT (apt), MIRROR and
# SECURITY_MIRROR (default: what /etc/apt/sources.list* use), OUT (_out/images).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-bookworm}
VARIANT=${VARIANT:-apt}
CACHE=${CSI_SMB_CACHE:-/var/cache/csi-smb}
IMGCACHE=$CACHE/images
STORE=$CACHE/buildah
OUT=${OUT:-_out/images}
BASE_MAX_AGE_DAYS=${BASE_MAX_AGE_DAYS:-7}
BASE_REFRESH=${BASE_REFRESH:-0}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
VERSION=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '_')
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
CREATED=$(git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo 1970-01-01T00:00:00Z)
export TZ=UTC LC_ALL=C BUILDAH_ISOLATION=chroot

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*"; }
t0=$SECONDS
since() { echo "$((SECONDS - t0)) s"; }

[[ $(id -u) == 0 ]] || die "run as root"
for c in buildah mmdebstrap sha256sum flock; do
  command -v "$c" >/dev/null || die "$c missing: hack/install-deps.sh installs it"
done
[[ -x bin/csi-smb ]] || die "bin/csi-smb missing: make build"
[[ -x bin/test-provisioner ]] || die "bin/test-provisioner missing: make image builds it"
CATATONIT=$(command -v catatonit || echo /usr/bin/catatonit)
BUSYBOX=/bin/busybox
[[ -x $CATATONIT ]] || die "catatonit missing (apt-get install catatonit)"
dpkg-query -W busybox-static >/dev/null 2>&1 || die "busybox-static missing (apt-get install busybox-static)"
for b in bin/csi-smb bin/test-provisioner "$CATATONIT" "$BUSYBOX"; do
  # A FROM-scratch image and the Debian base alike want a binary with no interpreter.
  if readelf -l "$b" 2>/dev/null | grep -q 'Requesting program interpreter'; then die "$b is not static"; fi
done

mkdir -p "$IMGCACHE" "$STORE" "$OUT"
exec 9>"$STORE/lock"
flock 9 # one build at a time on this store

# --- storage: overlay if it mounts here, else vfs; kept once chosen ---------
if [[ -s $STORE/driver ]]; then
  DRIVER=$(<"$STORE/driver")
else
  DRIVER=${STORAGE_DRIVER:-}
  if [[ -z $DRIVER ]]; then
    p=$(mktemp -d "$STORE/probe.XXXXXX")
    mkdir "$p/l" "$p/u" "$p/w" "$p/m"
    if mount -t overlay overlay -o "lowerdir=$p/l,upperdir=$p/u,workdir=$p/w" "$p/m" 2>/dev/null; then
      umount "$p/m"
      DRIVER=overlay
    else
      DRIVER=vfs
    fi
    rm -rf "$p"
  fi
  echo "$DRIVER" >"$STORE/driver"
fi
cat >"$STORE/storage.conf.new" <<EOF
# written by hack/build-image.sh
[storage]
driver = "$DRIVER"
graphroot = "$STORE/storage"
runroot = "/run/csi-smb-buildah"
EOF
mv "$STORE/storage.conf.new" "$STORE/storage.conf"
export CONTAINERS_STORAGE_CONF=$STORE/storage.conf
log "buildah $(buildah --version | awk '{print $3}'), storage $DRIVER in $STORE/storage, isolation chroot"

# --- helpers -----------------------------------------------------------------
# label_of IMAGE LABEL: the label's value, or nothing if there is no such image.
label_of() {
  buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}
# image_from_tar TAR TAG CONFIG-ARGS...: a one-layer image of TAR's tree, unless
# TAG already holds exactly that tar (label csi-smb.rootfs.sha256).
image_from_tar() {
  local tar=$1 tag=$2 sum ctr mnt
  shift 2
  sum=$(sha256sum "$tar" | cut -d' ' -f1)
  if [[ $(label_of "$tag" csi-smb.rootfs.sha256) == "$sum" ]]; then
    log "$tag: cached"
    return
  fi
  ctr=$(buildah from --pull=never scratch)
  mnt=$(buildah mount "$ctr")
  tar -xpf "$tar" --numeric-owner --xattrs --xattrs-include='*' -C "$mnt"
  buildah umount "$ctr" >/dev/null
  buildah config --label "csi-smb.rootfs.sha256=$sum" "$@" "$ctr"
  buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
  log "$tag: imported ($(since))"
}
# export_archive TAG FILE: a docker archive of TAG, unless FILE already is one
# of that image ID.
export_archive() {
  local tag=$1 file=$2 id
  id=$(buildah inspect --type image --format '{{.FromImageID}}' "$tag")
  if [[ -s $file && -s $file.id && $(<"$file.id") == "$id" ]]; then
    log "$file: up to date"
    return
  fi
  rm -f "$file" "$file.tmp" "$file.id"
  buildah push --quiet "$tag" "docker-archive:$file.tmp:$tag" >/dev/null
  mv "$file.tmp" "$file"
  echo "$id" >"$file.id"
  log "$file: exported ($(du -h "$file" | cut -f1), $(since))"
}
# deb_tag PACKAGE: the package's Debian version as a tag: no epoch, + and ~ as _.
deb_tag() { dpkg-query -W -f='${Version}' "$1" | sed -e 's/^[0-9]*://' -e 's/[+~]/_/g'; }

# --- (a) the Debian base -----------------------------------------------------
# The mirror this machine uses: URIs of deb822 .sources and deb lines of .list files.
host_uris() {
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk 'tolower($1)=="uris:"{for(i=2;i<=NF;i++)print $i}'
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1=="deb"{for(i=2;i<=NF;i++)if($i!~/^\[/&&$i!~/\]$/){print $i;break}}'
}
pick_uri() { { host_uris || true; } | sed 's:/*$::' | { grep -E "/$1\$" || true; } | head -1; }
MIRROR=${MIRROR:-$(pick_uri debian)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(pick_uri debian-security)}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# Like the slim Debian images: no docs but copyrights, no man pages or locales.
# These dpkg options stay in the image, so the Dockerfile's installs honour them.
MMDEB_OPTS=(
  --variant="$VARIANT" --mode=root --format=tar
  # /bin -> usr/bin etc. made by the hook, with usr-is-merged (else apt picks usrmerge, which pulls 45 MB of perl)
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --aptopt='Acquire::Languages "none"'
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --skip=output/dev # the runtime makes /dev
  # the runtime provides these too; the build host's must not stay in the image
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'
)
MIRRORS=(
  "deb $MIRROR $SUITE main"
  "deb $MIRROR $SUITE-updates main"
  "deb $SECURITY_MIRROR $SUITE-security main"
)
KEY=$(printf '%s\n' "$SUITE" "${MMDEB_OPTS[@]}" "${MIRRORS[@]}" | sha256sum | cut -c1-12)
base_tar=
if [[ $BASE_REFRESH != 1 ]]; then
  base_tar=$(find "$IMGCACHE" -maxdepth 1 -name "debian-$SUITE-$VARIANT-$KEY-*.tar" -mtime "-$BASE_MAX_AGE_DAYS" 2>/dev/null | sort | tail -1)
fi
if [[ -n $base_tar ]]; then
  log "base: cached $base_tar"
else
  day=$(date +%Y%m%d)
  base_tar=$IMGCACHE/debian-$SUITE-$VARIANT-$KEY-$day.tar
  log "base: mmdebstrap $SUITE ($VARIANT) from $MIRROR"
  # SOURCE_DATE_EPOCH: file times and machine-id fixed, as mmdebstrap does for reproducible output.
  SOURCE_DATE_EPOCH=$(date -d "$day" +%s) mmdebstrap --quiet "${MMDEB_OPTS[@]}" "$SUITE" "$base_tar.tmp" "${MIRRORS[@]}"
  mv "$base_tar.tmp" "$base_tar"
  find "$IMGCACHE" -maxdepth 1 -name "debian-$SUITE-$VARIANT-*.tar" ! -path "$base_tar" -delete # superseded
  log "base: $base_tar ($(du -h "$base_tar" | cut -f1), $(since))"
fi
day=${base_tar##*-}
day=${day%.tar}
BASE=localhost/debian:$SUITE-$day
image_from_tar "$base_tar" "$BASE" \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash \
  --label "org.opencontainers.image.title=debian" \
  --label "org.opencontainers.image.version=$SUITE-$day" \
  --label "org.opencontainers.image.description=Debian $SUITE ($VARIANT variant) by mmdebstrap from $MIRROR"

# --- (b) the driver image ----------------------------------------------------
DRIVER_IMG=localhost/csi-smb:$VERSION
log "$DRIVER_IMG: buildah bud on $BASE"
buildah bud --quiet --pull=never --layers --isolation chroot \
  --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" \
  --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED" \
  -f Dockerfile -t "$DRIVER_IMG" . >/dev/null
log "$DRIVER_IMG: built ($(since))"

# A smoke test: the binary runs in the image and the helpers it execs are there.
ctr=$(buildah from --pull=never "$DRIVER_IMG")
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
got=$(buildah run --isolation chroot "$ctr" -- /csi-smb --version)
[[ $got == "csi-smb $VERSION" ]] || die "$DRIVER_IMG: /csi-smb --version says '$got', want 'csi-smb $VERSION'"
# mount.cifs keeps only the capabilities it needs, and fails if they are not there to keep
# (the node plugin runs privileged); chroot isolation gives a small set by default.
cifs=$(buildah run --isolation chroot --cap-add CAP_SYS_ADMIN --cap-add CAP_DAC_READ_SEARCH "$ctr" -- /sbin/mount.cifs -V 2>&1) || true
[[ $cifs == "mount.cifs version"* ]] || die "$DRIVER_IMG: mount.cifs -V says '$cifs'"
buildah run --isolation chroot "$ctr" -- sh -c 'test -x /bin/mount && test -x /bin/umount && command -v findmnt >/dev/null' ||
  die "$DRIVER_IMG: no mount, umount or findmnt"
buildah rm "$ctr" >/dev/null
trap - EXIT
log "$DRIVER_IMG: runs ($got; $cifs; $(since))"

# --- (d) pause and busybox, FROM scratch -------------------------------------
work=$(mktemp -d "$IMGCACHE/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
# tar_tree DIR TAR: a tar of DIR owned by root with fixed times, the same bytes on every run.
tar_tree() {
  tar -C "$1" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu -cf "$2" .
}

PAUSE_V=$(deb_tag catatonit)
PAUSE_IMG=localhost/pause:$PAUSE_V
mkdir -p "$work/pause"
install -m 0755 "$CATATONIT" "$work/pause/catatonit"
tar_tree "$work/pause" "$work/pause.tar"
image_from_tar "$work/pause.tar" "$PAUSE_IMG" \
  --entrypoint '["/catatonit","-P"]' --user 65535:65535 \
  --label "org.opencontainers.image.title=pause" \
  --label "org.opencontainers.image.version=$PAUSE_V" \
  --label "org.opencontainers.image.description=catatonit -P from Debian's catatonit $(dpkg-query -W -f='${Version}' catatonit), a pause container"

BUSYBOX_V=$(deb_tag busybox-static)
BUSYBOX_IMG=localhost/busybox:$BUSYBOX_V
r=$work/busybox
mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/root"
install -m 0755 "$BUSYBOX" "$r/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [[ $a == busybox ]] || ln -s busybox "$r/bin/$a"
done
chmod 1777 "$r/tmp"
chmod 0700 "$r/root"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
tar_tree "$r" "$work/busybox.tar"
image_from_tar "$work/busybox.tar" "$BUSYBOX_IMG" \
  --env PATH=/bin --cmd sh \
  --label "org.opencontainers.image.title=busybox" \
  --label "org.opencontainers.image.version=$BUSYBOX_V" \
  --label "org.opencontainers.image.description=Debian's busybox-static $(dpkg-query -W -f='${Version}' busybox-static), applets linked in /bin"

# The test-only provisioner: a static Go binary, nothing else (its client-go
# reads the ServiceAccount's CA and token; it needs no files of its own).
PROV_IMG=localhost/csi-smb-test-provisioner:$VERSION
mkdir -p "$work/prov"
install -m 0755 bin/test-provisioner "$work/prov/provisioner"
tar_tree "$work/prov" "$work/prov.tar"
image_from_tar "$work/prov.tar" "$PROV_IMG" \
  --entrypoint '["/provisioner"]' --user 65532:65532 \
  --label "org.opencontainers.image.title=csi-smb-test-provisioner" \
  --label "org.opencontainers.image.version=$VERSION" \
  --label "org.opencontainers.image.revision=$REVISION" \
  --label "org.opencontainers.image.description=TEST ONLY: the lab cluster's stand-in for csi-provisioner (sig-storage-lib-external-provisioner), not for production"
rm -rf "$work"
trap - EXIT

# --- (c) docker archives -----------------------------------------------------
export_archive "$DRIVER_IMG" "$OUT/csi-smb.tar"
export_archive "$PAUSE_IMG" "$OUT/pause.tar"
export_archive "$BUSYBOX_IMG" "$OUT/busybox.tar"
export_archive "$PROV_IMG" "$OUT/test-provisioner.tar"
{ # file names relative to images.txt, so the directory can move
  echo "$DRIVER_IMG csi-smb.tar"
  echo "$PAUSE_IMG pause.tar"
  echo "$BUSYBOX_IMG busybox.tar"
  echo "$PROV_IMG test-provisioner.tar"
} >"$OUT/images.txt"
if command -v skopeo >/dev/null; then
  for f in csi-smb pause busybox test-provisioner; do
    skopeo inspect --format '{{.Digest}}' "docker-archive:$OUT/$f.tar" >/dev/null || die "skopeo cannot read $OUT/$f.tar"
  done
fi
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E "^($DRIVER_IMG|$PAUSE_IMG|$BUSYBOX_IMG|$PROV_IMG|$BASE) " | sed 's/^/build-image:   /'
log "done in $(since): $OUT/images.txt"

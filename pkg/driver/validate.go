package driver

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// Secret keys of the provisioner and node-stage secrets.
const (
	SecretUsername = "username"
	SecretPassword = "password"
	SecretDomain   = "domain"
)

// maxNameLen is the CSI limit on a CreateVolume name.
const maxNameLen = 128

func required(field, value string) error {
	if value == "" {
		return fmt.Errorf("%w: %s", errRequired, field)
	}
	return nil
}

// validateCapabilities accepts file-system volumes with any known access
// mode (SMB is shared storage, so RWX too) and rejects block volumes.
func validateCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("%w: volume_capabilities", errRequired)
	}
	for _, c := range caps {
		if err := validateCapability(c); err != nil {
			return err
		}
	}
	return nil
}

func validateCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("%w: volume_capability", errRequired)
	}
	if c.GetBlock() != nil {
		return fmt.Errorf("%w: block volumes; SMB volumes are file systems (volumeMode: Filesystem)", errUnsupported)
	}
	if c.GetMount() == nil {
		return fmt.Errorf("%w: volume_capability.access_type must be mount", errRequired)
	}
	if fs := c.GetMount().GetFsType(); fs != "" && fs != "cifs" && fs != "smb3" {
		return fmt.Errorf("%w: fs_type %q; this driver mounts cifs", errUnsupported, fs)
	}
	mode := c.GetAccessMode().GetMode()
	if mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return fmt.Errorf("%w: volume_capability.access_mode", errRequired)
	}
	if _, ok := csi.VolumeCapability_AccessMode_Mode_name[int32(mode)]; !ok {
		return fmt.Errorf("%w: access mode %d", errUnsupported, mode)
	}
	return nil
}

// readOnlyMode reports whether the access mode only allows readers.
func readOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

// credentials reads username, password and domain from a CSI secret; any
// other key is refused by name (a typo must not silently mean "anonymous").
// Error messages name keys, never values.
func credentials(secrets map[string]string) (auth.Credentials, error) {
	var unknown []string
	for k := range secrets {
		if k != SecretUsername && k != SecretPassword && k != SecretDomain {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return auth.Credentials{}, fmt.Errorf("%w: secret keys %s; allowed are username, password, domain",
			errInvalid, strings.Join(unknown, ", "))
	}
	c := auth.Credentials{Username: secrets[SecretUsername], Password: secrets[SecretPassword], Domain: secrets[SecretDomain]}
	if c.Username == "" && (c.Password != "" || c.Domain != "") {
		return auth.Credentials{}, fmt.Errorf("%w: secret has a password or domain but no username", errRequired)
	}
	return c, nil
}

// validatePath requires an absolute, clean-able path.
func validatePath(field, p string) error {
	if err := required(field, p); err != nil {
		return err
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%w: %s %q must be absolute", errInvalid, field, p)
	}
	return nil
}

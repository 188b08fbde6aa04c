// Package auth holds the one credentials type of the driver: what
// authenticates an SMB session or a cifs mount. Every way of printing it
// (fmt verbs, klog, JSON) shows the user and the domain, never the
// password.
package auth

// Credentials authenticate to an SMB server. An empty Username is an
// anonymous (or guest) session.
type Credentials struct {
	Username string
	Password string
	Domain   string
}

// Anonymous reports whether c has no user.
func (c Credentials) Anonymous() bool { return c.Username == "" }

// String is DOMAIN\user, user or "anonymous"; never the password.
func (c Credentials) String() string {
	if c.Username == "" {
		return "anonymous"
	}
	if c.Domain != "" {
		return c.Domain + `\` + c.Username
	}
	return c.Username
}

// GoString keeps %#v from printing the password.
func (c Credentials) GoString() string { return "auth.Credentials{" + c.String() + "}" }

// MarshalLog keeps structured loggers (logr, klog's JSON format) from
// printing the password.
func (c Credentials) MarshalLog() any { return c.String() }

// MarshalText keeps encoders (JSON, YAML) from writing the password.
func (c Credentials) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

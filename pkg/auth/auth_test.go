package auth

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestNeverPrintsThePassword(t *testing.T) {
	const pw = "Pw-Leak-Check-9q"
	c := Credentials{Username: "alice", Password: pw, Domain: "CORP"}
	j, err := json.Marshal(struct{ C Credentials }{c})
	if err != nil {
		t.Fatal(err)
	}
	outs := map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"%s": fmt.Sprintf("%s", c), "%q": fmt.Sprintf("%q", c), "pointer %+v": fmt.Sprintf("%+v", &c), //nolint:staticcheck // the %s verb itself is under test
		"in a struct %+v": fmt.Sprintf("%+v", struct{ C Credentials }{c}), "json": string(j),
		"MarshalLog": fmt.Sprint(c.MarshalLog()),
	}
	for name, out := range outs {
		if strings.Contains(out, pw) {
			t.Errorf("%s prints the password: %s", name, out)
		}
		if !strings.Contains(out, `alice`) {
			t.Errorf("%s does not name the user: %s", name, out)
		}
	}
	if got := (Credentials{}).String(); got != "anonymous" || !(Credentials{}).Anonymous() {
		t.Errorf("anonymous credentials print as %q", got)
	}
	if got := (Credentials{Username: "bob"}).String(); got != "bob" {
		t.Errorf("String = %q", got)
	}
}

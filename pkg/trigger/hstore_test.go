package trigger

import (
	"strings"
	"testing"
)

func TestParseHstore(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // name=value, value "<nil>" for NULL
		err  string
	}{
		{in: ``},
		{in: `"a"=>"1"`, want: []string{"a=1"}},
		{in: `"a"=>"1", "b"=>NULL, "c"=>""`, want: []string{"a=1", "b=<nil>", "c="}},
		{in: `"q\"uote"=>"back\\slash, \"x\"=>y"`, want: []string{`q"uote=back\slash, "x"=>y`}},
		{in: `"NULL"=>"NULL"`, want: []string{"NULL=NULL"}},
		{in: `"é"=>"{1,2}"`, want: []string{"é={1,2}"}},
		{in: `"a"=>`, err: "want '\"'"},
		{in: `"a"=>"1" "b"=>"2"`, err: "want \", \""},
		{in: `"a"`, err: "want \"=>\""},
		{in: `"a"=>"1\`, err: "escape"},
		{in: `"a"=>"1`, err: "quoted string"},
	} {
		got, err := parseHstore(tc.in, nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseHstore(%q) error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseHstore(%q): %v", tc.in, err)
			continue
		}
		var s []string
		for _, p := range got {
			v := "<nil>"
			if p.val.Kind == ValueText {
				v = string(p.val.Text)
			}
			s = append(s, p.name+"="+v)
		}
		if strings.Join(s, "|") != strings.Join(tc.want, "|") {
			t.Errorf("parseHstore(%q) = %q, want %q", tc.in, s, tc.want)
		}
	}
}

// FuzzParseHstore checks that what hstore_out writes (quoting as in
// contrib/hstore) reads back as the same pairs, whatever the bytes.
func FuzzParseHstore(f *testing.F) {
	f.Add("id", "42", false, "big", "x\"y\\z", true)
	f.Add("", "", false, "NULL", "NULL", false)
	f.Fuzz(func(t *testing.T, k1, v1 string, null1 bool, k2, v2 string, null2 bool) {
		quote := func(s string) string {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
		}
		item := func(k, v string, null bool) string {
			if null {
				return quote(k) + "=>NULL"
			}
			return quote(k) + "=>" + quote(v)
		}
		got, err := parseHstore(item(k1, v1, null1)+", "+item(k2, v2, null2), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].name != k1 || got[1].name != k2 ||
			(got[0].val.Kind == ValueNull) != null1 || (got[1].val.Kind == ValueNull) != null2 ||
			!null1 && string(got[0].val.Text) != v1 || !null2 && string(got[1].val.Text) != v2 {
			t.Fatalf("read back %+v", got)
		}
	})
}

package main

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// TestRedisVerifyReportHeader: redis verify's markdown and text reports
// carry the common header (tool version, each side without credentials,
// start, end, duration, what was compared, the fence state) and no
// fragment of a password.
func TestRedisVerifyReportHeader(t *testing.T) {
	srcPw, dstPw := "Hdr@Src:Pw/71", "Hdr-Dst-Pw-72"
	src := startRedis(t, testenv.RedisOptions{Password: srcPw})
	dst := startRedis(t, testenv.RedisOptions{Password: dstPw})
	ctx := context.Background()
	for _, r := range []*testenv.Redis{src, dst} {
		c := r.Client(0)
		for i := 0; i < 50; i++ {
			c.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
		}
		c.Close()
	}
	srcURL := "redis://" + url.UserPassword("", srcPw).String() + "@" + src.Addr() + "/0"
	dstURL := "redis://" + url.UserPassword("", dstPw).String() + "@" + dst.Addr() + "/0"
	stamp := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	wants := map[string][]string{
		"markdown": {`(?m)^## Redis verification: IDENTICAL$`, `\| Tool \| replicator (dev|v\S+)[ ,|]`,
			`\| Source \| ` + "`" + regexp.QuoteMeta(src.Addr()) + "/0`" + ` \|`, `\| Target \| ` + "`" + regexp.QuoteMeta(dst.Addr()) + "/0`" + ` \|`,
			`\| Started \| ` + stamp + ` \|`, `\| Ended \| ` + stamp + ` \|`, `\| Duration \| \S+ \|`,
			`\| Compared \| every key of 1 database\(s\) \(50 keys checked`, `\| Source fenced \| unknown \(redis verify does not read the Postgres fence`},
		"text": {`(?m)^Redis verification: IDENTICAL$`, `(?m)^  tool: +replicator (dev|v\S+)(,|$)`,
			`(?m)^  source: +` + regexp.QuoteMeta(src.Addr()) + `/0$`, `(?m)^  target: +` + regexp.QuoteMeta(dst.Addr()) + `/0$`,
			`(?m)^  started: +` + stamp + `$`, `(?m)^  ended: +` + stamp + `$`, `(?m)^  compared: +every key of 1 database`,
			`(?m)^  source fenced: unknown`, `db0 +source +50 keys +target +50 keys +ok`},
	}
	for format, res := range wants {
		r := runCLI(t, time.Minute, "redis", "verify", "--source", srcURL, "--target", dstURL, "--format", format, "--log-format", "json")
		if r.code != exitOK {
			t.Fatalf("redis verify --format %s: exit %d\n%s", format, r.code, r.all())
		}
		for _, re := range res {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("%s report lacks %s:\n%s", format, re, r.stdout)
			}
		}
		for _, f := range append(fragments3(srcPw), fragments3(dstPw)...) {
			if strings.Contains(r.all(), f) {
				t.Errorf("%s report shows %q of a password:\n%s", format, f, r.all())
			}
		}
	}
}

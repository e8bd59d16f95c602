package cutover

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{SourceURL: "postgres://a@h/db", TargetURL: "postgres://b@h/db"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.MaxLag != 5*time.Second || ok.FenceMethod != FenceRevoke || ok.Verify != VerifyFull || ok.Timeout != 10*time.Minute {
		t.Errorf("defaults: %+v", ok)
	}
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.SourceURL = "" }, "--source"},
		{func(c *Config) { c.TargetURL = "" }, "--target"},
		{func(c *Config) { c.SequenceMargin = -1 }, "--sequence-margin"},
		{func(c *Config) { c.FenceMethod = "pause" }, "--fence-method"},
		{func(c *Config) { c.Verify = "quick" }, "--verify"},
		{func(c *Config) { c.MaxLag = -time.Second }, "--max-lag"},
		{func(c *Config) { c.AppRoles = []string{"app", " "} }, "--app-roles"},
	} {
		c := Config{SourceURL: "postgres://a@h/db", TargetURL: "postgres://b@h/db"}
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
}

// The switch step holds valid Route 53 change batches, placeholders where
// no names were given, and never a password.
func TestSwitchStep(t *testing.T) {
	var b strings.Builder
	writeSwitch(&b, &Config{SourceURL: "postgres://app:Heroku-Pw-1@ec2-1.compute.amazonaws.com:5432/d1?sslmode=require",
		TargetURL:   "postgres://app:Rds-Pw-2@db.abc.eu-west-1.rds.amazonaws.com:5432/app?sslmode=verify-full",
		RedisTarget: "rediss://:Redis-Pw-3@master.cache.amazonaws.com:6379"})
	out := b.String()
	for _, pw := range []string{"Heroku-Pw-1", "Rds-Pw-2", "Redis-Pw-3"} {
		if strings.Contains(out, pw) {
			t.Errorf("switch step prints a password:\n%s", out)
		}
	}
	for _, want := range []string{"<HOSTED_ZONE_ID>", "DATABASE_URL=postgres://app:<PASSWORD>@db.abc.eu-west-1.rds.amazonaws.com:5432/app?sslmode=verify-full",
		"REDIS_URL=rediss://:<PASSWORD>@master.cache.amazonaws.com:6379", "replicator cutover --unfence --source 'postgres://app:<PASSWORD>@ec2-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("switch step lacks %q:\n%s", want, out)
		}
	}
	batches := 0
	for _, line := range strings.Split(out, "\n") {
		_, js, ok := strings.Cut(line, "--change-batch '")
		if !ok {
			continue
		}
		var batch struct {
			Changes []struct {
				ResourceRecordSet struct {
					Name            string
					Weight          int
					ResourceRecords []struct{ Value string }
				}
			}
		}
		if err := json.Unmarshal([]byte(strings.TrimSuffix(js, "'")), &batch); err != nil {
			t.Fatalf("change batch is not JSON: %v\n%s", err, js)
		}
		if len(batch.Changes) != 2 || batch.Changes[0].ResourceRecordSet.ResourceRecords[0].Value != "db.abc.eu-west-1.rds.amazonaws.com" ||
			batch.Changes[0].ResourceRecordSet.Weight+batch.Changes[1].ResourceRecordSet.Weight != 100 {
			t.Errorf("change batch: %+v", batch)
		}
		batches++
	}
	if batches != 2 {
		t.Errorf("want two change batches (10 %% and 100 %%), got %d:\n%s", batches, out)
	}
}

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
	if ok.MaxLag != 5*time.Second || ok.FenceMethod != FenceAuto || ok.Verify != VerifyFull || ok.Timeout != 10*time.Minute {
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

// The switch step switches the database at once (SSM parameters and a
// redeploy, or one plain CNAME), gives weighted records only to the app's
// own endpoint, holds valid Route 53 change batches, placeholders where no
// names were given, and never a password.
func TestSwitchStep(t *testing.T) {
	cfg := &Config{SourceURL: "postgres://app:Heroku-Pw-1@ec2-1.compute.amazonaws.com:5432/d1?sslmode=require",
		TargetURL:   "postgres://app:Rds-Pw-2@db.abc.eu-west-1.rds.amazonaws.com:5432/app?sslmode=verify-full",
		RedisTarget: "rediss://:Redis-Pw-3@master.cache.amazonaws.com:6379"}
	var b strings.Builder
	writeSwitch(&b, cfg)
	out := b.String()
	for _, pw := range []string{"Heroku-Pw-1", "Rds-Pw-2", "Redis-Pw-3"} {
		if strings.Contains(out, pw) {
			t.Errorf("switch step prints a password:\n%s", out)
		}
	}
	for _, want := range []string{"/DATABASE_URL' --type SecureString --overwrite --value 'postgres://app:<PASSWORD>@db.abc.eu-west-1.rds.amazonaws.com:5432/app?sslmode=verify-full'",
		"/REDIS_URL' --type SecureString --overwrite --value 'rediss://:<PASSWORD>@master.cache.amazonaws.com:6379'",
		"aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment", "systemctl restart",
		"replicator cutover --unfence --source 'postgres://app:<PASSWORD>@ec2-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("switch step lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Weight") {
		t.Errorf("without --app-record the switch step prints weighted records:\n%s", out)
	}

	cfg.RecordName, cfg.AppRecord = "db.internal.example.com", "api.mydomain.com"
	b.Reset()
	writeSwitch(&b, cfg)
	out = b.String()
	type set struct {
		Name            string
		Type            string
		Weight          *int
		ResourceRecords []struct{ Value string }
	}
	var weighted, plain int
	for _, line := range strings.Split(out, "\n") {
		_, js, ok := strings.Cut(line, "--change-batch '")
		if !ok {
			continue
		}
		var batch struct {
			Changes []struct{ ResourceRecordSet set }
		}
		if err := json.Unmarshal([]byte(strings.TrimSuffix(js, "'")), &batch); err != nil {
			t.Fatalf("change batch is not JSON: %v\n%s", err, js)
		}
		switch first := batch.Changes[0].ResourceRecordSet; {
		case first.Weight == nil:
			// The database name: one record, all at once, to the target.
			if len(batch.Changes) != 1 || first.Name != "db.internal.example.com" || first.ResourceRecords[0].Value != "db.abc.eu-west-1.rds.amazonaws.com" {
				t.Errorf("database CNAME batch: %+v", batch)
			}
			plain++
		default:
			if len(batch.Changes) != 2 || first.Name != "api.mydomain.com" ||
				*first.Weight+*batch.Changes[1].ResourceRecordSet.Weight != 100 {
				t.Errorf("weighted batch: %+v", batch)
			}
			weighted++
		}
	}
	if weighted != 2 || plain != 1 {
		t.Errorf("want one plain database CNAME and two weighted app batches (10 %% and 100 %%), got %d and %d:\n%s", plain, weighted, out)
	}
}

package cutover

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"

	"replicator/pkg/pgutil"
)

// placeholderURL is conn with its password replaced by a placeholder for
// the person to fill in: never print a password.
func placeholderURL(conn, placeholder string) string {
	u, err := url.Parse(conn)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return pgutil.RedactText(conn)
	}
	red := pgutil.Redact(conn)
	return strings.Replace(red, ":xxxxx@", ":"+placeholder+"@", 1)
}

func hostOf(conn string) string {
	if u, err := url.Parse(conn); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return "<host>"
}

// rrset is one Route 53 record set of a change batch.
type rrset struct {
	Name            string `json:"Name"`
	Type            string `json:"Type"`
	SetIdentifier   string `json:"SetIdentifier,omitempty"`
	Weight          *int   `json:"Weight,omitempty"`
	TTL             int    `json:"TTL"`
	ResourceRecords []rr   `json:"ResourceRecords"`
}

type rr struct {
	Value string `json:"Value"`
}

func changeBatch(comment string, sets ...rrset) string {
	type change struct {
		Action            string `json:"Action"`
		ResourceRecordSet rrset  `json:"ResourceRecordSet"`
	}
	batch := struct {
		Comment string   `json:"Comment"`
		Changes []change `json:"Changes"`
	}{Comment: comment}
	for _, s := range sets {
		batch.Changes = append(batch.Changes, change{"UPSERT", s})
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // placeholders keep their <…>
	enc.Encode(batch)        // plain strings and ints: cannot fail
	return strings.TrimSpace(b.String())
}

// route53Batch is the change batch of two weighted CNAME records for the
// app's own endpoint name: the AWS app at weight aws, the Heroku app at
// 100-aws. Only the app's endpoint is shifted gradually: both halves of
// the app must then write to the one database that takes writes.
func route53Batch(name, awsHost, oldHost string, aws int) string {
	old := 100 - aws
	return changeBatch(fmt.Sprintf("replicator cutover: %d %% of the app traffic to AWS", aws),
		rrset{name, "CNAME", "aws", &aws, 60, []rr{{awsHost}}},
		rrset{name, "CNAME", "heroku", &old, 60, []rr{{oldHost}}})
}

// cnameBatch points one plain (not weighted) CNAME at host.
func cnameBatch(name, host string) string {
	return changeBatch("replicator cutover: the database name to AWS, all at once", rrset{Name: name, Type: "CNAME", TTL: 60, ResourceRecords: []rr{{host}}})
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeSwitch prints the switch step: nothing in it is run. The database
// endpoint switches at once (after the fence the source refuses writes, so
// a share of connections left on it would fail): DATABASE_URL and
// REDIS_URL in SSM plus a redeploy that reads them, or one plain CNAME
// when the app connects through a name of its own. Weighted records are
// for the app's own endpoint only, as in the playbook.
func writeSwitch(w io.Writer, cfg *Config) {
	zone := cfg.Route53Zone
	if zone == "" {
		zone = "<HOSTED_ZONE_ID>"
	}
	awsHost := hostOf(cfg.TargetURL)
	var b strings.Builder
	b.WriteString("  Switch the application (nothing below was run; run it yourself):\n")
	b.WriteString("  1. Point the app at AWS, all at once (the source refuses writes now):\n")
	fmt.Fprintf(&b, "     aws ssm put-parameter --name '<PARAMETER_PREFIX>/DATABASE_URL' --type SecureString --overwrite --value %s\n",
		shellQuote(placeholderURL(cfg.TargetURL, "<PASSWORD>")))
	if cfg.RedisTarget != "" {
		fmt.Fprintf(&b, "     aws ssm put-parameter --name '<PARAMETER_PREFIX>/REDIS_URL' --type SecureString --overwrite --value %s\n",
			shellQuote(placeholderURL(cfg.RedisTarget, "<PASSWORD>")))
	} else {
		b.WriteString("     aws ssm put-parameter --name '<PARAMETER_PREFIX>/REDIS_URL' --type SecureString --overwrite --value '<the ElastiCache URL: pass --redis-target to fill it in>'\n")
	}
	b.WriteString("  2. Make the app read the new values: aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment\n")
	b.WriteString("     (on an EC2 host: sudo systemctl restart <APP_UNIT>)\n")
	if cfg.RecordName != "" {
		fmt.Fprintf(&b, "     Or, as the app connects through %s: one plain CNAME to AWS (TTL 60):\n     aws route53 change-resource-record-sets --hosted-zone-id %s --change-batch %s\n",
			cfg.RecordName, zone, shellQuote(cnameBatch(cfg.RecordName, awsHost)))
	} else {
		fmt.Fprintf(&b, "     Or, if the app connects through a name of its own (--record-name): one plain CNAME to %s, never weighted\n", awsHost)
	}
	if cfg.AppRecord != "" {
		awsApp, herokuApp := "<AWS_APP_LOAD_BALANCER>", "<HEROKU_APP_DNS_TARGET>"
		fmt.Fprintf(&b, "  3. Shift the app's own endpoint %s: 10 %% of its traffic to the app on AWS:\n     aws route53 change-resource-record-sets --hosted-zone-id %s --change-batch %s\n",
			cfg.AppRecord, zone, shellQuote(route53Batch(cfg.AppRecord, awsApp, herokuApp, 10)))
		fmt.Fprintf(&b, "     When errors and latency look right, 100 %%:\n     aws route53 change-resource-record-sets --hosted-zone-id %s --change-batch %s\n",
			zone, shellQuote(route53Batch(cfg.AppRecord, awsApp, herokuApp, 100)))
	}
	fmt.Fprintf(&b, "  Fallback, once the app wrote to AWS (with `replicator reverse` running: fences the target, carries the app's writes on AWS back, unfences the source):\n     replicator cutover --rollback --source %s --target %s\n",
		shellQuote(placeholderURL(cfg.SourceURL, "<PASSWORD>")), shellQuote(placeholderURL(cfg.TargetURL, "<PASSWORD>")))
	fmt.Fprintf(&b, "  Rollback (gives the source its write access back, exactly as before the fence):\n     replicator cutover --unfence --source %s --target %s\n",
		shellQuote(placeholderURL(cfg.SourceURL, "<PASSWORD>")), shellQuote(placeholderURL(cfg.TargetURL, "<PASSWORD>")))
	io.WriteString(w, b.String())
}

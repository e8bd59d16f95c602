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

// route53Batch is the change batch of two weighted CNAME records for
// name: the AWS endpoint at weight aws, the old one at 100-aws.
func route53Batch(name, awsHost, oldHost string, aws int) string {
	type rr struct {
		Value string `json:"Value"`
	}
	type rrset struct {
		Name            string `json:"Name"`
		Type            string `json:"Type"`
		SetIdentifier   string `json:"SetIdentifier"`
		Weight          int    `json:"Weight"`
		TTL             int    `json:"TTL"`
		ResourceRecords []rr   `json:"ResourceRecords"`
	}
	type change struct {
		Action            string `json:"Action"`
		ResourceRecordSet rrset  `json:"ResourceRecordSet"`
	}
	batch := struct {
		Comment string   `json:"Comment"`
		Changes []change `json:"Changes"`
	}{
		Comment: fmt.Sprintf("replicator cutover: %d %% to AWS", aws),
		Changes: []change{
			{"UPSERT", rrset{name, "CNAME", "aws", aws, 60, []rr{{awsHost}}}},
			{"UPSERT", rrset{name, "CNAME", "heroku", 100 - aws, 60, []rr{{oldHost}}}},
		},
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // placeholders keep their <…>
	enc.Encode(batch)        // plain strings and ints: cannot fail
	return strings.TrimSpace(b.String())
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeSwitch prints the switch step: nothing in it is run.
func writeSwitch(w io.Writer, cfg *Config) {
	zone := cfg.Route53Zone
	if zone == "" {
		zone = "<HOSTED_ZONE_ID>"
	}
	name := cfg.RecordName
	if name == "" {
		name = "<db.example.com>"
	}
	awsHost, oldHost := hostOf(cfg.TargetURL), hostOf(cfg.SourceURL)
	var b strings.Builder
	b.WriteString("  Switch the application (nothing below was run; run it yourself):\n")
	fmt.Fprintf(&b, "  1. Send 10 %% of new connections to AWS:\n     aws route53 change-resource-record-sets --hosted-zone-id %s --change-batch %s\n",
		zone, shellQuote(route53Batch(name, awsHost, oldHost, 10)))
	fmt.Fprintf(&b, "  2. When errors and latency look right, send 100 %%:\n     aws route53 change-resource-record-sets --hosted-zone-id %s --change-batch %s\n",
		zone, shellQuote(route53Batch(name, awsHost, oldHost, 100)))
	fmt.Fprintf(&b, "  3. Point the app at the new endpoints (e.g. aws ssm put-parameter --type SecureString --overwrite):\n")
	fmt.Fprintf(&b, "     DATABASE_URL=%s\n", placeholderURL(cfg.TargetURL, "<PASSWORD>"))
	if cfg.RedisTarget != "" {
		fmt.Fprintf(&b, "     REDIS_URL=%s\n", placeholderURL(cfg.RedisTarget, "<PASSWORD>"))
	} else {
		b.WriteString("     REDIS_URL=<the ElastiCache URL: pass --redis-target to fill it in>\n")
	}
	fmt.Fprintf(&b, "  Rollback (gives the source its write access back, exactly as before the fence):\n     replicator cutover --unfence --source %s --target %s\n",
		shellQuote(placeholderURL(cfg.SourceURL, "<PASSWORD>")), shellQuote(placeholderURL(cfg.TargetURL, "<PASSWORD>")))
	io.WriteString(w, b.String())
}

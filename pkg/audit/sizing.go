package audit

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strings"
)

// Sizing is a starting point for the AWS side, with the reasoning behind
// each number so that it can be argued with.
type Sizing struct {
	RDSInstanceClass string   `json:"rds_instance_class,omitempty"`
	RDSStorageGiB    int      `json:"rds_storage_gib,omitempty"`
	RDSIOPS          int      `json:"rds_iops,omitempty"`
	CacheNodeType    string   `json:"elasticache_node_type,omitempty"`
	CacheClusterMode bool     `json:"elasticache_cluster_mode"`
	Reasons          []string `json:"reasons"`
}

const gib = float64(1 << 30)

// rdsClasses are Graviton general-purpose classes and their memory (GiB).
var rdsClasses = []struct {
	name string
	mem  float64
}{{"db.m6g.large", 8}, {"db.m6g.xlarge", 16}, {"db.m6g.2xlarge", 32}, {"db.m6g.4xlarge", 64},
	{"db.m6g.8xlarge", 128}, {"db.m6g.12xlarge", 192}, {"db.m6g.16xlarge", 256}}

// cacheNodes are Graviton ElastiCache node types and their memory (GiB).
var cacheNodes = []struct {
	name string
	mem  float64
}{{"cache.t4g.small", 1.37}, {"cache.t4g.medium", 3.09}, {"cache.m6g.large", 6.38}, {"cache.m6g.xlarge", 12.93},
	{"cache.m6g.2xlarge", 26.04}, {"cache.m6g.4xlarge", 52.26}, {"cache.m6g.8xlarge", 103.68}, {"cache.m6g.12xlarge", 157.12},
	{"cache.m6g.16xlarge", 209.55}}

// Size suggests RDS and ElastiCache sizes from the inventories (either
// may be nil).
func Size(p *PostgresReport, r *RedisReport) Sizing {
	var s Sizing
	if p != nil {
		db := float64(p.SizeBytes) / gib
		// Storage: the data, its growth during the window, and WAL and
		// bloat while the copy and the stream write: half again, at
		// least RDS's 20 GiB minimum, in steps of 10 GiB.
		s.RDSStorageGiB = max(20, int(math.Ceil(db*1.5/10))*10)
		s.Reasons = append(s.Reasons, fmt.Sprintf("RDS storage %d GiB gp3: the database is %.1f GiB on Heroku; half again for growth, WAL and bloat during the copy", s.RDSStorageGiB, db))
		// gp3 on RDS: 3,000 IOPS baseline below 400 GiB, 12,000 from
		// 400 GiB (striped volumes).
		s.RDSIOPS = 3000
		if s.RDSStorageGiB >= 400 {
			s.RDSIOPS = 12000
		}
		s.Reasons = append(s.Reasons, fmt.Sprintf("RDS IOPS %d: gp3's baseline at that storage size; raise it if the copy shows the target write-bound (bench/snapshot)", s.RDSIOPS))
		// Memory: a quarter of the database as cache is where a typical
		// OLTP working set fits; connections need room too.
		want := max(db/4, float64(p.Connections.Total)*0.01)
		s.RDSInstanceClass = rdsClasses[len(rdsClasses)-1].name
		for _, c := range rdsClasses {
			if c.mem >= want {
				s.RDSInstanceClass = c.name
				break
			}
		}
		s.Reasons = append(s.Reasons, fmt.Sprintf("RDS class %s: memory for a quarter of the database (%.1f GiB) as cache, %d connections now open of max_connections %d; compare with the Heroku plan's RAM before choosing smaller",
			s.RDSInstanceClass, db/4, p.Connections.Total, p.Connections.Max))
	}
	if r != nil {
		used := float64(r.UsedMemory) / gib
		// ElastiCache reserves 25 % of a node for the fork of a backup
		// and replication buffers by default: the data must fit in the
		// other 75 %, with a third again for growth.
		want := used / 0.75 * 1.33
		s.CacheNodeType = cacheNodes[len(cacheNodes)-1].name
		for _, n := range cacheNodes {
			if n.mem >= want {
				s.CacheNodeType = n.name
				break
			}
		}
		s.Reasons = append(s.Reasons, fmt.Sprintf("ElastiCache %s: %.2f GiB used on Heroku, kept under the 75 %% left after the default reserved memory, with a third for growth", s.CacheNodeType, used))
		multiDB := false
		for _, d := range r.Keyspace {
			if d.DB != 0 && d.Keys > 0 {
				multiDB = true
			}
		}
		switch {
		case multiDB:
			s.Reasons = append(s.Reasons, "ElastiCache cluster mode disabled: keys live in databases other than 0, and cluster mode has only db 0")
		case want > 100:
			s.CacheClusterMode = true
			s.Reasons = append(s.Reasons, "ElastiCache cluster mode enabled: the data outgrows a comfortable single node; the app's client must be cluster-aware and multi-key commands must share a hash slot")
		default:
			s.Reasons = append(s.Reasons, "ElastiCache cluster mode disabled: the data fits one node and the app's client needs no change")
		}
	}
	return s
}

// TFVars renders a terraform.tfvars for deploy/terraform (the replicator
// sidecar) filled in from the audit. RDS and ElastiCache are not created
// by that module: their sizing goes in as comments for the module that
// does. Placeholders are marked CHANGE-ME.
func TFVars(rep *Report, sz Sizing, app string) string {
	var b strings.Builder
	b.WriteString("# terraform.tfvars for deploy/terraform, written by `replicator audit`.\n# Values marked CHANGE-ME are your account's; the rest follows from the audit.\n")
	if sz.RDSInstanceClass != "" {
		fmt.Fprintf(&b, "# RDS target (created outside this module): instance_class = %q, allocated_storage = %d, storage_type = \"gp3\", iops = %d\n",
			sz.RDSInstanceClass, sz.RDSStorageGiB, sz.RDSIOPS)
	}
	if sz.CacheNodeType != "" {
		fmt.Fprintf(&b, "# ElastiCache target (created outside this module): node_type = %q, cluster_mode = %t\n", sz.CacheNodeType, sz.CacheClusterMode)
	}
	name := "replicator"
	if app != "" {
		name = "replicator-" + app
	}
	fmt.Fprintf(&b, "name                  = %q\n", name)
	b.WriteString("vpc_id                = \"CHANGE-ME\"\nsubnet_id             = \"CHANGE-ME\"\nrds_security_group_id = \"CHANGE-ME\"\n")
	b.WriteString("binary_sha256         = \"CHANGE-ME\" # sha256sum bin/replicator\nbinary_url            = \"CHANGE-ME\"\n")
	if rep.Redis != nil {
		b.WriteString("elasticache_security_group_id = \"CHANGE-ME\" # Redis found: runs replicator-redis.service\n")
	}
	jobs, instance := 4, "m6i.large"
	if p := rep.Postgres; p != nil && p.SizeBytes > 200<<30 {
		jobs, instance = 8, "m6i.xlarge" // 2 vCPUs per 4 jobs (variables.tf)
	}
	fmt.Fprintf(&b, "instance_type         = %q\n", instance)
	prefix := "/replicator/"
	if app != "" {
		prefix = "/" + app + "/replicator/"
	}
	fmt.Fprintf(&b, "ssm_prefix            = %q\n", prefix)
	capture := "auto"
	if p := rep.Postgres; p != nil {
		capture = p.Capture.Mode
	}
	fmt.Fprintf(&b, "replicator_config = {\n  jobs    = \"%d\"\n  capture = %q\n}\n", jobs, capture)
	return b.String()
}

// Process is one Procfile process type and its AWS analog.
type Process struct {
	Type    string `json:"type"`
	Command string `json:"command"`
	AWS     string `json:"aws"`
}

// ParseProcfile reads a Procfile ("type: command" lines) and maps each
// process type to its AWS analog, as the playbook's table does.
func ParseProcfile(r io.Reader) ([]Process, error) {
	var out []Process
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		typ, cmd, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(typ) == "" {
			return nil, fmt.Errorf("line %d is not \"type: command\"", n)
		}
		p := Process{Type: strings.TrimSpace(typ), Command: strings.TrimSpace(cmd)}
		switch p.Type {
		case "web":
			p.AWS = "ECS service behind an Application Load Balancer (the container listens on $PORT; the ALB health check replaces Heroku's router)"
		case "release":
			p.AWS = "one-off ECS task (aws ecs run-task) run by the deploy pipeline before the services update"
		case "clock", "scheduler":
			p.AWS = "ECS service with one task, or better its jobs as EventBridge Scheduler schedules running ECS tasks"
		default:
			p.AWS = "ECS service (no load balancer), scaled like the dyno count"
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no process types found: a Procfile has lines like \"web: bundle exec puma\"")
	}
	return out, nil
}

// SchedulerNote is the mapping of Heroku Scheduler jobs, which live in the
// add-on, not in the Procfile.
const SchedulerNote = "Heroku Scheduler jobs (heroku addons:open scheduler) become EventBridge Scheduler schedules, each running the job's command as an ECS task"

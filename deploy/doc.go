// Package deploy holds no Go code: it is the home of the files that put the
// replicator on AWS (the Terraform module, the systemd units and their SSM
// helper, the Prometheus alert rules and the Grafana dashboard; see
// README.md). Its tests check those files with the tools that read them in
// production (promtool, systemd-analyze, terraform) and hold the alert rules
// and the dashboard to the metric names of metrics.txt:
//
//	go test ./deploy/
package deploy

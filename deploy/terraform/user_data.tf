# cloud-init for the sidecar: installs the binary (checksum verified), the
# systemd unit and its SSM helper from deploy/systemd, the non-secret config,
# and ships the service's journal to CloudWatch Logs (journald -> rsyslog ->
# file -> CloudWatch agent). No secret is in the user data: the unit reads
# the connection strings from SSM at every start.

locals {
  metrics_host       = local.metrics_exposed ? "0.0.0.0" : "127.0.0.1"
  metrics_addr       = "${local.metrics_host}:${var.metrics_port}"
  redis_metrics_addr = "${local.metrics_host}:${var.redis_metrics_port}"

  replicator_yaml = yamlencode(merge(var.replicator_config, { "metrics-addr" = local.metrics_addr }))

  replicator_env = <<-EOT
    AWS_REGION=${local.region}
    REPLICATOR_SSM_PREFIX=${var.ssm_prefix}
    REPLICATOR_REDIS_METRICS_ADDR=${local.redis_metrics_addr}
  EOT

  # Sizes the units to the instance without editing the unit files.
  unit_dropin = <<-EOT
    [Service]
    MemoryMax=${var.memory_max_mib}M
    Environment=GOMEMLIMIT=${floor(var.memory_max_mib * 0.9)}MiB
  EOT

  rsyslog_conf = <<-EOT
    if $programname startswith 'replicator' then {
      action(type="omfile" file="/var/log/replicator/replicator.log" fileCreateMode="0640")
      stop
    }
  EOT

  logrotate_conf = <<-EOT
    /var/log/replicator/replicator.log {
      daily
      rotate 3
      compress
      missingok
      notifempty
      postrotate
        systemctl kill -s HUP rsyslog.service >/dev/null 2>&1 || true
      endscript
    }
  EOT

  cloudwatch_agent_json = jsonencode({
    logs = {
      logs_collected = {
        files = {
          collect_list = [{
            file_path       = "/var/log/replicator/replicator.log"
            log_group_name  = local.log_group_name
            log_stream_name = "{instance_id}"
          }]
        }
      }
    }
  })

  units = local.redis ? ["replicator.service", "replicator-redis.service"] : ["replicator.service"]

  fetch_binary = local.binary_from_s3 ? "aws s3 cp --only-show-errors 's3://${var.binary_s3_bucket}/${var.binary_s3_key}' /root/replicator.download" : "curl -fsSL --retry 5 -o /root/replicator.download '${var.binary_url}'"

  fetch_ca_bundle = var.rds_ca_bundle_url == "" ? "# no RDS CA bundle requested" : "curl -fsSL --retry 5 -o /etc/replicator/rds-global-bundle.pem '${var.rds_ca_bundle_url}' && chmod 0644 /etc/replicator/rds-global-bundle.pem"

  install_sh = <<-EOT
    set -euo pipefail
    ${local.fetch_binary}
    echo '${var.binary_sha256}  /root/replicator.download' | sha256sum --check --strict
    install -m 0755 /root/replicator.download /usr/local/bin/replicator
    rm -f /root/replicator.download
    /usr/local/bin/replicator --help >/dev/null
    ${local.fetch_ca_bundle}
    systemctl enable --now rsyslog.service
    /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
      -c file:/opt/aws/amazon-cloudwatch-agent/etc/replicator.json
    systemctl daemon-reload
    systemctl enable --now ${join(" ", local.units)}
  EOT

  redis_files = [
    { path = "/etc/systemd/system/replicator-redis.service", permissions = "0644", content = file("${path.module}/../systemd/replicator-redis.service") },
    { path = "/etc/systemd/system/replicator-redis.service.d/10-size.conf", permissions = "0644", content = local.unit_dropin },
  ]

  cloud_config = {
    packages = ["amazon-cloudwatch-agent", "rsyslog", "logrotate"]
    write_files = concat([
      { path = "/etc/systemd/system/replicator.service", permissions = "0644", content = file("${path.module}/../systemd/replicator.service") },
      { path = "/etc/systemd/system/replicator.service.d/10-size.conf", permissions = "0644", content = local.unit_dropin },
      { path = "/usr/local/libexec/replicator/replicator-env-from-ssm", permissions = "0755", content = file("${path.module}/../systemd/replicator-env-from-ssm") },
      { path = "/etc/replicator/replicator.yaml", permissions = "0644", content = local.replicator_yaml },
      { path = "/etc/replicator/replicator.env", permissions = "0644", content = local.replicator_env },
      { path = "/etc/rsyslog.d/30-replicator.conf", permissions = "0644", content = local.rsyslog_conf },
      { path = "/etc/logrotate.d/replicator", permissions = "0644", content = local.logrotate_conf },
      { path = "/opt/aws/amazon-cloudwatch-agent/etc/replicator.json", permissions = "0644", content = local.cloudwatch_agent_json },
    ], local.redis ? local.redis_files : [])
    runcmd = [["bash", "-c", local.install_sh]]
  }

  user_data = "#cloud-config\n${yamlencode(local.cloud_config)}"
}

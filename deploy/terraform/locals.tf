# Values derived from the variables alone (no AWS lookups), shared by the
# resources and the user data. deploy/terraform_test.go renders the user data
# offline from variables.tf, this file and user_data.tf.

locals {
  binary_from_s3  = var.binary_s3_bucket != "" && var.binary_s3_key != ""
  metrics_exposed = length(var.metrics_ingress_cidr_blocks) + length(var.metrics_ingress_security_group_ids) > 0
  redis           = var.elasticache_security_group_id != ""
  metrics_ports   = local.redis ? [var.metrics_port, var.redis_metrics_port] : [var.metrics_port]

  # "/replicator/" -> "/replicator": the parameter ARNs have no trailing slash.
  ssm_path = trimsuffix(var.ssm_prefix, "/")

  log_group_name = "/replicator/${var.name}"

  tags = merge({ Name = var.name, "replicator:component" = "sidecar" }, var.tags)
}

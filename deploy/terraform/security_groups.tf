# The sidecar's own security group allows only what the replicator needs:
# out to the targets, the sources and HTTPS (AWS APIs), in to /metrics from
# Prometheus. The targets' groups get an ingress rule from the sidecar.
# DNS, NTP and instance metadata go to link-local and VPC resolver addresses
# that security groups do not filter.

resource "aws_security_group" "replicator" {
  name_prefix = "${var.name}-"
  description = "replicator sidecar"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "to_rds" {
  security_group_id            = aws_security_group.replicator.id
  description                  = "to the RDS target"
  ip_protocol                  = "tcp"
  from_port                    = var.rds_port
  to_port                      = var.rds_port
  referenced_security_group_id = var.rds_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_replicator" {
  security_group_id            = var.rds_security_group_id
  description                  = "from the replicator sidecar ${var.name}"
  ip_protocol                  = "tcp"
  from_port                    = var.rds_port
  to_port                      = var.rds_port
  referenced_security_group_id = aws_security_group.replicator.id
}

resource "aws_vpc_security_group_egress_rule" "to_elasticache" {
  count                        = local.redis ? 1 : 0
  security_group_id            = aws_security_group.replicator.id
  description                  = "to the ElastiCache target"
  ip_protocol                  = "tcp"
  from_port                    = var.elasticache_port
  to_port                      = var.elasticache_port
  referenced_security_group_id = var.elasticache_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "elasticache_from_replicator" {
  count                        = local.redis ? 1 : 0
  security_group_id            = var.elasticache_security_group_id
  description                  = "from the replicator sidecar ${var.name}"
  ip_protocol                  = "tcp"
  from_port                    = var.elasticache_port
  to_port                      = var.elasticache_port
  referenced_security_group_id = aws_security_group.replicator.id
}

resource "aws_vpc_security_group_egress_rule" "to_sources" {
  for_each          = { for i, r in var.source_egress : tostring(i) => r }
  security_group_id = aws_security_group.replicator.id
  description       = each.value.description
  ip_protocol       = "tcp"
  from_port         = each.value.from_port
  to_port           = each.value.to_port
  cidr_ipv4         = each.value.cidr_ipv4
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = toset(var.https_egress_cidr_blocks)
  security_group_id = aws_security_group.replicator.id
  description       = "HTTPS: SSM, CloudWatch Logs, S3, the binary"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "metrics_from_cidr" {
  for_each          = { for p in setproduct(var.metrics_ingress_cidr_blocks, local.metrics_ports) : "${p[0]}:${p[1]}" => p }
  security_group_id = aws_security_group.replicator.id
  description       = "Prometheus scrapes /metrics"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_ingress_rule" "metrics_from_sg" {
  for_each                     = { for p in setproduct(var.metrics_ingress_security_group_ids, local.metrics_ports) : "${p[0]}:${p[1]}" => p }
  security_group_id            = aws_security_group.replicator.id
  description                  = "Prometheus scrapes /metrics"
  ip_protocol                  = "tcp"
  from_port                    = each.value[1]
  to_port                      = each.value[1]
  referenced_security_group_id = each.value[0]
}

output "instance_id" {
  description = "The sidecar's EC2 instance; open a shell with `aws ssm start-session --target <id>`."
  value       = aws_instance.replicator.id
}

output "private_ip" {
  description = "The sidecar's private address."
  value       = aws_instance.replicator.private_ip
}

output "metrics_endpoint" {
  description = "Where Prometheus scrapes the replicator (reachable only from the allowed CIDRs and security groups)."
  value       = local.metrics_exposed ? "http://${aws_instance.replicator.private_ip}:${var.metrics_port}/metrics" : "loopback only: http://127.0.0.1:${var.metrics_port}/metrics on the instance"
}

output "redis_metrics_endpoint" {
  description = "Where Prometheus scrapes replicator-redis.service (null without an ElastiCache target)."
  value       = local.redis ? (local.metrics_exposed ? "http://${aws_instance.replicator.private_ip}:${var.redis_metrics_port}/metrics" : "loopback only: http://127.0.0.1:${var.redis_metrics_port}/metrics on the instance") : null
}

output "security_group_id" {
  description = "The sidecar's security group."
  value       = aws_security_group.replicator.id
}

output "iam_role_arn" {
  description = "The instance role."
  value       = aws_iam_role.replicator.arn
}

output "instance_profile_name" {
  description = "The instance profile."
  value       = aws_iam_instance_profile.replicator.name
}

output "log_group_name" {
  description = "CloudWatch log group with the service's log (`aws logs tail <name> --follow`)."
  value       = aws_cloudwatch_log_group.replicator.name
}

output "ssm_prefix" {
  description = "The SSM path the instance reads its connection strings from."
  value       = var.ssm_prefix
}

output "session_command" {
  description = "Open a shell on the sidecar through Session Manager."
  value       = "aws ssm start-session --region ${local.region} --target ${aws_instance.replicator.id}"
}

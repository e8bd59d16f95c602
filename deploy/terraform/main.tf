# The replicator sidecar: one EC2 instance in a private subnet next to RDS
# and ElastiCache, reached through Session Manager (no SSH, no public IP),
# running deploy/systemd/replicator.service.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == "" ? 1 : 0
  name  = var.ami_ssm_parameter
}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  ami_id = var.ami_id != "" ? var.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)
}

resource "aws_cloudwatch_log_group" "replicator" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_instance" "replicator" {
  ami                    = local.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.replicator.id]
  iam_instance_profile   = aws_iam_instance_profile.replicator.name

  associate_public_ip_address = false
  monitoring                  = true
  user_data                   = local.user_data
  # A new binary or config is rolled out by replacing the instance: the
  # replicator keeps its position on the target and resumes from there.
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_size_gb
    encrypted   = true
  }

  tags        = local.tags
  volume_tags = local.tags

  lifecycle {
    # A newer Amazon Linux release in the SSM parameter must not replace a
    # sidecar in the middle of a migration.
    ignore_changes = [ami]

    precondition {
      condition     = (var.binary_url != "") != local.binary_from_s3
      error_message = "Give the replicator binary either as binary_url or as binary_s3_bucket and binary_s3_key, not both and not neither."
    }
    precondition {
      condition     = var.binary_url == "" || startswith(var.binary_url, "https://")
      error_message = "binary_url must be an https:// URL."
    }
  }

  depends_on = [aws_cloudwatch_log_group.replicator]
}

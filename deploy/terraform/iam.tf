# The instance role may read the parameters under ssm_prefix and nothing
# else in SSM, decrypt them only through SSM, write to its own log group,
# read the binary's S3 object (when it comes from S3), and be reached by
# Session Manager (AmazonSSMManagedInstanceCore) instead of SSH.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "replicator" {
  name_prefix        = "${var.name}-"
  description        = "replicator sidecar ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "replicator" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.replicator.name
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "session_manager" {
  role       = aws_iam_role.replicator.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "replicator" {
  statement {
    sid     = "ReadConnectionStrings"
    actions = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"]
    resources = [
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${local.ssm_path}",
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${local.ssm_path}/*",
    ]
  }

  statement {
    sid     = "DecryptConnectionStringsViaSSM"
    actions = ["kms:Decrypt"]
    resources = [
      var.ssm_kms_key_arn != "" ? var.ssm_kms_key_arn : "arn:${local.partition}:kms:${local.region}:${local.account_id}:key/*",
    ]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${local.region}.amazonaws.com"]
    }
    # SSM encrypts each SecureString with its ARN as encryption context.
    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${local.ssm_path}/*"]
    }
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.replicator.arn, "${aws_cloudwatch_log_group.replicator.arn}:*"]
  }

  dynamic "statement" {
    for_each = local.binary_from_s3 ? [1] : []
    content {
      sid       = "ReadBinary"
      actions   = ["s3:GetObject"]
      resources = ["arn:${local.partition}:s3:::${var.binary_s3_bucket}/${var.binary_s3_key}"]
    }
  }
}

resource "aws_iam_role_policy" "replicator" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.replicator.id
  policy      = data.aws_iam_policy_document.replicator.json
}

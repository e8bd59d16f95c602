variable "name" {
  description = "Name for the instance, role, security group and log group (several sidecars in one account need distinct names)."
  type        = string
  default     = "replicator"
}

variable "vpc_id" {
  description = "VPC of the RDS and ElastiCache targets."
  type        = string
}

variable "subnet_id" {
  description = "Private subnet for the sidecar. It needs a route to the source (Heroku: a NAT gateway) and to the SSM, CloudWatch Logs and S3 APIs (NAT or VPC endpoints)."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type. The copy is network- and target-bound; 2 vCPUs per 4 --jobs is plenty."
  type        = string
  default     = "m6i.large"
}

variable "ami_id" {
  description = "AMI to boot. Empty: the latest Amazon Linux 2023 from the public SSM parameter ami_ssm_parameter (read at create; later AMI releases do not replace the instance)."
  type        = string
  default     = ""
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter naming the AMI when ami_id is empty. Use .../al2023-ami-kernel-default-arm64 with a Graviton instance_type and an arm64 binary."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

variable "root_volume_size_gb" {
  description = "Root volume (gp3, encrypted) in GiB. Holds the replicator's spill files under /var/lib/private/replicator."
  type        = number
  default     = 50
}

variable "binary_url" {
  description = "HTTPS URL of the replicator binary (linux, the AMI's architecture). Give this or binary_s3_bucket and binary_s3_key."
  type        = string
  default     = ""
}

variable "binary_s3_bucket" {
  description = "S3 bucket holding the replicator binary; the instance role may read only that object."
  type        = string
  default     = ""
}

variable "binary_s3_key" {
  description = "S3 key of the replicator binary in binary_s3_bucket."
  type        = string
  default     = ""
}

variable "binary_sha256" {
  description = "SHA-256 of the binary (sha256sum bin/replicator); the install refuses any other file."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lowercase hex digits: run `sha256sum bin/replicator`."
  }
}

variable "rds_security_group_id" {
  description = "Security group of the RDS target; the module adds an ingress rule from the sidecar on rds_port."
  type        = string
}

variable "rds_ca_bundle_url" {
  description = "Where the install fetches the RDS certificate bundle, saved as /etc/replicator/rds-global-bundle.pem for sslmode=verify-full&sslrootcert=... in the target URL. Empty: not fetched."
  type        = string
  default     = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
}

variable "rds_port" {
  description = "Port of the RDS target."
  type        = number
  default     = 5432
}

variable "elasticache_security_group_id" {
  description = "Security group of the ElastiCache target; the module adds an ingress rule from the sidecar on elasticache_port and runs replicator-redis.service (redis sync --follow). Empty: no Redis."
  type        = string
  default     = ""
}

variable "elasticache_port" {
  description = "Port of the ElastiCache target."
  type        = number
  default     = 6379
}

variable "source_egress" {
  description = "Egress from the sidecar to the source databases (Heroku Postgres listens on 5432; Heroku Redis on a high port shown in REDIS_URL). Narrow cidr_ipv4 when the source's addresses are known."
  type = list(object({
    description = string
    from_port   = number
    to_port     = number
    cidr_ipv4   = string
  }))
  default = [
    { description = "source Postgres", from_port = 5432, to_port = 5432, cidr_ipv4 = "0.0.0.0/0" },
  ]
}

variable "https_egress_cidr_blocks" {
  description = "Where the sidecar may reach HTTPS: the SSM, CloudWatch Logs and S3 APIs and the binary URL. Narrow it to the VPC CIDR when VPC endpoints serve those APIs."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "metrics_port" {
  description = "Port of the replicator's /metrics endpoint."
  type        = number
  default     = 9187
}

variable "redis_metrics_port" {
  description = "Port of /metrics of the Redis service (replicator-redis.service), which runs when elasticache_security_group_id is given."
  type        = number
  default     = 9188
}

variable "metrics_ingress_cidr_blocks" {
  description = "CIDRs allowed to scrape /metrics (Prometheus). When this and metrics_ingress_security_group_ids are both empty, /metrics stays on loopback."
  type        = list(string)
  default     = []
}

variable "metrics_ingress_security_group_ids" {
  description = "Security groups allowed to scrape /metrics (Prometheus)."
  type        = list(string)
  default     = []
}

variable "ssm_prefix" {
  description = "SSM Parameter Store path holding source-url, target-url, redis-source-url and redis-target-url (SecureString). The instance may read nothing else."
  type        = string
  default     = "/replicator/"

  validation {
    condition     = can(regex("^/([A-Za-z0-9_.-]+/)+$", var.ssm_prefix))
    error_message = "ssm_prefix must start and end with '/', e.g. /replicator/ or /replicator/prod/."
  }
}

variable "ssm_kms_key_arn" {
  description = "ARN of the customer-managed KMS key encrypting the SecureString parameters. Empty: the AWS-managed key alias/aws/ssm."
  type        = string
  default     = ""
}

variable "replicator_config" {
  description = "Non-secret settings for /etc/replicator/replicator.yaml, keys are flag names (jobs, capture, log-level...). Connection strings belong in SSM, never here. metrics-addr is set by the module."
  type        = map(string)
  default = {
    jobs    = "4"
    capture = "auto"
  }

  validation {
    condition     = length(setintersection(keys(var.replicator_config), ["source", "target", "redis-source", "redis-target"])) == 0
    error_message = "replicator_config must not hold connection strings (source, target): put them in SSM under ssm_prefix."
  }
}

variable "memory_max_mib" {
  description = "Memory limit of each service (Postgres, and Redis when enabled) in MiB: systemd MemoryMax=, with the Go heap limit GOMEMLIMIT at 90 % of it. Leave room for the OS: the default fits two services on 8 GiB."
  type        = number
  default     = 3072
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

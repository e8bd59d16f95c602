# A sidecar for one migration: RDS and ElastiCache already exist in the VPC,
# the connection strings are in SSM under /replicator/ (deploy/README.md),
# and Prometheus runs in the VPC under its own security group.
#
#   terraform init && terraform apply -var-file=migration.tfvars

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the VPC."
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "VPC of RDS and ElastiCache."
  type        = string
}

variable "private_subnet_id" {
  description = "Private subnet with a NAT gateway route (the source is Heroku, on the internet)."
  type        = string
}

variable "rds_security_group_id" {
  description = "Security group of the RDS instance."
  type        = string
}

variable "elasticache_security_group_id" {
  description = "Security group of the ElastiCache replication group."
  type        = string
}

variable "prometheus_security_group_id" {
  description = "Security group of the Prometheus server that scrapes the sidecar."
  type        = string
}

variable "binary_s3_bucket" {
  description = "Bucket where `make build` output was uploaded."
  type        = string
}

variable "binary_sha256" {
  description = "sha256sum of that binary."
  type        = string
}

module "replicator" {
  source = "../.."

  name          = "replicator-heroku-migration"
  vpc_id        = var.vpc_id
  subnet_id     = var.private_subnet_id
  instance_type = "m6i.large"

  binary_s3_bucket = var.binary_s3_bucket
  binary_s3_key    = "replicator/linux-amd64/replicator"
  binary_sha256    = var.binary_sha256

  rds_security_group_id         = var.rds_security_group_id
  elasticache_security_group_id = var.elasticache_security_group_id

  source_egress = [
    { description = "Heroku Postgres", from_port = 5432, to_port = 5432, cidr_ipv4 = "0.0.0.0/0" },
    { description = "Heroku Redis (port from REDIS_URL)", from_port = 6379, to_port = 65535, cidr_ipv4 = "0.0.0.0/0" },
  ]

  metrics_ingress_security_group_ids = [var.prometheus_security_group_id]

  ssm_prefix = "/replicator/"
  replicator_config = {
    jobs      = "8"
    capture   = "auto"
    log-level = "info"
  }

  tags = { Project = "heroku-to-aws" }
}

output "session_command" {
  value = module.replicator.session_command
}

output "metrics_endpoint" {
  value = module.replicator.metrics_endpoint
}

output "log_group_name" {
  value = module.replicator.log_group_name
}

# The activity role, in each account break-glass profiles target (the same as deploy/activity-role.yaml):
# lets the bot read this account's CloudTrail event history for the activity digest of a session. It may
# call cloudtrail:LookupEvents and nothing else; only the bot's roles may assume it (with the external id,
# when one is set). Name it in the profile's policy as `aws.activity_role`.

terraform {
  required_version = ">= 1.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "bot_role_arns" {
  description = "ARNs of the roles the bot runs as (the root module's bot_role_arns output, or the host's role)."
  type        = list(string)

  validation {
    condition     = length(var.bot_role_arns) > 0 && alltrue([for arn in var.bot_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", arn))])
    error_message = "The bot_role_arns are one or more IAM role ARNs (never \"*\")."
  }
}

variable "external_id" {
  description = "Optional sts:ExternalId the bot must present (the profile's aws.activity_external_id)."
  type        = string
  default     = ""

  validation {
    condition     = length(var.external_id) <= 1224 && can(regex("^[A-Za-z0-9+=,.@:/_-]*$", var.external_id))
    error_message = "The external_id is at most 1224 of A-Z a-z 0-9 + = , . @ : / _ -."
  }
}

variable "role_name" {
  description = "The role's name (the root module's activity_role_name)."
  type        = string
  default     = "breakglass-activity"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.role_name))
    error_message = "The role_name is an IAM role name."
  }
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "BreakglassBotOnly"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.bot_role_arns
    }

    dynamic "condition" {
      for_each = var.external_id == "" ? [] : [var.external_id]
      content {
        test     = "StringEquals"
        variable = "sts:ExternalId"
        values   = [condition.value]
      }
    }
  }
}

# LookupEvents supports no resource-level permissions: "*" is the only resource it accepts.
data "aws_iam_policy_document" "lookup" {
  statement {
    sid       = "LookupEventsOnly"
    actions   = ["cloudtrail:LookupEvents"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "activity" {
  name                 = var.role_name
  description          = "breakglass bot reads CloudTrail event history (LookupEvents only) for activity digests"
  max_session_duration = 3600
  assume_role_policy   = data.aws_iam_policy_document.trust.json
}

resource "aws_iam_role_policy" "lookup" {
  name   = "breakglass-cloudtrail-lookup"
  role   = aws_iam_role.activity.id
  policy = data.aws_iam_policy_document.lookup.json
}

output "activity_role_arn" {
  description = "The profile's aws.activity_role (its name is enough when the account is set)."
  value       = aws_iam_role.activity.arn
}

# The module's inputs. Each mirrors a parameter of the SAM template (deploy/template.yaml); README.md beside
# this file documents them.

variable "name" {
  description = "Prefix of every resource's name: the functions are <name>-http and <name>-sweep."
  type        = string
  default     = "breakglass"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "The name is 1-40 letters, digits, - or _ (a Lambda function name is at most 64 characters)."
  }
}

variable "package_file" {
  description = "The deployment package: a zip of bot/, store/ and the locked dependencies for arm64 (`make lambda-package` builds dist/breakglass-lambda.zip)."
  type        = string
}

variable "slack_secret_arn" {
  description = "ARN of a Secrets Manager secret whose SecretString is a JSON object {\"SLACK_BOT_TOKEN\": \"xoxb-...\", \"SLACK_SIGNING_SECRET\": \"...\"}. The functions read it once at init (bot/aws_secrets.py); no secret is ever in their configuration."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.slack_secret_arn))
    error_message = "The slack_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "slack_team_id" {
  description = "Id of the installed Slack workspace (T0123456): requests from any other are refused."
  type        = string

  validation {
    condition     = can(regex("^T[A-Z0-9]{2,}$", var.slack_team_id))
    error_message = "The slack_team_id is a workspace id such as T0123456."
  }
}

variable "audit_channel" {
  description = "Id of the security audit channel (C0123456); invite the bot to it."
  type        = string

  validation {
    condition     = can(regex("^[CGD][A-Z0-9]{2,}$", var.audit_channel))
    error_message = "The audit_channel is a channel id such as C0123456."
  }
}

variable "table_name" {
  description = "The DynamoDB events table (created here, as `breakglass-admin create-table` makes it)."
  type        = string
  default     = "breakglass-events"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.table_name))
    error_message = "The table_name is 3-255 letters, digits, _ . or -."
  }
}

variable "activity_role_name" {
  description = "Name of the activity role in the target accounts (modules/activity-role, or deploy/activity-role.yaml): CloudTrail digests."
  type        = string
  default     = "breakglass-activity"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.activity_role_name))
    error_message = "The activity_role_name is an IAM role name."
  }
}

# The identity-center access provider (policy `access.provider: identity-center`). Leave the instance empty
# for the default provider `none`: the functions then get no sso:/identitystore: permission at all.
variable "identity_center_instance_arn" {
  description = "The policy's access.instance_arn (empty: access provider none, no Identity Center permissions)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(arn:aws[a-z-]*:sso:::instance/ssoins-[0-9a-f]{16})?$", var.identity_center_instance_arn))
    error_message = "The identity_center_instance_arn looks like arn:aws:sso:::instance/ssoins-0123456789abcdef (or is empty)."
  }
}

variable "identity_store_id" {
  description = "The policy's access.identity_store_id (d-0123456789)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(d-[0-9a-f]{10})?$", var.identity_store_id))
    error_message = "The identity_store_id looks like d-0123456789 (or is empty)."
  }
}

variable "breakglass_permission_set_arns" {
  description = "ARNs of the dedicated break-glass permission sets (the profiles' aws.permission_set)."
  type        = list(string)
  default     = []
}

variable "breakglass_account_ids" {
  description = "Ids of the accounts the profiles target (the profiles' aws.account)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.breakglass_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "The breakglass_account_ids are 12-digit account ids."
  }
}

variable "policy_file" {
  description = "The policy file, as a path inside the deployment package (e.g. policy.yml). Empty: the built-in example policy (everyone may invoke, nobody can review)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9_./-]*$", var.policy_file))
    error_message = "The policy_file is a relative path inside the package."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of both functions."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "The log_level is DEBUG, INFO, WARNING or ERROR."
  }
}

variable "log_retention_days" {
  description = "How long the functions' logs are kept (the audit record itself lives in DynamoDB)."
  type        = number
  default     = 400

  validation {
    condition     = contains([30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The log_retention_days is one of CloudWatch Logs' retention periods (30 ... 3653)."
  }
}

variable "alarm_topic_arn" {
  description = "SNS topic the alarms notify (empty: alarms without notification)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:.+)?$", var.alarm_topic_arn))
    error_message = "The alarm_topic_arn is an SNS topic ARN (or empty)."
  }
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "audit_feed_retention_days" {
  description = "Days each OCSF audit-feed record is locked in its S3 bucket (Object Lock, COMPLIANCE: nobody, the bot's own role included, can change or delete it before then). 0: no audit-feed bucket."
  type        = number
  default     = 0

  validation {
    condition     = var.audit_feed_retention_days >= 0 && floor(var.audit_feed_retention_days) == var.audit_feed_retention_days
    error_message = "The audit_feed_retention_days is a whole number of days (0: no bucket)."
  }
}

variable "audit_feed_event_bus" {
  description = "EventBridge bus the OCSF audit feed puts its records on (e.g. default); empty for none."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]*$", var.audit_feed_event_bus))
    error_message = "The audit_feed_event_bus is an event bus name (or empty)."
  }
}

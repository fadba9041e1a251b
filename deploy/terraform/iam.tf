# The functions' permissions: exactly docs/iam-policy.json (the store's DynamoDB calls on the table and its
# indexes, sts:AssumeRole on the activity roles, Identity Center only with that provider), the one Slack
# secret, and what the SAM template's function type adds by itself (logs; the dead-letter queue).
# tests/test_terraform.py checks these statements against docs/iam-policy.json, deploy/template.yaml and
# the code's calls.

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    sid     = "LambdaAssumesTheRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

# What both functions call: docs/iam-policy.json's DynamoDB and activity-role statements, and the secret.
data "aws_iam_policy_document" "bot" {
  statement {
    sid = "BreakglassEventItems"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
    ]
    resources = [aws_dynamodb_table.events.arn]
  }

  statement {
    sid       = "BreakglassEventIndexes"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.events.arn}/index/*"]
  }

  statement {
    sid       = "BreakglassActivityRoles"
    actions   = ["sts:AssumeRole"]
    resources = ["arn:${local.partition}:iam::*:role/${var.activity_role_name}"]
  }

  statement {
    sid       = "BreakglassSlackSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.slack_secret_arn]
  }
}

# The Slack endpoint also invokes itself (Bolt's lazy listener) and, when that fails for good, the queue.
data "aws_iam_policy_document" "http" {
  source_policy_documents = [data.aws_iam_policy_document.bot.json]

  statement {
    sid       = "LazyListenerSelfInvoke"
    actions   = ["lambda:InvokeFunction"]
    resources = ["arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${local.http_function_name}"]
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letters.arn]
  }

  statement {
    sid       = "FunctionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.http.arn}:*"]
  }
}

data "aws_iam_policy_document" "sweep" {
  source_policy_documents = [data.aws_iam_policy_document.bot.json]

  statement {
    sid       = "FunctionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.sweep.arn}:*"]
  }
}

resource "aws_iam_role" "http" {
  name               = "${var.name}-http"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "http" {
  name   = "breakglass"
  role   = aws_iam_role.http.id
  policy = data.aws_iam_policy_document.http.json
}

resource "aws_iam_role" "sweep" {
  name               = "${var.name}-sweep"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "sweep" {
  name   = "breakglass"
  role   = aws_iam_role.sweep.id
  policy = data.aws_iam_policy_document.sweep.json
}

# What the identity-center access provider calls (bot/access/identity_center.py), on the instance, the
# break-glass permission sets and the accounts they target only; the same as docs/iam-policy.json.
data "aws_iam_policy_document" "access_provider" {
  count = local.identity_center ? 1 : 0

  statement {
    sid = "BreakglassAccountAssignments"
    actions = [
      "sso:CreateAccountAssignment",
      "sso:DeleteAccountAssignment",
      "sso:ListAccountAssignments",
      "sso:ProvisionPermissionSet",
    ]
    resources = concat(
      [var.identity_center_instance_arn],
      var.breakglass_permission_set_arns,
      [for id in var.breakglass_account_ids : "arn:${local.partition}:sso:::account/${id}"],
    )
  }

  statement {
    sid = "BreakglassPermissionSetInlinePolicy"
    actions = [
      "sso:DescribePermissionSet",
      "sso:GetInlinePolicyForPermissionSet",
      "sso:PutInlinePolicyToPermissionSet",
      "sso:DeleteInlinePolicyFromPermissionSet",
    ]
    resources = concat([var.identity_center_instance_arn], var.breakglass_permission_set_arns)
  }

  statement {
    sid = "BreakglassRequestStatus"
    actions = [
      "sso:DescribeAccountAssignmentCreationStatus",
      "sso:DescribeAccountAssignmentDeletionStatus",
      "sso:DescribePermissionSetProvisioningStatus",
    ]
    resources = [var.identity_center_instance_arn]
  }

  statement {
    sid     = "BreakglassFindUserByEmail"
    actions = ["identitystore:GetUserId"]
    resources = [
      "arn:${local.partition}:identitystore::${local.account_id}:identitystore/${var.identity_store_id}",
      "arn:${local.partition}:identitystore:::user/*",
    ]
  }
}

resource "aws_iam_role_policy" "access_provider" {
  for_each = local.identity_center ? { http = aws_iam_role.http.id, sweep = aws_iam_role.sweep.id } : {}

  name   = "breakglass-access-provider"
  role   = each.value
  policy = data.aws_iam_policy_document.access_provider[0].json
}

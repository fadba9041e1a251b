# breakglass on AWS Lambda: the Slack endpoint (a Function URL), a sweep every minute (warnings, expiry,
# owed announcements) and the DynamoDB events table; the same stack as deploy/template.yaml (SAM).

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition           = data.aws_partition.current.partition
  region              = data.aws_region.current.name
  account_id          = data.aws_caller_identity.current.account_id
  http_function_name  = "${var.name}-http"
  sweep_function_name = "${var.name}-sweep"
  sweep_function_arn  = "arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${local.sweep_function_name}"
  identity_center     = var.identity_center_instance_arn != ""
  alarm_actions       = var.alarm_topic_arn == "" ? [] : [var.alarm_topic_arn]

  environment = merge(
    {
      BREAKGLASS_STORE         = "dynamodb://${aws_dynamodb_table.events.name}"
      BREAKGLASS_AUDIT_CHANNEL = var.audit_channel
      BREAKGLASS_SCHEDULER     = "off"
      BREAKGLASS_SECRETS_ARN   = var.slack_secret_arn
      SLACK_TEAM_ID            = var.slack_team_id
      LOG_LEVEL                = var.log_level
      # Exact-time warnings and expiry (schedules.tf, bot/schedules.py): the schedules invoke the sweep
      BREAKGLASS_SCHEDULER_TARGET_ARN = local.sweep_function_arn
      BREAKGLASS_SCHEDULER_ROLE_ARN   = aws_iam_role.scheduler.arn
      BREAKGLASS_SCHEDULER_GROUP      = aws_scheduler_schedule_group.expiry.name
    },
    var.policy_file == "" ? {} : { BREAKGLASS_POLICY = var.policy_file },
    # The OCSF audit feed (audit_feed.tf): its sinks, and a bucket that is not locked refuses the start
    local.audit_feed == "" ? {} : { BREAKGLASS_AUDIT_FEED = local.audit_feed },
    local.audit_feed == "" ? {} : { BREAKGLASS_AUDIT_FEED_OBJECT_LOCK = "required" },
  )
}

# Slack's requests: slash command, interactivity and events. Bolt verifies every signature, so the URL
# itself needs no IAM auth. Announcements run in an asynchronous self-invocation (Bolt's lazy listener),
# hence the lambda:InvokeFunction on its own name (iam.tf).
resource "aws_lambda_function" "http" {
  function_name    = local.http_function_name
  role             = aws_iam_role.http.arn
  handler          = "bot.lambda_handler.handler"
  runtime          = "python3.12"
  architectures    = ["arm64"]
  memory_size      = 512
  timeout          = 60
  filename         = var.package_file
  source_code_hash = filebase64sha256(var.package_file)
  tags             = var.tags

  environment {
    variables = local.environment
  }

  # A lazy-listener invocation that fails twice (Lambda's retries) lands here instead of vanishing; the
  # owed steps stay in the outbox either way and the sweep delivers them (alarm: dead_letters).
  dead_letter_config {
    target_arn = aws_sqs_queue.dead_letters.arn
  }

  depends_on = [aws_cloudwatch_log_group.http, aws_iam_role_policy.http]
}

resource "aws_lambda_function_event_invoke_config" "http" {
  function_name                = aws_lambda_function.http.function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 3600
}

resource "aws_lambda_function_url" "http" {
  function_name      = aws_lambda_function.http.function_name
  authorization_type = "NONE"
}

# One sweep a minute: due warnings and expiries, owed announcements. Overlapping sweeps are safe (every
# state change is a conditional write and only the winner announces).
resource "aws_lambda_function" "sweep" {
  function_name    = local.sweep_function_name
  role             = aws_iam_role.sweep.arn
  handler          = "bot.lambda_handler.sweep_handler"
  runtime          = "python3.12"
  architectures    = ["arm64"]
  memory_size      = 512
  timeout          = 210 # a fired one-time schedule waits for its exact time (up to 2 minutes early)
  filename         = var.package_file
  source_code_hash = filebase64sha256(var.package_file)
  tags             = var.tags

  environment {
    variables = local.environment
  }

  depends_on = [aws_cloudwatch_log_group.sweep, aws_iam_role_policy.sweep]
}

resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.name}-sweep"
  description         = "breakglass sweep (warnings, expiry, owed announcements)"
  schedule_expression = "rate(1 minute)"
  state               = "ENABLED"
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "sweep" {
  rule = aws_cloudwatch_event_rule.sweep.name
  arn  = aws_lambda_function.sweep.arn
}

resource "aws_lambda_permission" "sweep" {
  statement_id  = "AllowEveryMinuteSweep"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sweep.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sweep.arn
}

# -- operations: dead letters, logs (alarms.tf) ------------------------------------------------------------

resource "aws_sqs_queue" "dead_letters" {
  name                      = "${var.name}-dead-letters"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_cloudwatch_log_group" "http" {
  name              = "/aws/lambda/${local.http_function_name}"
  retention_in_days = var.log_retention_days
  skip_destroy      = true # kept when the stack goes, as the SAM template's DeletionPolicy: Retain
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "sweep" {
  name              = "/aws/lambda/${local.sweep_function_name}"
  retention_in_days = var.log_retention_days
  skip_destroy      = true # kept when the stack goes, as the SAM template's DeletionPolicy: Retain
  tags              = var.tags
}

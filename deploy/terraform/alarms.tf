# CloudWatch alarms, the same as the SAM template's (tests/test_terraform.py compares them one by one):
# Lambda errors and throttles, a sweep that stopped running, dead letters, and the bot's own log lines
# that say access may not end on time or that the audit trail is not reaching anyone (JSON logs,
# bot/logs.py; a test checks that each pattern names a field and value the code really logs).

locals {
  # Lambda's and SQS's own metrics, per function or queue.
  metric_alarms = {
    http_errors = {
      description = "the Slack endpoint function failed (Lambda Errors)"
      namespace   = "AWS/Lambda"
      metric      = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.http.function_name }
      statistic   = "Sum"
      comparison  = "GreaterThanOrEqualToThreshold"
      missing     = "notBreaching"
    }
    http_throttles = {
      description = "Slack requests were throttled (Lambda Throttles); Slack retries, then gives up"
      namespace   = "AWS/Lambda"
      metric      = "Throttles"
      dimensions  = { FunctionName = aws_lambda_function.http.function_name }
      statistic   = "Sum"
      comparison  = "GreaterThanOrEqualToThreshold"
      missing     = "notBreaching"
    }
    sweep_errors = {
      description = "the sweep (warnings, expiry, owed announcements) failed; expiry may be late"
      namespace   = "AWS/Lambda"
      metric      = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.sweep.function_name }
      statistic   = "Sum"
      comparison  = "GreaterThanOrEqualToThreshold"
      missing     = "notBreaching"
    }
    sweep_missing = {
      description = "no sweep ran for 5 minutes (schedule disabled or throttled); nothing expires"
      namespace   = "AWS/Lambda"
      metric      = "Invocations"
      dimensions  = { FunctionName = aws_lambda_function.sweep.function_name }
      statistic   = "Sum"
      comparison  = "LessThanThreshold"
      missing     = "breaching"
    }
    dead_letter = {
      description = "an asynchronous (lazy-listener) invocation failed for good; see the dead-letter queue"
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.dead_letters.name }
      statistic   = "Maximum"
      comparison  = "GreaterThanOrEqualToThreshold"
      missing     = "notBreaching"
    }
  }

  # The bot's log lines, counted in both functions' logs (one metric filter per line and function).
  log_line_alarms = {
    revoke_failed = {
      description = "an AWS access revoke failed (it is retried; the audit channel is told)"
      metric      = "RevokeFailed"
      pattern     = "{ $.action = \"revoke\" && $.outcome = \"retry\" }"
    }
    error_lines = {
      description = "the bot logged an ERROR (audit channel broken, store unwritable, unexpected error)"
      metric      = "ErrorLines"
      pattern     = "{ $.level = \"error\" }"
    }
    audit_fallback_failed = {
      description = "the audit channel is broken and its fallback reached nobody (no fallback_channel or security, or none reachable)"
      metric      = "AuditFallbackFailed"
      pattern     = "{ $.action = \"audit_fallback\" && ($.outcome = \"nobody\" || $.outcome = \"unreachable\") }"
    }
  }

  # The state the sweep writes as embedded-metric-format lines every minute (bot/metrics.py).
  state_alarms = {
    owed_oldest = {
      description = "an owed delivery (announcement, grant or revoke) has been due for 5 minutes or more"
      metric      = "OwedOldestSeconds"
      threshold   = 300
    }
    audit_channels_broken = {
      description = "an audit channel is broken (archived, bot removed); announcements go to the fallback"
      metric      = "AuditChannelsBroken"
      threshold   = 1
    }
  }

  log_groups = {
    http  = aws_cloudwatch_log_group.http.name
    sweep = aws_cloudwatch_log_group.sweep.name
  }
}

resource "aws_cloudwatch_metric_alarm" "metric" {
  for_each = local.metric_alarms

  alarm_name          = "${var.name}-${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = each.value.comparison
  treat_missing_data  = each.value.missing
  alarm_actions       = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_log_metric_filter" "log_line" {
  for_each = {
    for pair in setproduct(keys(local.log_line_alarms), keys(local.log_groups)) :
    "${pair[0]}-${pair[1]}" => { alarm = local.log_line_alarms[pair[0]], log_group = local.log_groups[pair[1]] }
  }

  name           = "${var.name}-${each.key}"
  log_group_name = each.value.log_group
  pattern        = each.value.alarm.pattern

  metric_transformation {
    namespace     = "breakglass"
    name          = each.value.alarm.metric
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "log_line" {
  for_each = local.log_line_alarms

  alarm_name          = "${var.name}-${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = "breakglass"
  metric_name         = each.value.metric
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "state" {
  for_each = local.state_alarms

  alarm_name          = "${var.name}-${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = "breakglass"
  metric_name         = each.value.metric
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  tags                = var.tags
}

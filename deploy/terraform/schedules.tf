# Exact-time warnings and expiry (bot/schedules.py): each event's one-time EventBridge Scheduler schedules,
# in their own group, made, moved and deleted by both functions (an outbox step) and invoking the sweep
# function with the scheduler role; the same as the SAM template's ExpirySchedule* resources.

resource "aws_scheduler_schedule_group" "expiry" {
  name = "${var.name}-expiry"
  tags = var.tags
}

data "aws_iam_policy_document" "assume_scheduler" {
  statement {
    sid     = "SchedulerAssumesTheRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:scheduler:${local.region}:${local.account_id}:schedule/${var.name}-expiry/*"]
    }
  }
}

data "aws_iam_policy_document" "invoke_sweep" {
  statement {
    sid       = "InvokeSweep"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.sweep_function_arn]
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.assume_scheduler.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "invoke-sweep"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.invoke_sweep.json
}

# What both functions call: docs/iam-policy.json's scheduler and iam:PassRole statements.
data "aws_iam_policy_document" "expiry_schedules" {
  statement {
    sid = "BreakglassExpirySchedules"
    actions = [
      "scheduler:CreateSchedule",
      "scheduler:DeleteSchedule",
      "scheduler:UpdateSchedule",
    ]
    resources = ["arn:${local.partition}:scheduler:${local.region}:${local.account_id}:schedule/${aws_scheduler_schedule_group.expiry.name}/*"]
  }

  statement {
    sid       = "BreakglassPassSchedulerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.scheduler.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["scheduler.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "expiry_schedules" {
  for_each = { http = aws_iam_role.http.id, sweep = aws_iam_role.sweep.id }

  name   = "breakglass-expiry-schedules"
  role   = each.value
  policy = data.aws_iam_policy_document.expiry_schedules.json
}

# The OCSF audit feed (bot/audit_feed/sinks.py): an S3 bucket with Object Lock in COMPLIANCE mode and/or an
# EventBridge bus, the same as the SAM template's AuditFeed* resources. Neither: no feed (the records can
# still be exported with breakglass-admin export).

locals {
  audit_feed_bucket_wanted = var.audit_feed_retention_days > 0
  audit_feed_events_wanted = var.audit_feed_event_bus != ""
  audit_feed = join(",", concat(
    local.audit_feed_bucket_wanted ? ["s3://${aws_s3_bucket.audit_feed[0].bucket}/breakglass"] : [],
    local.audit_feed_events_wanted ? ["eventbridge://${var.audit_feed_event_bus}"] : [],
  ))
}

# One object per record under breakglass/year=/month=/day=/ (Athena, Security Lake), locked in COMPLIANCE
# mode: not even the account's root can change or delete a record before its retention ends.
resource "aws_s3_bucket" "audit_feed" {
  count = local.audit_feed_bucket_wanted ? 1 : 0

  bucket_prefix       = "${var.name}-audit-feed-"
  object_lock_enabled = true
  tags                = var.tags

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "audit_feed" {
  count = local.audit_feed_bucket_wanted ? 1 : 0

  bucket = aws_s3_bucket.audit_feed[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "audit_feed" {
  count = local.audit_feed_bucket_wanted ? 1 : 0

  bucket = aws_s3_bucket.audit_feed[0].id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.audit_feed_retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.audit_feed]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audit_feed" {
  count = local.audit_feed_bucket_wanted ? 1 : 0

  bucket = aws_s3_bucket.audit_feed[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "audit_feed" {
  count = local.audit_feed_bucket_wanted ? 1 : 0

  bucket                  = aws_s3_bucket.audit_feed[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# What the S3 sink calls: put a record, read one back after a refused conditional put, check the lock at
# init. No delete, no retention change: the same as docs/iam-policy.json.
data "aws_iam_policy_document" "audit_feed_bucket" {
  count = local.audit_feed_bucket_wanted ? 1 : 0

  statement {
    sid       = "BreakglassAuditFeedObjects"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.audit_feed[0].arn}/breakglass/*"]
  }

  statement {
    sid       = "BreakglassAuditFeedObjectLock"
    actions   = ["s3:GetBucketObjectLockConfiguration"]
    resources = [aws_s3_bucket.audit_feed[0].arn]
  }
}

resource "aws_iam_role_policy" "audit_feed_bucket" {
  for_each = local.audit_feed_bucket_wanted ? { http = aws_iam_role.http.id, sweep = aws_iam_role.sweep.id } : {}

  name   = "breakglass-audit-feed-bucket"
  role   = each.value
  policy = data.aws_iam_policy_document.audit_feed_bucket[0].json
}

data "aws_iam_policy_document" "audit_feed_events" {
  count = local.audit_feed_events_wanted ? 1 : 0

  statement {
    sid       = "BreakglassAuditFeedEvents"
    actions   = ["events:PutEvents"]
    resources = ["arn:${local.partition}:events:${local.region}:${local.account_id}:event-bus/${var.audit_feed_event_bus}"]
  }
}

resource "aws_iam_role_policy" "audit_feed_events" {
  for_each = local.audit_feed_events_wanted ? { http = aws_iam_role.http.id, sweep = aws_iam_role.sweep.id } : {}

  name   = "breakglass-audit-feed-events"
  role   = each.value
  policy = data.aws_iam_policy_document.audit_feed_events[0].json
}

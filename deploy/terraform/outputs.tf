output "slack_request_url" {
  description = "Paste into the Slack app's slash command, interactivity and event subscription URLs."
  value       = aws_lambda_function_url.http.function_url
}

output "events_table_name" {
  value = aws_dynamodb_table.events.name
}

output "events_table_arn" {
  value = aws_dynamodb_table.events.arn
}

output "dead_letter_queue_url" {
  value = aws_sqs_queue.dead_letters.url
}

output "bot_role_arns" {
  description = "The functions' roles: the activity roles in the target accounts trust these (modules/activity-role)."
  value       = { http = aws_iam_role.http.arn, sweep = aws_iam_role.sweep.arn }
}

output "audit_feed_bucket" {
  description = "The OCSF audit feed's locked S3 bucket (empty without audit_feed_retention_days)."
  value       = local.audit_feed_bucket_wanted ? aws_s3_bucket.audit_feed[0].bucket : ""
}

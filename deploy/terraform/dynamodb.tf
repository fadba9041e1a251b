# The events table, exactly as `breakglass-admin create-table` makes it (store/dynamodb.py,
# table_definition and create_table): key `id`, five GSIs projecting everything, on-demand billing,
# encryption, TTL on `ttl` and point-in-time recovery. tests/test_terraform.py checks it against the code.
resource "aws_dynamodb_table" "events" {
  name         = var.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"
  tags         = var.tags

  attribute {
    name = "created_at"
    type = "S"
  }
  attribute {
    name = "ended_at"
    type = "S"
  }
  attribute {
    name = "id"
    type = "S"
  }
  attribute {
    name = "invoker"
    type = "S"
  }
  attribute {
    name = "outbox_next_at"
    type = "S"
  }
  attribute {
    name = "owed_pk"
    type = "S"
  }
  attribute {
    name = "profile"
    type = "S"
  }
  attribute {
    name = "review_pk"
    type = "S"
  }
  attribute {
    name = "status"
    type = "S"
  }

  global_secondary_index {
    name            = "gsi-invoker"
    hash_key        = "invoker"
    range_key       = "created_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "gsi-status"
    hash_key        = "status"
    range_key       = "created_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "gsi-profile"
    hash_key        = "profile"
    range_key       = "created_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "gsi-outbox"
    hash_key        = "owed_pk"
    range_key       = "outbox_next_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "gsi-review"
    hash_key        = "review_pk"
    range_key       = "ended_at"
    projection_type = "ALL"
  }

  server_side_encryption {
    enabled = true
  }

  point_in_time_recovery {
    enabled = true
  }

  # Expired items are deleted by TTL only once their audit retention is over (store/dynamodb.py).
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  # The audit record: never destroyed by a plan (the SAM template's DeletionPolicy: Retain).
  lifecycle {
    prevent_destroy = true
  }
}

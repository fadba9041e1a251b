# A complete breakglass deployment: the bot in the security account, with the identity-center access
# provider, and the activity role in one target account. Build the package first (`make lambda-package`),
# put the Slack secrets in Secrets Manager (README.md, "Deploying on AWS Lambda"), then
# `terraform init && terraform apply`.

provider "aws" {
  region = "eu-west-1"
}

# The target account (a profile's aws.account), reached through a role you can assume there.
provider "aws" {
  alias  = "workload"
  region = "eu-west-1"

  assume_role {
    role_arn = "arn:aws:iam::444455556666:role/OrganizationAccountAccessRole"
  }
}

module "breakglass" {
  source = "../.."

  package_file     = "${path.root}/../../../../dist/breakglass-lambda.zip"
  slack_secret_arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:breakglass/slack-AbCdEf"
  slack_team_id    = "T0123456"
  audit_channel    = "C0123456"
  policy_file      = "examples/policy.yml"

  identity_center_instance_arn   = "arn:aws:sso:::instance/ssoins-0123456789abcdef"
  identity_store_id              = "d-0123456789"
  breakglass_permission_set_arns = ["arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef"]
  breakglass_account_ids         = ["444455556666"]

  alarm_topic_arn = "arn:aws:sns:eu-west-1:111122223333:security-alerts"
  tags            = { service = "breakglass" }
}

module "activity_role" {
  source    = "../../modules/activity-role"
  providers = { aws = aws.workload }

  bot_role_arns = values(module.breakglass.bot_role_arns)
  role_name     = "breakglass-activity"
}

output "slack_request_url" {
  value = module.breakglass.slack_request_url
}

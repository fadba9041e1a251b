"""The IAM policies (docs/iam-policy*.json) and the SAM template grant exactly what store/dynamodb.py
calls, on the table and its indexes only, and exactly what the identity-center access provider calls, on the
instance, the break-glass permission sets and their accounts only; the template's table matches
`table_definition`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import aws_secrets
from bot.config import Settings
from store import dynamodb
from store.dynamodb import table_definition
from tests.processes import BIN
from tests.store_fixtures import HOUR, T0, make_event

pytest_plugins = ["tests.store_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "store" / "dynamodb.py").read_text()
BOT_POLICY = json.loads((ROOT / "docs" / "iam-policy.json").read_text())
ADMIN_POLICY = json.loads((ROOT / "docs" / "iam-policy-admin.json").read_text())
TABLE_ARN = "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/breakglass-events"
INDEX_ARN = TABLE_ARN + "/index/*"

# A TransactWriteItems request is authorised per item, by the action each item performs: there is no
# IAM action named after the transaction itself (DynamoDB developer guide, "Using IAM with DynamoDB
# transactions").
TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
WAITER_ACTIONS = {"table_exists": "DescribeTable", "table_not_exists": "DescribeTable"}


def iam_action(operation: str) -> str:
    return "dynamodb:" + "".join(part.capitalize() for part in operation.split("_"))


def actions_of_store_class() -> set[str]:
    """IAM actions of every `self._call("op", …)` in DynamoDBStore (the bot's runtime calls)."""
    body = SOURCE.split("class DynamoDBStore", 1)[1].split("\ndef ", 1)[0]
    operations = set(re.findall(r'self\._call\(\s*"(\w+)"', body))
    assert operations, "no DynamoDB calls found: has store/dynamodb.py changed shape?"
    actions = {
        iam_action(op) for op in operations if op not in ("transact_write_items", "transact_get_items")
    }
    if "transact_write_items" in operations:
        kinds = set(re.findall(r'\{\s*"(Put|Update|Delete|ConditionCheck)"\s*:', body))
        assert kinds, "transact_write_items is called but no transaction item kinds were found"
        actions |= {"dynamodb:" + TRANSACT_ITEM_ACTIONS[k] for k in kinds}
    # Nothing may reach the client except through _call (which is what the scan above sees).
    direct = set(re.findall(r"self\.client\.(\w+)\(", body))
    assert not direct, f"DynamoDBStore calls the client directly: {direct}"
    return actions


def actions_of_table_setup() -> set[str]:
    """IAM actions of `create_table(client, …)` (the admin CLI's create-table)."""
    body = SOURCE.split("def create_table(", 1)[1]
    operations = set(re.findall(r"\bclient\.(\w+)\(", body)) - {"get_waiter"}
    actions = {iam_action(op) for op in operations}
    actions |= {"dynamodb:" + WAITER_ACTIONS[w] for w in re.findall(r'get_waiter\(\s*"(\w+)"', body)}
    return actions


def policy_actions(policy: dict[str, Any], prefix: str = "dynamodb:") -> set[str]:
    """The policy's actions of one service (the prefix)."""
    return {a for s in policy["Statement"] for a in _list(s["Action"]) if a.startswith(prefix)}


def _service_statements(policy: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [s for s in policy["Statement"] if all(a.startswith(prefix) for a in _list(s["Action"]))]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_action_scan_sees_what_the_store_calls() -> None:
    assert actions_of_store_class() == {
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
    }


def test_bot_policy_grants_exactly_the_calls() -> None:
    assert policy_actions(BOT_POLICY) == actions_of_store_class()
    every_action = policy_actions(BOT_POLICY, "")
    assert every_action == (
        actions_of_store_class()
        | activity_bot_actions()
        | actions_of_access_provider()
        | actions_of_audit_feed()
        | schedule_actions()
        | {"iam:PassRole"}  # the schedules' role, to EventBridge Scheduler only (test_schedule_statements…)
        | secret_actions()
    )
    # The secrets (Slack's and the incident tool's, bot/aws_secrets.py): one secret, read-only.
    (secret,) = _service_statements(BOT_POLICY, "secretsmanager:")
    assert _list(secret["Action"]) == ["secretsmanager:GetSecretValue"]
    assert all(":secret:" in arn and "*" not in arn.split(":secret:")[0] for arn in _list(secret["Resource"]))


def test_admin_policy_adds_exactly_table_setup() -> None:
    expected = actions_of_store_class() | actions_of_table_setup()
    assert policy_actions(ADMIN_POLICY) == expected
    assert actions_of_table_setup() == {
        "dynamodb:CreateTable",
        "dynamodb:DescribeTable",
        "dynamodb:DescribeTimeToLive",
        "dynamodb:UpdateTimeToLive",
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:UpdateContinuousBackups",
        "dynamodb:UpdateTable",  # create-table --update: a missing index
    }


@pytest.mark.parametrize("policy", [BOT_POLICY, ADMIN_POLICY], ids=["bot", "admin"])
def test_policies_allow_only_on_the_table_and_its_indexes(policy: dict[str, Any]) -> None:
    assert policy["Version"] == "2012-10-17"
    for statement in _service_statements(policy, "dynamodb:"):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        resources = set(_list(statement["Resource"]))
        assert resources <= {TABLE_ARN, INDEX_ARN}, statement
        for action in _list(statement["Action"]):
            assert "*" not in action
            # Queries only ever go to an index (every query names IndexName); item actions to the table.
            if action == "dynamodb:Query":
                assert resources == {INDEX_ARN}
            else:
                assert resources == {TABLE_ARN}


def test_every_query_goes_to_an_index(moto_dynamodb: tuple[Any, str]) -> None:
    """Why Query is granted on `<table>/index/*` only: the store never queries the base table."""
    client, table = moto_dynamodb
    store = dynamodb.DynamoDBStore(table, client=client)
    queries: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.Query", lambda params, **_: queries.append(dict(params))
    )
    event = store.create(make_event())
    store.close(event.id, by="U0IC", reason="over", now=T0 + HOUR)
    store.list_active()
    store.list_by_invoker(event.invoker)
    store.list_by_profile(event.profile)
    store.list_by_status(event.status)
    store.list_unreviewed()
    store.list_owed(now=T0 + 2 * HOUR)
    store.count_by_invoker_since(event.invoker, T0)
    store.count_by_profile_since(event.profile, T0)
    store.last_by_invoker_and_profile(event.invoker, event.profile)
    assert len(queries) >= 8
    assert all(q.get("IndexName") in dynamodb._INDEXES for q in queries), queries


# -- the SAM template -----------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML as CloudFormation reads it: short-form intrinsics, and a duplicate key is an error (PyYAML would
    silently keep the last one, hiding e.g. a second `Conditions:` section)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {duplicates}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load((ROOT / "deploy" / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def _by(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


def test_template_table_matches_table_definition(template: dict[str, Any]) -> None:
    table = template["Resources"]["EventsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["DeletionPolicy"] == "Retain"
    props = table["Properties"]
    expected = table_definition("x")
    assert props["KeySchema"] == expected["KeySchema"]
    assert (
        sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"])
        == expected["AttributeDefinitions"]
    )
    assert _by(props["GlobalSecondaryIndexes"], "IndexName") == _by(
        expected["GlobalSecondaryIndexes"], "IndexName"
    )
    assert props["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert set(_by(props["GlobalSecondaryIndexes"], "IndexName")) == set(dynamodb._INDEXES)


def _function_statements(template: dict[str, Any], name: str) -> list[dict[str, Any]]:
    function = template["Resources"][name]
    assert function["Type"] == "AWS::Serverless::Function"
    return [s for policy in function["Properties"]["Policies"] for s in policy["Statement"]]


@pytest.mark.parametrize("name", ["HttpFunction", "SweepFunction"])
def test_template_functions_match_the_bot_policy(template: dict[str, Any], name: str) -> None:
    statements = _function_statements(template, name)
    dynamo = [s for s in statements if any(a.startswith("dynamodb:") for a in _list(s["Action"]))]
    assert {a for s in dynamo for a in _list(s["Action"])} == policy_actions(BOT_POLICY)
    table_arn = {"Fn::GetAtt": ["EventsTable", "Arn"]}
    index_arn = {"Fn::Sub": "${EventsTable.Arn}/index/*"}
    for statement in dynamo:
        resources = _list(statement["Resource"])
        expected = [index_arn] if _list(statement["Action"]) == ["dynamodb:Query"] else [table_arn]
        assert resources == expected, statement
    others = [s for s in statements if s not in dynamo]
    (assume,) = [s for s in others if s.get("Sid") == "BreakglassActivityRoles"]
    others.remove(assume)
    # The Slack secret, read once at init (bot/aws_secrets.py): that one secret, nothing else.
    (secret,) = [s for s in others if s.get("Sid") == "BreakglassSlackSecret"]
    others.remove(secret)
    assert secret["Action"] == sorted(secret_actions())
    assert secret["Resource"] == {"Ref": "SlackSecretArn"}
    assert assume["Action"] == sorted(activity_bot_actions())
    assert assume["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${ActivityRoleName}"}
    if name == "HttpFunction":  # the lazy listener invokes its own function, nothing else
        (invoke,) = others
        assert invoke["Action"] == ["lambda:InvokeFunction"]
        assert invoke["Resource"]["Fn::Sub"].endswith(":function:${AWS::StackName}-http")
        function_name = template["Resources"][name]["Properties"]["FunctionName"]
        assert function_name == {"Fn::Sub": "${AWS::StackName}-http"}
    else:
        assert others == []


def test_template_wiring(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    http = resources["HttpFunction"]["Properties"]
    assert http["Handler"] == "bot.lambda_handler.handler"
    assert http["FunctionUrlConfig"] == {"AuthType": "NONE"}  # Bolt verifies Slack's signature
    sweep = resources["SweepFunction"]["Properties"]
    assert sweep["Handler"] == "bot.lambda_handler.sweep_handler"
    (schedule,) = sweep["Events"].values()
    assert schedule["Type"] == "Schedule"
    assert schedule["Properties"]["Schedule"] == "rate(1 minute)"
    params = template["Parameters"]
    # No secret is a parameter or an environment variable: the functions read SlackSecretArn at init.
    assert not {"SlackBotToken", "SlackSigningSecret"} & set(params)
    assert not [name for name, param in params.items() if param.get("NoEcho")]  # no secret is a parameter
    assert "NoEcho" not in params["AuditChannel"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["BREAKGLASS_STORE"] == {"Fn::Sub": "dynamodb://${EventsTable}"}
    assert env["BREAKGLASS_SCHEDULER"] == "off"
    assert not set(aws_secrets.SECRET_KEYS) & set(env)  # Slack's and the incident tools' secrets
    assert env[aws_secrets.SECRETS_ENV] == {"Ref": "SlackSecretArn"}
    assert env["SLACK_TEAM_ID"] == {"Ref": "SlackTeamId"}
    assert {"SLACK_TEAM_ID", "BREAKGLASS_AUDIT_CHANNEL", "BREAKGLASS_STORE"} <= {
        name.upper() for name in Settings.model_fields
    }
    assert env["BREAKGLASS_AUDIT_CHANNEL"] == {"Ref": "AuditChannel"}


def test_template_runtime_is_supported_and_the_containers() -> None:
    """python3.11's Lambda runtime was deprecated on 2026-06-30 (cfn-lint E2533): the functions use the
    Dockerfile's Python."""
    template = yaml.load((ROOT / "deploy" / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    runtime = template["Globals"]["Function"]["Runtime"]
    assert runtime in ("python3.12", "python3.13")
    dockerfile = (ROOT / "Dockerfile").read_text()
    images = re.findall(r"^FROM python:(3\.\d+)-slim", dockerfile, re.MULTILINE)
    assert images and set(images) == {runtime.removeprefix("python")}


def test_template_operations(template: dict[str, Any]) -> None:
    """Log retention, a dead-letter queue for the lazy-listener invocations, alarms on errors and
    throttles and on the log lines that say access may not end on time."""
    resources = template["Resources"]
    http = resources["HttpFunction"]["Properties"]
    assert http["DeadLetterQueue"] == {"Type": "SQS", "TargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    assert http["EventInvokeConfig"]["MaximumRetryAttempts"] == 2
    for function in ("HttpFunction", "SweepFunction"):
        group = resources[f"{function}LogGroup"]["Properties"]
        assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {(a["Namespace"], a["MetricName"]) for a in alarms.values()}
    assert {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "Invocations"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("breakglass", "RevokeFailed"),
        ("breakglass", "ErrorLines"),
    } <= watched
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }
    filters = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::MetricFilter"]
    patterns = {f["MetricTransformations"][0]["MetricName"]: f["FilterPattern"] for f in filters}
    # What bot/delivery/handlers/access.py logs when a revoke fails, and every ERROR line (JSON logs, bot/logs.py).
    assert patterns["RevokeFailed"] == '{ $.action = "revoke" && $.outcome = "retry" }'
    assert patterns["ErrorLines"] == '{ $.level = "error" }'
    assert (
        'extra={"event_id": event.id, "action": step, "outcome": "retry"'
        in (ROOT / "bot" / "delivery" / "handlers" / "access.py").read_text()
    )


def test_cfn_lint_finds_nothing() -> None:
    """cfn-lint (the dev extra) on both templates: schema, runtime deprecations, intrinsic functions."""
    cfn_lint = BIN / "cfn-lint"
    assert cfn_lint.exists(), "cfn-lint is in the dev extra: make test installs it"
    templates = [str(ROOT / "deploy" / name) for name in ("template.yaml", "activity-role.yaml")]
    result = subprocess.run([str(cfn_lint), *templates], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


SECRETS_SOURCE = (ROOT / "bot" / "aws_secrets.py").read_text()


def secret_actions() -> set[str]:
    """IAM actions of every `client.<operation>(` in bot/aws_secrets.py (a Secrets Manager client)."""
    operations = set(re.findall(r"\bclient\.(\w+)\(", SECRETS_SOURCE))
    assert operations == {"get_secret_value"}
    return {"secretsmanager:" + _camel(op) for op in operations}


def test_templates_have_no_duplicate_keys() -> None:
    for name in ("template.yaml", "activity-role.yaml"):
        yaml.load((ROOT / "deploy" / name).read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate keys"):
        yaml.load("Conditions: {}\nConditions: {}\n", Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def test_sam_build_installs_this_project_and_its_dependencies(template: dict[str, Any]) -> None:
    """`sam build` installs each function's dependencies from requirements.txt in its CodeUri: the locked
    runtime dependencies (tests/test_lock.py checks the lock against pyproject.toml); the project's own
    packages are in the CodeUri, where the handlers import them from."""
    code_uri = template["Globals"]["Function"]["CodeUri"]
    source = (ROOT / "deploy" / code_uri).resolve()
    assert source == ROOT
    requirements = [line.strip() for line in (source / "requirements.txt").read_text().splitlines()]
    assert "-r requirements.lock" in requirements
    assert (source / "requirements.lock").is_file()
    assert (source / "bot" / "__init__.py").is_file() and (source / "store" / "__init__.py").is_file()
    for function in ("HttpFunction", "SweepFunction"):
        handler = template["Resources"][function]["Properties"]["Handler"]
        module, _, name = handler.rpartition(".")
        assert callable(getattr(__import__(module, fromlist=[name]), name))


# -- the activity digest (bot/access/activity.py) ------------------------------------------------------------------

ACTIVITY_SOURCE = (ROOT / "bot" / "access" / "activity.py").read_text()
IAM_PREFIX = {"sts": "sts", "cloudtrail": "cloudtrail"}


def activity_actions() -> dict[str, set[str]]:
    """IAM actions of every `<client>.<operation>(` in activity.py, by the client's service."""
    calls = re.findall(r"\b(sts|cloudtrail)\.(\w+)\(", ACTIVITY_SOURCE)
    actions: dict[str, set[str]] = {}
    for service, op in calls:
        actions.setdefault(service, set()).add(
            f"{IAM_PREFIX[service]}:" + "".join(p.capitalize() for p in op.split("_"))
        )
    return actions


def activity_bot_actions() -> set[str]:
    return activity_actions()["sts"]


def test_activity_action_scan_sees_what_the_code_calls() -> None:
    assert activity_actions() == {"sts": {"sts:AssumeRole"}, "cloudtrail": {"cloudtrail:LookupEvents"}}
    # Clients are made only in gather(), for exactly these two services.
    assert set(re.findall(r'\.client\(\s*"(\w+)"', ACTIVITY_SOURCE)) == {"sts", "cloudtrail"}


def test_bot_may_assume_only_the_activity_roles() -> None:
    (statement,) = [s for s in BOT_POLICY["Statement"] if s.get("Sid") == "BreakglassActivityRoles"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == sorted(activity_bot_actions())
    assert statement["Resource"] == "arn:aws:iam::*:role/breakglass-activity"


@pytest.fixture(scope="module")
def activity_role() -> dict[str, Any]:
    return yaml.load((ROOT / "deploy" / "activity-role.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def test_activity_role_allows_lookup_events_only(activity_role: dict[str, Any]) -> None:
    role = activity_role["Resources"]["ActivityRole"]
    assert role["Type"] == "AWS::IAM::Role"
    assert list(activity_role["Resources"]) == ["ActivityRole"]  # nothing else in the stack
    props = role["Properties"]
    assert "ManagedPolicyArns" not in props and "PermissionsBoundary" not in props
    statements = [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert {a for s in statements for a in _list(s["Action"])} == activity_actions()["cloudtrail"]
    for statement in statements:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        assert statement["Resource"] == "*"  # LookupEvents has no resource-level permissions


def test_activity_role_trusts_only_the_bot(activity_role: dict[str, Any]) -> None:
    props = activity_role["Resources"]["ActivityRole"]["Properties"]
    (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    # Both of the SAM stack's function roles deliver digests (its outputs HttpFunctionRoleArn, SweepFunctionRoleArn)
    assert trust["Principal"] == {
        "AWS": {
            "Fn::If": [
                "HasSecondBotRole",
                [{"Ref": "BotRoleArn"}, {"Ref": "SecondBotRoleArn"}],
                {"Ref": "BotRoleArn"},
            ]
        }
    }
    assert activity_role["Conditions"]["HasSecondBotRole"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SecondBotRoleArn"}, ""]}]
    }
    assert trust["Action"] == "sts:AssumeRole"
    condition = trust["Condition"]["Fn::If"]
    assert condition[0] == "HasExternalId"
    assert condition[1] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert condition[2] == {"Ref": "AWS::NoValue"}
    params = activity_role["Parameters"]
    assert re.fullmatch(
        params["BotRoleArn"]["AllowedPattern"], "arn:aws:iam::123456789012:role/breakglass-bot"
    )
    assert not re.fullmatch(params["BotRoleArn"]["AllowedPattern"], "*")
    assert params["RoleName"]["Default"] == "breakglass-activity"


# -- the identity-center access provider ------------------------------------------------------------------

ACCESS_SOURCE = (ROOT / "bot" / "access" / "identity_center.py").read_text()
SSO_INSTANCE = "arn:aws:sso:::instance/INSTANCE_ID"
SSO_PERMISSION_SET = "arn:aws:sso:::permissionSet/INSTANCE_ID/BREAKGLASS_PERMISSION_SET_ID"
SSO_ACCOUNT = "arn:aws:sso:::account/MANAGED_ACCOUNT_ID"
IDENTITY_STORE = "arn:aws:identitystore::ACCOUNT_ID:identitystore/IDENTITY_STORE_ID"
IDENTITY_STORE_USERS = "arn:aws:identitystore:::user/*"
# Which resources each action is authorised on (Service Authorization Reference, IAM Identity Center and
# Identity Store): assignments on the instance, the permission set and the account.
ACCESS_RESOURCES = {
    "sso:CreateAccountAssignment": {SSO_INSTANCE, SSO_PERMISSION_SET, SSO_ACCOUNT},
    "sso:DeleteAccountAssignment": {SSO_INSTANCE, SSO_PERMISSION_SET, SSO_ACCOUNT},
    "sso:ListAccountAssignments": {SSO_INSTANCE, SSO_PERMISSION_SET, SSO_ACCOUNT},
    "sso:ProvisionPermissionSet": {SSO_INSTANCE, SSO_PERMISSION_SET, SSO_ACCOUNT},
    "sso:DescribePermissionSet": {SSO_INSTANCE, SSO_PERMISSION_SET},
    "sso:GetInlinePolicyForPermissionSet": {SSO_INSTANCE, SSO_PERMISSION_SET},
    "sso:PutInlinePolicyToPermissionSet": {SSO_INSTANCE, SSO_PERMISSION_SET},
    "sso:DeleteInlinePolicyFromPermissionSet": {SSO_INSTANCE, SSO_PERMISSION_SET},
    "sso:DescribeAccountAssignmentCreationStatus": {SSO_INSTANCE},
    "sso:DescribeAccountAssignmentDeletionStatus": {SSO_INSTANCE},
    "sso:DescribePermissionSetProvisioningStatus": {SSO_INSTANCE},
    "identitystore:GetUserId": {IDENTITY_STORE, IDENTITY_STORE_USERS},
}


def _camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def actions_of_access_provider() -> set[str]:
    """IAM actions of every `self._call(self.sso|self.ids, "op", …)` and every polled status operation."""
    calls = re.findall(r'_call\(\s*self\.(sso|ids),\s*"(\w+)"', ACCESS_SOURCE)
    assert calls, "no Identity Center calls found: has bot/access/identity_center.py changed shape?"
    actions = {("sso:" if client == "sso" else "identitystore:") + _camel(op) for client, op in calls}
    polled = set(re.findall(r'"(describe_\w+_status)"', ACCESS_SOURCE))
    actions |= {"sso:" + _camel(op) for op in polled}
    # Nothing may reach the clients except through _call (which is what the scan above sees).
    direct = set(re.findall(r"self\.(?:sso|ids)\.(\w+)\(", ACCESS_SOURCE))
    assert not direct, f"the provider calls a client directly: {direct}"
    return actions


def test_access_scan_sees_what_the_provider_calls() -> None:
    assert actions_of_access_provider() == set(ACCESS_RESOURCES)


def test_bot_policy_grants_exactly_the_access_provider_calls() -> None:
    granted = policy_actions(BOT_POLICY, "sso:") | policy_actions(BOT_POLICY, "identitystore:")
    assert granted == actions_of_access_provider()
    assert not policy_actions(ADMIN_POLICY, "sso:")  # the admin CLI changes no AWS access


def test_access_statements_are_scoped_to_the_instance_and_break_glass_permission_sets() -> None:
    statements = _service_statements(BOT_POLICY, "sso:") + _service_statements(BOT_POLICY, "identitystore:")
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        resources = set(_list(statement["Resource"]))
        for action in _list(statement["Action"]):
            assert "*" not in action
            assert resources == ACCESS_RESOURCES[action], (action, resources)
    everything = {r for s in statements for r in _list(s["Resource"])}
    assert not {r for r in everything if r.endswith("*")} - {IDENTITY_STORE_USERS}


def test_template_access_policy_matches_the_bot_policy(template: dict[str, Any]) -> None:
    resource = template["Resources"]["AccessProviderPolicy"]
    assert resource["Type"] == "AWS::IAM::Policy"
    assert resource["Condition"] == "IdentityCenter"  # provider none: no sso permission at all
    assert template["Conditions"]["IdentityCenter"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "IdentityCenterInstanceArn"}, ""]}]
    }
    props = resource["Properties"]
    assert props["Roles"] == [{"Ref": "HttpFunctionRole"}, {"Ref": "SweepFunctionRole"}]
    statements = props["PolicyDocument"]["Statement"]
    template_sids = {s["Sid"]: set(_list(s["Action"])) for s in statements}
    doc = _service_statements(BOT_POLICY, "sso:") + _service_statements(BOT_POLICY, "identitystore:")
    assert template_sids == {s["Sid"]: set(_list(s["Action"])) for s in doc}
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["BreakglassRequestStatus"]["Resource"] == {"Ref": "IdentityCenterInstanceArn"}
    assert "${BreakglassPermissionSetArns}" in json.dumps(by_sid["BreakglassPermissionSetInlinePolicy"])
    assignment = json.dumps(by_sid["BreakglassAccountAssignments"])
    for parameter in ("IdentityCenterInstanceArn", "BreakglassPermissionSetArns", "BreakglassAccountIds"):
        assert parameter in assignment
    for parameter in ("IdentityCenterInstanceArn", "IdentityStoreId", "BreakglassPermissionSetArns"):
        assert template["Parameters"][parameter]["Default"] == ""


# -- the OCSF audit feed's sinks (bot/audit_feed/sinks.py) ------------------------------------------------

FEED_SOURCE = (ROOT / "bot" / "audit_feed" / "sinks.py").read_text()
# boto3 operation -> IAM action, where the action is not the operation's name
_S3_ACTION = {
    "get_object_lock_configuration": "s3:GetBucketObjectLockConfiguration",
    "list_objects_v2": "s3:ListBucket",
}
FEED_BUCKET = "arn:aws:s3:::AUDIT_FEED_BUCKET"
FEED_OBJECTS = FEED_BUCKET + "/breakglass/*"


def _feed_action(service: str, operation: str) -> str:
    return _S3_ACTION.get(operation) or f"{service}:" + "".join(p.capitalize() for p in operation.split("_"))


def actions_of_audit_feed() -> set[str]:
    """IAM actions of the sinks' calls (`self.client.<op>(` in S3Sink and EventBridgeSink)."""
    s3 = FEED_SOURCE.split("class S3Sink", 1)[1].split("\nclass ", 1)[0]
    events = FEED_SOURCE.split("class EventBridgeSink", 1)[1].split("\n# --", 1)[0]
    actions = {_feed_action("s3", op) for op in re.findall(r"self\.client\.(\w+)\(", s3)}
    actions |= {_feed_action("events", op) for op in re.findall(r"self\.client\.(\w+)\(", events)}
    return actions


def actions_of_verify_s3() -> set[str]:
    """IAM actions of `read_s3` (breakglass-admin verify-audit s3://...)."""
    body = FEED_SOURCE.split("def read_s3(", 1)[1].split("\n# --", 1)[0]
    ops = set(re.findall(r"\bs3\.(\w+)\(", body)) - {"get_paginator"}
    ops |= set(re.findall(r'get_paginator\("(\w+)"\)', body))
    return {_feed_action("s3", op) for op in ops}


def test_audit_feed_scan_sees_what_the_sinks_call() -> None:
    assert actions_of_audit_feed() == {
        "s3:PutObject",
        "s3:GetObject",
        "s3:GetBucketObjectLockConfiguration",
        "events:PutEvents",
    }
    assert actions_of_verify_s3() == {"s3:ListBucket", "s3:GetObject"}


def test_audit_feed_statements_cannot_change_or_delete_a_record() -> None:
    """The bot may add records and read them back, never delete one, change its retention or lock."""
    bot = _service_statements(BOT_POLICY, "s3:") + _service_statements(BOT_POLICY, "events:")
    scopes = {a: set(_list(s["Resource"])) for s in bot for a in _list(s["Action"])}
    assert scopes == {
        "s3:PutObject": {FEED_OBJECTS},
        "s3:GetObject": {FEED_OBJECTS},
        "s3:GetBucketObjectLockConfiguration": {FEED_BUCKET},
        "events:PutEvents": {"arn:aws:events:REGION:ACCOUNT_ID:event-bus/AUDIT_FEED_BUS"},
    }
    admin = {a for s in _service_statements(ADMIN_POLICY, "s3:") for a in _list(s["Action"])}
    assert admin == actions_of_verify_s3()


def test_template_audit_feed_bucket_is_locked_and_its_policies_match(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    bucket = resources["AuditFeedBucket"]
    assert bucket["Condition"] == "AuditFeedBucketWanted" and bucket["DeletionPolicy"] == "Retain"
    props = bucket["Properties"]
    assert props["ObjectLockEnabled"] is True
    retention = props["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention == {"Mode": "COMPLIANCE", "Days": {"Ref": "AuditFeedRetentionDays"}}
    assert all(props["PublicAccessBlockConfiguration"].values())
    for name, prefix in (("AuditFeedBucketPolicy", "s3:"), ("AuditFeedEventsPolicy", "events:")):
        policy = resources[name]["Properties"]
        assert policy["Roles"] == [{"Ref": "HttpFunctionRole"}, {"Ref": "SweepFunctionRole"}]
        mine = {s["Sid"]: set(_list(s["Action"])) for s in policy["PolicyDocument"]["Statement"]}
        assert mine == {s["Sid"]: set(_list(s["Action"])) for s in _service_statements(BOT_POLICY, prefix)}
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert "s3://${AuditFeedBucket}/breakglass" in json.dumps(env["BREAKGLASS_AUDIT_FEED"])
    assert env["BREAKGLASS_AUDIT_FEED_OBJECT_LOCK"] == "required"


# -- the exact-time schedules (bot/schedules.py) --------------------------------------------------------------

SCHEDULES_SOURCE = (ROOT / "bot" / "schedules.py").read_text()
SCHEDULE_GROUP_ARN = "arn:aws:scheduler:REGION:ACCOUNT_ID:schedule/breakglass/*"
SCHEDULER_ROLE_ARN = "arn:aws:iam::ACCOUNT_ID:role/breakglass-scheduler"
SWEEP_ARN_SUB = (
    "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-sweep"
)


def schedule_actions() -> set[str]:
    """IAM actions of every `self.client.<operation>(` in bot/schedules.py (the Scheduler client)."""
    operations = set(re.findall(r"\bself\.client\.(\w+)\(", SCHEDULES_SOURCE))
    assert operations == {"create_schedule", "update_schedule", "delete_schedule"}
    assert SCHEDULES_SOURCE.count(".client(") == 1  # one client, made for "scheduler"
    assert '.client("scheduler"' in SCHEDULES_SOURCE
    return {"scheduler:" + _camel(op) for op in operations}


def test_schedule_statements_are_scoped_to_the_group_and_pass_the_role_to_scheduler_only() -> None:
    scheduler = _service_statements(BOT_POLICY, "scheduler:")
    assert [s["Sid"] for s in scheduler] == ["BreakglassExpirySchedules"]
    (statement,) = scheduler
    assert statement["Effect"] == "Allow" and "Condition" not in statement
    assert set(statement["Action"]) == schedule_actions()
    assert statement["Resource"] == SCHEDULE_GROUP_ARN  # the group's schedules, never another group's
    (passing,) = [s for s in BOT_POLICY["Statement"] if "iam:PassRole" in _list(s["Action"])]
    assert passing["Sid"] == "BreakglassPassSchedulerRole" and passing["Action"] == ["iam:PassRole"]
    assert passing["Resource"] == SCHEDULER_ROLE_ARN
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    assert policy_actions(BOT_POLICY, "iam:") == {"iam:PassRole"}
    assert not policy_actions(ADMIN_POLICY, "scheduler:")


def test_template_schedules_match_the_bot_policy(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    group = resources["ExpiryScheduleGroup"]
    assert group["Type"] == "AWS::Scheduler::ScheduleGroup"
    assert group["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-expiry"}
    policy = resources["ExpirySchedulesPolicy"]
    assert policy["Type"] == "AWS::IAM::Policy" and "Condition" not in policy
    props = policy["Properties"]
    assert props["Roles"] == [{"Ref": "HttpFunctionRole"}, {"Ref": "SweepFunctionRole"}]
    by_sid = {s["Sid"]: s for s in props["PolicyDocument"]["Statement"]}
    doc = {s["Sid"]: s for s in BOT_POLICY["Statement"] if s["Sid"] in by_sid}
    assert set(by_sid) == set(doc) == {"BreakglassExpirySchedules", "BreakglassPassSchedulerRole"}
    for sid, statement in by_sid.items():
        assert statement["Action"] == doc[sid]["Action"] and statement["Effect"] == "Allow"
        assert statement.get("Condition") == doc[sid].get("Condition")
    assert by_sid["BreakglassExpirySchedules"]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/"
        "${ExpiryScheduleGroup}/*"
    }
    assert by_sid["BreakglassPassSchedulerRole"]["Resource"] == {"Fn::GetAtt": ["ExpirySchedulerRole", "Arn"]}


def test_template_scheduler_role_is_trusted_by_scheduler_and_may_invoke_the_sweep_only(
    template: dict[str, Any],
) -> None:
    role = template["Resources"]["ExpirySchedulerRole"]
    assert role["Type"] == "AWS::IAM::Role"
    props = role["Properties"]
    assert "ManagedPolicyArns" not in props
    (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow" and trust["Action"] == "sts:AssumeRole"
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    # the confused deputy: only this account's schedules of this group may use it
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(
        ":schedule/${AWS::StackName}-expiry/*"
    )
    (statement,) = [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statement["Effect"] == "Allow" and statement["Action"] == ["lambda:InvokeFunction"]
    assert statement["Resource"] == {"Fn::Sub": SWEEP_ARN_SUB}


def test_template_wires_the_schedules_to_the_sweep_function(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["BREAKGLASS_SCHEDULER_TARGET_ARN"] == {"Fn::Sub": SWEEP_ARN_SUB}
    assert env["BREAKGLASS_SCHEDULER_ROLE_ARN"] == {"Fn::GetAtt": ["ExpirySchedulerRole", "Arn"]}
    assert env["BREAKGLASS_SCHEDULER_GROUP"] == {"Ref": "ExpiryScheduleGroup"}
    assert {name.lower() for name in env if name.startswith("BREAKGLASS_SCHEDULER_")} <= set(
        Settings.model_fields
    )
    sweep = template["Resources"]["SweepFunction"]["Properties"]
    assert sweep["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-sweep"}  # the ARN the schedules invoke
    # a schedule fires up to two minutes early and its invocation waits for the due time, then revokes
    from bot import lambda_handler, schedules

    assert sweep["Timeout"] >= schedules.MAX_EARLY.total_seconds() + lambda_handler.FIRE_MARGIN

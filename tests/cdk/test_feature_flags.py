"""cdk.json opts into every feature flag the installed aws-cdk-lib recommends for new
projects (what ``cdk init`` writes), with the recommended value, so that a library upgrade
that adds a flag fails here instead of leaving the app on old behaviour unnoticed.
docs/DEPLOY.md ("Feature flags") says what the flags changed for a deployed stack."""

from __future__ import annotations

import json
import tarfile
from importlib import resources
from typing import Any

import app as cdk_app


def recommended_flags() -> dict[str, Any]:
    """The recommended values shipped inside the installed aws-cdk-lib's jsii assembly
    (package/recommended-feature-flags.json, the list ``cdk init`` copies)."""
    [bundle] = [entry for entry in resources.files("aws_cdk._jsii").iterdir()
                if entry.name.startswith("aws-cdk-lib@") and entry.name.endswith(".jsii.tgz")]
    with resources.as_file(bundle) as path, tarfile.open(path) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        return json.load(member)


def test_cdk_json_sets_every_recommended_flag_to_its_recommended_value() -> None:
    flags = recommended_flags()
    # The list is the flag list (not an empty or renamed file): a flag the app relies on.
    assert flags["@aws-cdk/aws-iam:minimizePolicies"] is True and len(flags) > 50
    context = cdk_app.file_context()
    wrong = {name: (context.get(name, "unset"), value) for name, value in flags.items()
             if context.get(name, "unset") != value}
    assert wrong == {}, "cdk.json differs from aws-cdk-lib's recommendation: (ours, theirs)"

"""The cluster configs in ``cluster/`` are valid for the tools that read them: the ``ray up`` config against the
schema the installed Ray ships (after Ray fills in its provider defaults), the KubeRay manifests against the
OpenAPI schemas of KubeRay's CRDs (a copy under ``tests/cluster_config/schemas``, see its README) — strictly:
a field the schema does not know (a typo Kubernetes would silently prune) fails too. No credentials in them."""
from __future__ import annotations

import copy
import gzip
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
SCHEMAS = Path(__file__).resolve().parent / "cluster_config" / "schemas"
MANIFESTS = {"kuberay/raycluster.yaml": "rayclusters", "kuberay/rayjob.yaml": "rayjobs"}
SECRETS = ("aws_access_key_id", "aws_secret_access_key", "AWS_SECRET", "password", "BEGIN RSA")
TOKEN = re.compile(r"\b[0-9a-f]{64}\b")  # a Ray auth token's shape


def _schema(kind: str) -> dict:
    return json.loads(gzip.decompress((SCHEMAS / f"kuberay-v1.7.0-{kind}-v1.json.gz").read_bytes()))


def unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Keys of ``value`` that ``schema`` has no property for (where it does not keep unknown fields)."""
    out: list[str] = []
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                out += unknown_fields(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(item, extra, f"{path}.{key}")
            elif props is not None:
                out.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def _load(relative: str) -> dict:
    return yaml.safe_load((CLUSTER / relative).read_text())


@pytest.mark.parametrize("relative,kind", MANIFESTS.items())
def test_kuberay_manifest_matches_the_crd_schema(relative, kind):
    manifest, schema = _load(relative), _schema(kind)
    jsonschema.Draft7Validator(schema).validate(manifest)
    assert unknown_fields(manifest, schema) == []
    cluster = manifest["spec"] if kind == "rayclusters" else manifest["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"  # token authentication stays on
    assert cluster["rayVersion"] == ray.__version__  # the images' Ray is the one the project is tested with


def test_the_strict_check_catches_a_misspelled_field():
    manifest, schema = _load("kuberay/raycluster.yaml"), _schema("rayclusters")
    bad = copy.deepcopy(manifest)
    bad["spec"]["headGroupSpec"]["rayStartParam"] = bad["spec"]["headGroupSpec"].pop("rayStartParams")
    assert unknown_fields(bad, schema) == [".spec.headGroupSpec.rayStartParam"]
    bad = copy.deepcopy(manifest)
    bad["spec"]["authOptions"]["mode"] = "tokens"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


def test_rayjob_entrypoint_runs_a_shipped_workflow():
    words = shlex.split(_load("kuberay/rayjob.yaml")["spec"]["entrypoint"])
    assert words[:2] == ["autosrh-ray", "run"]
    assert (ROOT / "workflows" / Path(words[2]).name).is_file() and words[2].startswith("/home/ray/autosrh_ray/")
    assert "--output" in words and words[words.index("--output") + 1].startswith("/mnt/data/")


def test_ray_up_config_is_valid_for_the_installed_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("aws.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {}  # the head runs the driver and Ray Data
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2 and " stop" not in starts  # never ends other Ray processes
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token from your machine


@pytest.mark.parametrize("relative", ["aws.yaml", *MANIFESTS])
def test_no_credentials_in_cluster_files(relative):
    text = (CLUSTER / relative).read_text()
    assert not [s for s in SECRETS if s in text] and not TOKEN.search(text)

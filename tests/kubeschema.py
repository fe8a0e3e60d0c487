"""Validate objects against the Kubernetes OpenAPI schema bundled with kubernetes-validate.

``kubernetes_validate.validate`` finds a schema by kind and apiVersion; the meta/v1
kinds the API server sends on errors and in watch streams (``Status``,
``WatchEvent``) are looked up here by file name with the same resolver setup.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema
import kubernetes_validate
import referencing

VERSION = "1.37"  # the newest Kubernetes minor the installed kubernetes-validate knows


def validate(obj: dict[str, Any]) -> None:
    """Raise ``kubernetes_validate.ValidationError`` unless ``obj`` is a valid object (strict)."""
    kubernetes_validate.validate(obj, VERSION, strict=True)


def validate_as(obj: dict[str, Any], schema: str) -> None:
    """Validate against a schema file by name, e.g. ``status-meta-v1`` (strict)."""
    version = kubernetes_validate.utils.latest_version()
    root = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    contents = json.loads((root / f"{schema}.json").read_text())
    definitions = json.loads((root / "_definitions.json").read_text())
    registry = referencing.Resource.from_contents(contents) @ referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ registry
    jsonschema.Draft202012Validator(contents, registry=registry).validate(obj)

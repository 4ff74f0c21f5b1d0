# SPDX-License-Identifier: MIT
"""The OpenAPI documents of interfaces/ (keys.yaml …), checked against real answers of the gateway.

    doc = OpenApi("interfaces/keys.yaml")
    doc.operation("GET", "/key/a%2Fb")          # ("/key/{keyId}", the operation)
    doc.response_errors("GET", "/key/k", response, request_body)   # [] when it is as documented

Needs python3-yaml (PyYAML).
"""

import base64
import json
import re

import yaml


class OpenApi:
    """interfaces/keys.yaml, and a validator for the subset of OpenAPI 3.0 the file uses: $ref
    within the document; type object and string; properties, required, enum, pattern, format
    byte (strict base64), nullable, allOf, oneOf. The objects of responses are closed: a member
    the schema does not name is an error, since the gateway answers exactly what the document
    says (requests may carry more: upstream ignores unknown members). A keyword outside that
    subset is an error too, so that the document cannot outgrow its check unnoticed."""

    KEYWORDS = {"$ref", "type", "properties", "required", "enum", "pattern", "format",
                "nullable", "allOf", "oneOf", "description", "additionalProperties"}
    METHODS = ("get", "post", "put", "delete")

    def __init__(self, path):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.operations = {}
        for template, item in self.doc["paths"].items():
            regex = re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part)
                                       for part in re.split(r"(\{[^}]+\})", template)))
            for method in self.METHODS:
                if method in item:
                    self.operations[(method.upper(), template)] = (regex, item[method])

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"unsupported $ref {ref}")
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part]
        return node

    def operation(self, method, raw_path):
        """(template, operation) of the operation for a request, or (None, None)."""
        for (m, template), (regex, op) in self.operations.items():
            if m == method and regex.fullmatch(raw_path):
                return template, op
        return None, None

    def errors(self, schema, value, where="$", closed=True):
        out = []
        self._check(schema, value, where, out, closed)
        return out

    def _check(self, schema, value, where, out, closed):
        schema = self.resolve(schema)
        unsupported = set(schema) - self.KEYWORDS
        if unsupported:
            raise ValueError(f"{where}: keywords {sorted(unsupported)} are not supported")
        if value is None and schema.get("nullable"):
            return
        for sub in schema.get("allOf", []):
            self._check(sub, value, where, out, closed)
        if "oneOf" in schema:
            matches = sum(not self.errors(sub, value, where, closed) for sub in schema["oneOf"])
            if matches != 1:
                out.append(f"{where}: matches {matches} of the oneOf schemas")
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                out.append(f"{where}: {value!r} is not an object")
                return
            properties = schema.get("properties", {})
            for name in schema.get("required", []):
                if name not in value:
                    out.append(f"{where}: {name!r} is missing")
            for name, member in value.items():
                if name in properties:
                    self._check(properties[name], member, f"{where}.{name}", out, closed)
                elif closed and not schema.get("additionalProperties", False):
                    out.append(f"{where}: {name!r} is not in the schema")
        elif kind == "string":
            if not isinstance(value, str):
                out.append(f"{where}: {value!r} is not a string")
                return
            if "enum" in schema and value not in schema["enum"]:
                out.append(f"{where}: {value!r} is not one of {schema['enum']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                out.append(f"{where}: {value!r} does not match {schema['pattern']}")
            if schema.get("format") == "byte":
                try:
                    base64.b64decode(value, validate=True)
                except ValueError:
                    out.append(f"{where}: {value[:40]!r} is not padded standard base64")
        elif kind is not None:
            raise ValueError(f"{where}: type {kind} is not supported")
        elif value is None and not schema.get("nullable"):
            out.append(f"{where}: null is not allowed")

    def response_errors(self, method, raw_path, response, request_body=None):
        """What is wrong with a real response (and, for a success, with its request) by the
        document: an undocumented status, a body off its schema."""
        template, op = self.operation(method, raw_path)
        if op is None:
            # No such operation: the generic answers of the description (404, 400).
            if response.status not in (400, 404):
                return [f"{response.status} for {method} {raw_path}, which has no operation"]
            return self.errors({"$ref": "#/components/schemas/Error"}, json.loads(response.body))
        documented = op["responses"].get(str(response.status))
        if documented is None:
            return [f"{response.status} is not documented for {method} {template}"]
        documented = self.resolve(documented)
        problems = []
        if "content" not in documented:
            if response.body:
                problems.append(f"{method} {template} {response.status}: a body, none documented")
        else:
            schema = documented["content"]["application/json"]["schema"]
            problems += self.errors(schema, json.loads(response.body))
        if response.status < 300 and request_body is not None and "requestBody" in op:
            schema = self.resolve(op["requestBody"])["content"]["application/json"]["schema"]
            problems += [f"request: {p}"
                         for p in self.errors(schema, request_body, closed=False)]
        return problems

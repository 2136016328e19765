#!/usr/bin/env python3
"""Generates the chart's README.md from Chart.yaml and the `# --` comments of values.yaml, in the
format of helm-docs (https://github.com/norwoodj/helm-docs) and by its rules:

- a `# --` comment directly above a key documents it; following `#` lines continue it; a
  description starting with `(type)` overrides the type; `# @default -- text` overrides the default;
- a documented map or list is one row (its value as JSON), and below it only keys with their own
  `# --` comment get rows; anywhere else every leaf gets a row, documented or not;
- rows are sorted by key, `global.*` first; defaults are the values as compact JSON in backticks
  (`nil` for null).

helm-docs itself is a Go binary that no package registry used here carries, hence this script,
written from helm-docs' source (pkg/document/values.go, pkg/helm/chart_info.go). Running the real
helm-docs on the chart should give the same values table; that could not be tried here.

Usage: helm_docs.py --write   rewrite deploy/helm/fulfillment/README.md
       helm_docs.py --check   exit 1 (with a diff) when README.md is not what --write would write
"""

import difflib
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "fulfillment")
README = os.path.join(CHART, "README.md")

DESCRIPTION = re.compile(r"^\s*#\s*(.*)\s+--\s*(.*)$")
CONTINUATION = re.compile(r"^\s*#(\s?)(.*)$")
DEFAULT = re.compile(r"^\s*# @default -- (.*)$")
TYPE = re.compile(r"^\((.*?)\)\s*(.*)$")


def head_comment(lines, line):
    """The comment lines directly above a 0-based line (no blank line in between)."""
    block = []
    i = line - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        block.insert(0, lines[i])
        i -= 1
    return block


def parse_comment(block):
    """(description, type, default) of a `# --` comment block, or None."""
    starts = [i for i, line in enumerate(block) if line.strip().startswith("# --")]
    if not starts:
        return None
    block = block[starts[-1]:]
    m = DESCRIPTION.match(block[0])
    if not m or m.group(1):
        return None
    description, kind, default = m.group(2), "", ""
    t = TYPE.match(description)
    if t and t.group(1):
        kind, description = t.group(1), t.group(2)
    for line in block[1:]:
        d = DEFAULT.match(line)
        if d:
            default = d.group(1)
            continue
        c = CONTINUATION.match(line)
        if c:
            description += " " + c.group(2)
    return description.strip(), kind, default


def plain(node):
    """A node's value as helm-docs' JSON sees it."""
    if isinstance(node, yaml.MappingNode):
        return {k.value: plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [plain(v) for v in node.value]
    return yaml.safe_load(yaml.serialize(node))


def type_of(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def row(key, value, doc):
    description, kind, default = doc or ("", "", "")
    if value is None:
        return key, kind or "string", default or "`nil`", description
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return key, kind or type_of(value), default or f"`{text}`", description


def rows(lines, prefix, key_node, node, document_leaves):
    doc = parse_comment(head_comment(lines, key_node.start_mark.line)) if key_node is not None else None
    out = []
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if not node.value:
            if prefix and (document_leaves or doc):
                out.append(row(prefix, plain(node), doc))
            return out
        if doc:
            out.append(row(prefix, plain(node), doc))
            document_leaves = False
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f'"{k.value}"' if ("." in k.value or " " in k.value) else k.value
                out += rows(lines, f"{prefix}.{name}" if prefix else name, k, v, document_leaves)
        else:
            for i, v in enumerate(node.value):
                out += rows(lines, f"{prefix}[{i}]", v, v, document_leaves)
        return out
    if document_leaves or doc:
        out.append(row(prefix, plain(node), doc))
    return out


def generate():
    with open(os.path.join(CHART, "values.yaml")) as f:
        text = f.read()
    lines = text.splitlines()
    table = rows(lines, "", None, yaml.compose(text), True)
    table.sort(key=lambda r: (not r[0].startswith("global."), r[0]))
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    badge = "https://img.shields.io/badge/{0}-{1}-informational?style=flat-square"
    out = [f"# {chart['name']}", ""]
    out.append(" ".join([
        f"![Version: {chart['version']}]({badge.format('Version', chart['version'].replace('-', '--'))})",
        f"![Type: {chart['type']}]({badge.format('Type', chart['type'])})",
        f"![AppVersion: {chart['appVersion']}]({badge.format('AppVersion', chart['appVersion'].replace('-', '--'))})",
    ]))
    out += ["", chart["description"], "", f"**Homepage:** <{chart['home']}>", ""]
    out += ["## Maintainers", "", "| Name | Email | URL |", "| ---- | ------ | --- |"]
    for m in chart.get("maintainers", []):
        email = f"<{m['email']}>" if m.get("email") else ""
        url = f"<{m['url']}>" if m.get("url") else ""
        out.append(f"| {m['name']} | {email} | {url} |")
    out += ["", "## Source Code", ""] + [f"* <{s}>" for s in chart.get("sources", [])]
    out += ["", "## Requirements", "", f"Kubernetes: `{chart['kubeVersion']}`", ""]
    out += ["## Values", "", "| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    out += [f"| {k} | {t} | {d} | {desc} |" for k, t, d, desc in table]
    out += ["", "Generated from values.yaml by tests/chart/helm_docs.py (helm-docs format); do not edit by hand.", ""]
    return "\n".join(out)


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("--write", "--check"):
        raise SystemExit(__doc__)
    text = generate()
    if sys.argv[1] == "--write":
        with open(README, "w") as f:
            f.write(text)
        return
    current = open(README).read() if os.path.exists(README) else ""
    if current != text:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   "README.md", "generated"))
        raise SystemExit("deploy/helm/fulfillment/README.md is out of date: run python3 tests/chart/helm_docs.py --write")
    values = text.split("## Values", 1)[1]
    undocumented = [line for line in values.splitlines() if line.startswith("| ") and line.endswith("|  |")]
    if undocumented:
        raise SystemExit("values without a `# --` comment:\n" + "\n".join(undocumented))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Lints the add-on the way Home Assistant's add-on linter (frenck/action-addon-linter) does.

    lint-addon.py [REPO_DIR] [--schemas DIR]     (default: REPO_DIR/tests/fixtures/addon-schema)

- config.yaml against the linter's JSON schema (Draft 7, formats not enforced, as lint.py does),
  plus lint.py's extra checks: keys set to their default value, deprecated arches, ingress rules,
  full_access, advanced, obsolete keys, cold backups, the legacy config map;
- repository.yaml against the repository schema;
- Vigil's own rules: version equals Cargo.toml's, every option and schema key has a name and a
  description in translations/en.yaml, no other config.*/build.*/repository.* file that the
  Supervisor would take for an add-on, its build file or the repository's file, the files the
  add-on store shows exist (icon, logo, DOCS, CHANGELOG).

Also proves the validator itself handles the `services` pattern's Python named groups:
`mqtt:want` must pass and `mqtt:wish` must fail.

Exit status 0 when clean, 1 with every error printed.
"""

import argparse
import json
import os
import pathlib
import re
import struct
import sys

import jsonschema
import yaml

DEPRECATED_ARCHES = {"armhf", "armv7", "i386"}
# Whose files the Supervisor finds with a recursive glob (`**/<stem>.*`, last suffix one of these).
SUPERVISOR_STEMS = ("config", "build", "repository")
SUPERVISOR_SUFFIXES = (".json", ".yaml", ".yml")


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def schema_errors(instance, schema):
    validator = jsonschema.Draft7Validator(schema)  # no format checker: lint.py passes none
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


def default_value_errors(config, schema):
    errors = []
    for key, value in config.items():
        prop = schema.get("properties", {}).get(key)
        if prop is not None and "default" in prop and value == prop["default"]:
            errors.append(f"'{key}' should be removed, it uses a default value")
    return errors


def linter_checks(config):
    """lint.py's checks beyond the schema (frenck/action-addon-linter src/lint.py)."""
    errors, warnings = [], []
    for arch in config.get("arch", []):
        if arch in DEPRECATED_ARCHES:
            warnings.append(f"arch '{arch}' is no longer supported as of Home Assistant 2025.12")
    if config.get("ingress"):
        if "webui" in config:
            errors.append("'webui' should be removed, Ingress is enabled")
        if config.get("ingress_port") == 0 and not config.get("host_network"):
            errors.append("'ingress_port' 0 needs host_network")
    if config.get("full_access"):
        if any(config.get(k) for k in ("devices", "gpio", "uart", "usb")):
            errors.append("'full_access' together with devices/gpio/uart/usb")
        else:
            warnings.append("'full_access': use a more specific permission if you can")
    if "advanced" in config:
        warnings.append("'advanced' is slated for deprecation")
    for key in ("auto_uart", "watchdog", "codenotary"):
        if key in config:
            errors.append(f"'{key}' is obsolete")
    if any(":" in str(d) for d in config.get("devices", [])):
        errors.append("'devices' entries must not contain ':'")
    if "tmpfs" in config and not isinstance(config["tmpfs"], bool):
        errors.append("'tmpfs' must be a boolean")
    if config.get("backup") == "cold" and ("backup_pre" in config or "backup_post" in config):
        errors.append("'backup_pre'/'backup_post' do nothing with cold backups")
    maps = [m for m in config.get("map", []) if isinstance(m, str)]
    if any(m.split(":")[0] == "config" for m in maps):
        if any(m.split(":")[0].startswith(("homeassistant_config", "addon_config")) for m in maps):
            errors.append("legacy 'config' map together with homeassistant_config/addon_config")
        else:
            warnings.append("'config' in map is deprecated")
    return errors, warnings


def cargo_version(repo):
    text = (repo / "Cargo.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return match.group(1) if match else None


def translation_errors(config, translations):
    errors = []
    entries = (translations or {}).get("configuration", {})
    for key in set(config.get("schema", {})) | set(config.get("options", {})):
        entry = entries.get(key)
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("description"):
            errors.append(f"translations/en.yaml: option '{key}' needs a name and a description")
    for key in entries:
        if key not in config.get("schema", {}):
            errors.append(f"translations/en.yaml: '{key}' is not an option in config.yaml")
    return errors


def stray_addon_files(repo):
    """Files the Supervisor would read as an add-on (`**/config.*`, not below a directory named
    rootfs or starting with '.'), as its build file (`**/build.*`) or as the repository's file
    (`**/repository.*`): supervisor/store/data.py and utils/common.py find_one_filetype."""
    found = []
    for root, dirs, files in os.walk(repo):
        rel_root = pathlib.Path(root).relative_to(repo)
        if rel_root == pathlib.Path("."):
            dirs[:] = [d for d in dirs if d not in (".git", "target", "node_modules")]
        for name in files:
            rel = rel_root / name
            stem = name.split(".", 1)[0]
            if "." not in name or stem not in SUPERVISOR_STEMS:
                continue
            if pathlib.Path(name).suffix not in SUPERVISOR_SUFFIXES:
                continue
            hidden = any(p.startswith(".") or p == "rootfs" for p in rel.parts)
            if stem == "config" and hidden:
                continue
            if str(rel) not in ("config.yaml", "repository.yaml"):
                found.append(str(rel))
    return [f"{f}: the Supervisor would read this as an add-on file; rename it" for f in sorted(found)]


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def store_files(repo):
    errors = []
    for name in ("DOCS.md", "CHANGELOG.md", "README.md", "icon.png", "logo.png", "Dockerfile"):
        if not (repo / name).is_file():
            errors.append(f"{name} is missing")
    if (repo / "icon.png").is_file() and png_size(repo / "icon.png") != (128, 128):
        errors.append(f"icon.png must be a 128x128 PNG, is {png_size(repo / 'icon.png')}")
    return errors


def self_test(schema):
    """The services pattern uses Python named groups; make sure this validator honours them."""
    base = {"name": "x", "version": "1", "slug": "x", "description": "x", "arch": ["amd64"]}
    good = schema_errors({**base, "services": ["mqtt:want"]}, schema)
    bad = schema_errors({**base, "services": ["mqtt:wish"]}, schema)
    errors = []
    if good:
        errors.append(f"self-test: 'mqtt:want' should pass the schema: {good}")
    if not bad:
        errors.append("self-test: 'mqtt:wish' should fail the schema")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", nargs="?", default=".")
    parser.add_argument("--schemas", default=None, help="dir with addon-config.schema.json etc.")
    args = parser.parse_args()
    repo = pathlib.Path(args.repo).resolve()
    schemas = pathlib.Path(args.schemas or repo / "tests" / "fixtures" / "addon-schema")
    config_schema = json.loads((schemas / "addon-config.schema.json").read_text(encoding="utf-8"))
    repo_schema = json.loads((schemas / "addon-repository.schema.json").read_text(encoding="utf-8"))

    config = load_yaml(repo / "config.yaml")
    errors, warnings = [], []
    errors += self_test(config_schema)
    errors += [f"config.yaml: {e}" for e in schema_errors(config, config_schema)]
    errors += [f"config.yaml: {e}" for e in default_value_errors(config, config_schema)]
    more_errors, more_warnings = linter_checks(config)
    errors += [f"config.yaml: {e}" for e in more_errors]
    warnings += [f"config.yaml: {w}" for w in more_warnings]
    errors += [
        f"repository.yaml: {e}"
        for e in schema_errors(load_yaml(repo / "repository.yaml"), repo_schema)
    ]
    version = cargo_version(repo)
    if str(config.get("version")) != version:
        errors.append(f"config.yaml: version {config.get('version')!r} != Cargo.toml's {version!r}")
    errors += translation_errors(config, load_yaml(repo / "translations" / "en.yaml"))
    errors += stray_addon_files(repo)
    errors += store_files(repo)

    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}")
    if errors:
        print(f"add-on lint: {len(errors)} error(s)")
        return 1
    print("add-on lint: config.yaml, repository.yaml and translations are clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())

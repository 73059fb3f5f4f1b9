"""`make ts-check`: generate imagery.v1 for TypeScript with buf.gen.yaml's own options
(managed mode and the protoc-gen-es plugin, from clients/typescript/node_modules) and
type-check the result with tsc. The Go plugins are left out: they are not installed here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "clients/typescript"
BIN = Path(sys.executable).parent


def main() -> int:
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    plugins = [p for p in template["plugins"] if p["local"].endswith("protoc-gen-es")]
    if len(plugins) != 1:
        print("buf.gen.yaml names no protoc-gen-es plugin", file=sys.stderr)
        return 1
    out = HERE / "gen"
    shutil.rmtree(out, ignore_errors=True)
    template["plugins"] = [{**plugins[0], "out": str(out.relative_to(ROOT))}]
    subprocess.run(
        [BIN / "buf", "generate", "--template", json.dumps(template)], cwd=ROOT, check=True
    )
    generated = sorted(out.rglob("*_pb.ts"))
    if not generated:
        print("protoc-gen-es generated nothing", file=sys.stderr)
        return 1
    subprocess.run([BIN / "node", HERE / "node_modules/typescript/bin/tsc", "-p", HERE], check=True)
    print(f"ts-check: {len(generated)} TypeScript files generated and type-checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())

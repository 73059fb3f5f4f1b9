"""imagery-client as an adopting team installs it: the wheel alone, in a clean virtualenv with
exactly the oldest grpcio, protobuf and googleapis-common-protos it declares (binary wheels,
CI's Python), without any server package. Everything imports there without a warning, the
fake and both clients work there, and the README's example, pasted as it is, runs there
against the real stack."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests import images
from tests.client_package import build_wheel, declared_floors, floor_venv, installed, readme_example
from tests.e2e.client.conftest import Stack

pytestmark = pytest.mark.e2e

IMPORT_EVERYTHING = """
import importlib, pathlib, pkgutil
import grpc, google.protobuf
import imagery.client, imagery.v1
names = [m.name for m in pkgutil.walk_packages(imagery.client.__path__, "imagery.client.")]
names += [m.name for m in pkgutil.iter_modules(imagery.v1.__path__, "imagery.v1.")]
for name in names:
    importlib.import_module(name)
for package in (imagery.client, imagery.v1):
    assert (pathlib.Path(package.__path__[0]) / "py.typed").exists(), package
try:
    import imagery.common
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the server library is importable")
print(len(names), grpc.__version__, google.protobuf.__version__)
"""

# What a team's test does with the fake, sync and async, on the floors (no Pillow there: a
# PNG made by hand).
WITH_THE_FAKE = """
import asyncio, struct, urllib.request, zlib
from imagery.client import errors
from imagery.client.testing import FakeImageryServer
from imagery.v1.upload_service_pb2 import CreateUploadUrlRequest

def png(width, height):
    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    rows = b"".join(b"\\0" + b"\\xff\\x80\\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))

with FakeImageryServer() as fake:
    with fake.client() as imagery:
        image_id = imagery.upload(png(640, 480), "image/png")
        image = imagery.wait_ready(image_id, timeout=10)
        url = imagery.download_urls([image_id], ["small"])[image_id]["small"]
        with urllib.request.urlopen(url) as answer:
            assert answer.status == 200
        try:
            imagery.get_image("01M8V3JB6V38XGKQHBEKP3VZFZ")
        except errors.ImageNotFound:
            pass
        else:
            raise SystemExit("get_image of an unknown id did not raise ImageNotFound")
        fake.inject_error("GetImage", "UNAVAILABLE")
        assert imagery.get_image(image_id).width == 640
        fake.inject_error("CreateUploadUrl", "UNAVAILABLE", lost_answer=True)
        request = CreateUploadUrlRequest(content_type="image/png", file_name="x.png")
        imagery.upload_stub.CreateUploadUrl(request)  # retried with the channel's request id
        listed = imagery.list_images(filter="status = READY OR (status = PENDING)")
        assert fake.calls("CreateUploadUrl") == 3 and len(list(listed)) == 2

    async def main():
        async with fake.async_client() as imagery:
            image_id = await imagery.upload(png(20, 10), "image/png")
            image = await imagery.wait_ready(image_id, timeout=10)
            return image.width, image.height

    print(image.width, image.height, asyncio.run(main()))
"""


@pytest.fixture(scope="module")
def floor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("client-wheel")
    return floor_venv(build_wheel(where / "dist"), where / "venv")


def _run(python: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """`python -W error ...` in `cwd`, with none of this repository on its path."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    done = subprocess.run(
        [str(python), "-W", "error", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_clean_venv_holds_the_client_and_its_floors_and_nothing_else(
    floor_python: Path, tmp_path: Path
) -> None:
    floors = declared_floors()
    assert set(floors) == {"grpcio", "protobuf", "googleapis-common-protos"}
    assert installed(floor_python) == {"imagery-client": "0.1.0", **floors}
    count, grpc_version, protobuf_version = _run(
        floor_python, "-c", IMPORT_EVERYTHING, cwd=tmp_path
    ).split()
    assert int(count) >= 20
    assert (grpc_version, protobuf_version) == (floors["grpcio"], floors["protobuf"])


def test_the_fake_and_both_clients_work_on_the_floors(floor_python: Path, tmp_path: Path) -> None:
    output = _run(floor_python, "-c", WITH_THE_FAKE, cwd=tmp_path)
    assert output.split() == ["640", "480", "(20,", "10)"]


def test_the_readme_example_works_as_pasted(
    floor_python: Path, imagery_stack: Stack, tmp_path: Path
) -> None:
    readme, code = readme_example()
    assert len(code.strip().splitlines()) <= 20, f"{readme}: the example should stay short"
    (tmp_path / "cat.png").write_bytes(images.png(640, 480))
    (tmp_path / "example.py").write_text(code)
    env = {
        "IMAGERY_API_KEY": imagery_stack.api_key,
        "IMAGERY_UPLOAD_ADDRESS": imagery_stack.upload_address,
        "IMAGERY_DELIVERY_ADDRESS": imagery_stack.delivery_address,
    }
    printed = _run(floor_python, "example.py", cwd=tmp_path, env=env)
    image_id, width, height, url = printed.split()
    assert re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", image_id), printed
    assert (width, height) == ("640", "480")
    assert url.startswith(f"{imagery_stack.edge}/variants/") and "/small.webp?" in url
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"] == "image/webp"

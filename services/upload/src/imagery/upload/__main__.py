"""python -m imagery.upload: start UploadService, stop on SIGTERM."""

from imagery.common.runner import run_service
from imagery.upload.bootstrap import build_server
from imagery.upload.config import load_settings

if __name__ == "__main__":
    run_service("upload", load_settings, build_server)

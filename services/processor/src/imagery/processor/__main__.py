"""python -m imagery.processor: consume upload events until SIGTERM."""

from imagery.common.runner import run_service
from imagery.processor.bootstrap import build_processor
from imagery.processor.config import load_settings

if __name__ == "__main__":
    run_service("processor", load_settings, build_processor)

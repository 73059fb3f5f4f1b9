"""python -m imagery.delivery: start DeliveryService, stop on SIGTERM."""

from imagery.common.runner import run_service
from imagery.delivery.bootstrap import build_server
from imagery.delivery.config import load_settings

if __name__ == "__main__":
    run_service("delivery", load_settings, build_server)

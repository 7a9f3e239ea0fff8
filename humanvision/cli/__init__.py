"""``humanvision`` command line. Commands live one per module and register themselves on :data:`app`.

Heavy imports (torch, cv2, ...) happen inside the commands so that ``humanvision --help`` is instant.
"""

from humanvision.cli.app import app
from humanvision.cli import env  # noqa: F401  (registers commands)


def main() -> None:
    app()


__all__ = ["app", "main"]

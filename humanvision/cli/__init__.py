"""``humanvision`` command line. Commands live one per module and register themselves on :data:`app`.

Heavy imports (torch, cv2, ...) happen inside the commands so that ``humanvision --help`` is instant.
"""

from humanvision.cli import (
    env,  # noqa: F401  (registers commands)
    evaluate_coco,  # noqa: F401
    evaluate_pose,  # noqa: F401
    export,  # noqa: F401
    pose,  # noqa: F401
    synth,  # noqa: F401
    triangulate,  # noqa: F401
)
from humanvision.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]

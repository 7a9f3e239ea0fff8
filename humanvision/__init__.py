"""humanvision: human-centric perception on PyTorch 2.x.

Sub-packages are laid out by concept (see README): ``skeletons``, ``geometry``, ``data``, ``codecs``, ``models``,
``methods``, ``engine``, ``metrics``, ``viz`` and ``cli``. Import what you need by name; nothing heavy is imported
here so ``import humanvision`` stays fast.
"""

__version__ = "0.1.0"

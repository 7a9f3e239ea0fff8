"""humanvision.methods: each seed method readable top to bottom (model + loss + codec + inference).

:mod:`~humanvision.methods.topdown` (top-down heatmaps: ViTPose, SimpleBaseline, HRNet, the demo),
:mod:`~humanvision.methods.pct` (PCT: tokenizer, token classifier, reconstruction evaluation),
:mod:`~humanvision.methods.monocular3d` (Zhou et al.: 2D heatmaps + depth, the geometric bone loss, three stages),
:mod:`~humanvision.methods.algebraic` (learnable triangulation, algebraic: learned view confidences + weighted DLT),
:mod:`~humanvision.methods.volumetric` (learnable triangulation, volumetric: unprojected features + V2V)
and :mod:`~humanvision.methods.triangulate` (the ``humanvision triangulate`` pipeline for calibrated cameras).
"""

"""humanvision.methods: each seed method readable top to bottom (model + loss + codec + inference).

:mod:`~humanvision.methods.topdown` (top-down heatmaps: ViTPose, SimpleBaseline, HRNet, the demo) and
:mod:`~humanvision.methods.pct` (PCT: tokenizer, token classifier, reconstruction evaluation).
"""

"""The evaluate stage: FeatureNeRF's 2D/3D keypoint and part transfer protocols and NVS.

Modules: :mod:`.pairs` (evaluation pairs), :mod:`.metrics` (pure numpy metrics),
:mod:`.features` (feature extractors: NeRF internal / distilled head, 2D teacher baseline),
:mod:`.tasks` (per-pair task loops), :mod:`.stage` (``EvaluateConfig``, ``run_evaluate_stage``)
and :mod:`.report` (the HTML report).
"""

"""Render stage: shape sources (procedural, ShapeNet), cameras and renderer backends.

Data flows one way: renderers -> teachers -> cache -> train; `pipeline/` orchestrates.
"""

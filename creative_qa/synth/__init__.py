"""Synthetic ad creatives with exact defect labels: the data behind the demo, tests and benchmarks."""

from creative_qa.synth.defects import DEFECTS, ORDER, TEXT_HEAVY_THRESHOLD, Defect
from creative_qa.synth.generate import (
    ANNOTATOR_NOISE,
    SYNTH_VERSION,
    Creative,
    SynthConfig,
    add_annotator_noise,
    apply_defects,
    generate_dataset,
    make_creative,
    quality_from,
)
from creative_qa.synth.render import render_design

__all__ = [
    "ANNOTATOR_NOISE",
    "DEFECTS",
    "ORDER",
    "SYNTH_VERSION",
    "TEXT_HEAVY_THRESHOLD",
    "Creative",
    "Defect",
    "SynthConfig",
    "add_annotator_noise",
    "apply_defects",
    "generate_dataset",
    "make_creative",
    "quality_from",
    "render_design",
]

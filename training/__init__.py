"""Training, fine-tuning, evaluation and synthetic data for PAL4VST-style artifact segmenters.

Import the sub-modules directly (`comfyui_pal.training.loop`, `.synth`, `.data`); torch is
only imported by the modules that need it.
"""

"""Stand-in for `modules.ui_components.InputAccordion` (its value is the accordion's open state)."""

import gradio as gr


class InputAccordion(gr.Checkbox):
    def __init__(self, value=False, **kwargs):
        super().__init__(value=value, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

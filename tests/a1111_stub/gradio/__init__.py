"""Stand-in for the few Gradio components scripts/pal_autofix.py builds (records kwargs only)."""


class Block:
    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        for k in ("label", "value", "minimum", "maximum", "step", "choices", "elem_id", "visible"):
            setattr(self, k, kwargs.get(k))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Component(Block):
    pass


class Slider(Component):
    pass


class Checkbox(Component):
    pass


class Dropdown(Component):
    pass


class Textbox(Component):
    pass


class Number(Component):
    pass


class Markdown(Component):
    pass


class HTML(Component):
    pass


class Row(Block):
    pass


class Column(Block):
    pass


class Group(Block):
    pass


class Accordion(Block):
    pass


def update(**kwargs):
    return kwargs

"""Stand-in for `modules.shared`: opts/OptionInfo/cmd_opts/state/sd_model only."""

from types import SimpleNamespace


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, comment_before="", comment_after="", infotext=None,
                 restrict_api=False, category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.section = section

    def info(self, text):
        self.comment_after = text
        return self

    def needs_reload_ui(self):
        return self

    def needs_restart(self):
        return self


class Options:
    def __init__(self):
        self.data = {}
        self.data_labels = {}

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def __getattr__(self, item):
        # Like the real Options: unknown keys raise AttributeError (so callers must use data.get).
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        raise AttributeError(item)


opts = Options()
cmd_opts = SimpleNamespace(use_cpu=[], api=False, nowebui=False)
state = SimpleNamespace(job_count=0, job_no=0, interrupted=False, skipped=False, stopping_generation=False)
sd_model = None

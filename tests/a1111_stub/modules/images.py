"""Stand-in for `modules.images.save_image` (tests only, not A1111 code): writes a PNG, records the call."""

import os

saved = []  # (path, suffix, info) of every call


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name="parameters", p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    os.makedirs(path, exist_ok=True)
    fullfn = os.path.join(path, f"{len(saved):05d}-{seed}{suffix}.{extension}")
    image.save(fullfn)
    saved.append((fullfn, suffix, info))
    return fullfn, None

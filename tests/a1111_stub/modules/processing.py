"""Stand-in for `modules.processing`: an img2img object that records its kwargs, and a fake sampler."""

import numpy as np
from PIL import Image

# v1.10.1 dataclass init fields of StableDiffusionProcessing + StableDiffusionProcessingImg2Img.
_BASE_FIELDS = (
    "sd_model outpath_samples outpath_grids prompt prompt_for_display negative_prompt styles seed subseed "
    "subseed_strength seed_resize_from_h seed_resize_from_w seed_enable_extras sampler_name scheduler "
    "batch_size n_iter steps cfg_scale width height restore_faces tiling do_not_save_samples "
    "do_not_save_grid extra_generation_params overlay_images eta do_not_reload_embeddings "
    "denoising_strength ddim_discretize s_min_uncond s_churn s_tmax s_tmin s_noise override_settings "
    "override_settings_restore_afterwards sampler_index refiner_checkpoint refiner_switch_at "
    "token_merging_ratio token_merging_ratio_hr disable_extra_networks firstpass_image"
).split()
_IMG2IMG_FIELDS = (
    "init_images resize_mode denoising_strength image_cfg_scale mask mask_blur_x mask_blur_y mask_blur "
    "mask_round inpainting_fill inpaint_full_res inpaint_full_res_padding inpainting_mask_invert "
    "initial_noise_multiplier latent_mask force_task_id"
).split()

FAKE_FILL = (10, 200, 30)  # what the fake sampler paints inside the mask
created = []  # every StableDiffusionProcessingImg2Img built, in order
processed_calls = []  # every p passed to process_images


class StableDiffusionProcessing:
    cached_c = [None, None]
    cached_uc = [None, None]

    def close(self):
        self.closed = True


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    _fields = frozenset(_BASE_FIELDS + _IMG2IMG_FIELDS)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - self._fields
        if unknown:
            raise TypeError(f"__init__() got unexpected keyword argument(s) {sorted(unknown)}")
        self.kwargs = dict(kwargs)
        for k, v in kwargs.items():
            setattr(self, k, v)
        self.image_mask = kwargs.get("mask")  # like __post_init__
        self.mask = None
        self.extra_generation_params = dict(kwargs.get("extra_generation_params") or {})
        self.override_settings = dict(kwargs.get("override_settings") or {})
        self.scripts = None
        self.script_args = []
        self.closed = False
        created.append(self)


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", infotexts=None):
        self.images = images_list
        self.seed = seed
        self.info = info
        self.infotexts = infotexts or [info] * len(images_list)
        self.index_of_first_image = 0
        self.all_prompts = []
        self.all_negative_prompts = []
        self.all_seeds = []
        self.all_subseeds = []


def process_images(p):
    """Fake sampler for inpaint_full_res=False: flat colour inside the mask, original outside."""
    processed_calls.append(p)
    if p.scripts is not None:  # like the real one: the always-on scripts see the nested pass
        p.scripts.process(p)
    init = p.init_images[0].convert("RGB").resize((p.width, p.height), Image.LANCZOS)
    m = np.asarray(p.image_mask.convert("L").resize((p.width, p.height), Image.NEAREST)) > 127
    out = np.asarray(init).copy()
    out[m] = FAKE_FILL
    return Processed(p, [Image.fromarray(out)], seed=p.seed, info="fake")

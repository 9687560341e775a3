"""A tiny random UPerNet config shared by the training tests (fast on CPU)."""

TINY = {
    "backbone": {"type": "timm", "model_name": "resnet10t", "out_indices": [1, 2, 3, 4],
                 "kwargs": {"channels": [8, 16, 24, 32]}},
    "decode_head": {"type": "UPerHead", "channels": 16, "pool_scales": [1, 2, 3, 6], "num_classes": 2,
                    "dropout_ratio": 0.1},
    "auxiliary_head": {"type": "FCNHead", "in_index": 2, "channels": 8, "num_convs": 1, "num_classes": 2,
                       "dropout_ratio": 0.1, "concat_input": False},
    "preprocess": {"size": [64, 64]},
}

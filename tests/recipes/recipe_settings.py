"""Settings shared by the recipe tests."""

#: --set overrides that make any recipe's tiny preset run in about a second
FAST = [
    "train.steps=2",
    "train.batch_size=2",
    "train.save_every=0",
    "train.progress=false",
    "data.crop_size=40",
    "data.scale_min=1.0",
    "data.scale_max=1.0",
    "crf_search.images=2",
]

"""deepcrf: semantic segmentation with CNNs and dense Conditional Random Fields."""

__version__ = "0.1.0"

"""pydensecrf-compatible API on deepcrf's engine.

Change ``import pydensecrf.densecrf as dcrf`` to
``import deepcrf.compat.pydensecrf.densecrf as dcrf`` (and ``pydensecrf.utils`` to
``deepcrf.compat.pydensecrf.utils``); everything else stays as it is.
"""

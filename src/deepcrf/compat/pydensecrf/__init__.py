"""pydensecrf-compatible API on deepcrf's engine.

Change ``import pydensecrf.densecrf as dcrf`` to
``import deepcrf.compat.pydensecrf.densecrf as dcrf`` (and ``pydensecrf.utils`` /
``pydensecrf.eigen`` likewise); everything else stays as it is. README lists the few
deliberate differences (all more lenient than pydensecrf).
"""

from deepcrf.compat.pydensecrf import densecrf, eigen, utils

__all__ = ["densecrf", "eigen", "utils"]

"""bench.models.catalog' checked-in list of torchvision model names is the installed torchvision's."""

from __future__ import annotations

import torchvision

from bench.models import catalog as models


def test_the_torchvision_list_is_the_installed_torchvisions():
    # A suite's model names are checked against models.TORCHVISION_MODELS without importing
    # torchvision; after a torchvision upgrade, copy the new list there.
    assert tuple(sorted(torchvision.models.list_models(module=torchvision.models))) == models.TORCHVISION_MODELS

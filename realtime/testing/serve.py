"""``python -m realtime.testing.serve``: ``realtime.serve`` on the test databases that
``LiveServer`` passes in ``REALTIME_TEST_DATABASES`` (the settings module is the project's)."""

from __future__ import annotations

import json
import os

from realtime.testing.servers import DATABASES_ENV


def main() -> None:
    from django.conf import settings

    for alias, overrides in json.loads(os.environ.get(DATABASES_ENV) or "{}").items():
        settings.DATABASES.setdefault(alias, {}).update(overrides)
    from realtime.serve import main as serve

    serve()


if __name__ == "__main__":
    main()

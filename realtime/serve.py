"""``python -m realtime.serve``: daphne with the app's limits, draining on SIGTERM
(``realtime.endpoints.serve``)."""

from realtime.endpoints.serve import main

__all__ = ["main"]

if __name__ == "__main__":
    main()

"""`serve run serve_apps.recommender:build_app` from a checkout: the app is `lmrec.serving.app`."""

from lmrec.serving.app import build_app

__all__ = ["build_app"]

"""Serve-deploy YAMLs of lmrec's recommender (import path `lmrec.serving.app:build_app`) and a thin re-export."""

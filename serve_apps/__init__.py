"""Ray Serve applications of lmrec (`serve run serve_apps.recommender:build_app`)."""

"""Ray Tune drivers: `search` (what both searches share), one package per search
(`exploration`, `compression`), and `feedback_io` (Ray Data readers of the feedback logs)."""

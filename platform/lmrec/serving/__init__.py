"""The recommendation endpoint: a Ray Serve app over Ray-free serving logic.

Import Ray: `app` (the Serve deployments and `build_app`), `replica` (what a replica injects:
`ray.util.metrics`, the FeedbackLog handle, `@serve.batch`, retried handle calls), `launch`
(starts Ray and deploys) and `demo` (through `launch`). Ray-free, run in-process by unit tests:
`ranker` (RankerCore), `batcher`, `feedback_log` (group commit), `feedback` (the store),
`policy_source`, `metrics` (definitions), `http` (FastAPI app, errors, API key, OpenAPI),
`fastpath`, `schemas`, `runtime`, `cache`, `config`.
"""

"""Serving core (Ray-free: runtime, cache, schemas, feedback store) used by serve_apps/."""

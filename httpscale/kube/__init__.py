"""Kubernetes plumbing shared by the components (between them and the shared core):
client configuration (`config`), a thin JSON API client (`api`), resource paths
(`resources`), list+watch (`watch`) feeding in-memory caches with whole snapshots (`cache`),
backoff with jitter (`backoff`) and Lease leader election (`leader`)."""

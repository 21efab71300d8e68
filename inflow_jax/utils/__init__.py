"""Small utilities every layer uses: input checks, batching, file manifests, the stored config."""

"""The online item bank (config, worker-side requests, driver-side fits) and multi-fidelity racing."""

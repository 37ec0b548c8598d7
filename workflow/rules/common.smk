# Shared helpers: target lists, architecture names, per-stage code fingerprints.
RESULTS = config.get("results", "results")


def all_targets():
    return [f"{RESULTS}/architectures.csv"]

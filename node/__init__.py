"""A HiveMind worker node: fingerprint, register, run assigned tasks, report."""

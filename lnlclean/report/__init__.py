"""Reports: the audit table and summary, the corrected-label manifest, detection metrics."""

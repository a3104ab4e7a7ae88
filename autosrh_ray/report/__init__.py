"""What a run reports: the typed report.json schema, report.md and its plots."""

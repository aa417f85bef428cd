"""Stage 5: statistics, tables, plots and report.html (report)."""

"""Metrics, tables, plots and the HTML report."""

"""Operator tools: the daily report and the health check."""

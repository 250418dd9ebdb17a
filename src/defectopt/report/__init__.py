"""Reporting: the tradeoff table, Pareto filtering, plots and the Markdown report."""

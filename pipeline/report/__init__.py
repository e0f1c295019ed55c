"""The report: figures and the page with its drawing panel."""
